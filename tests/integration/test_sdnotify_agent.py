"""twistd metaproxy under systemd's notify protocol: READY=1 once serving, STOPPING=1 on
SIGTERM, read from a real NOTIFY_SOCKET as systemd would."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from bench.processes import start_fakenova, write_agent_config
from tests.integration.conftest import SECRET, TABLE, short_tmp


def _messages(sock, until, timeout=20.0):
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            break
        got.append(dict(line.split("=", 1) for line in data.split("\n")))
        if until in got[-1]:
            return got
    pytest.fail(f"no {until} from the agent; got {got}")


def test_ready_then_stopping(tmp_path):
    import json

    root = short_tmp()
    table = root / "ports.json"
    table.write_text(json.dumps(TABLE))
    nova, nova_port = start_fakenova(table, SECRET, root / "nova")
    state = root / "s"
    config = write_agent_config(
        root / "agent.ini",
        state_path=state,
        nova_port=nova_port,
        secret=SECRET,
        table=table,
        namespaces=("qrouter-r1",),
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(root / "notify"))
    env = dict(os.environ, NOTIFY_SOCKET=str(root / "notify"))
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    agent = subprocess.Popen(
        [
            twistd,
            "--nodaemon",
            "--pidfile=",
            f"--logfile={root / 'agent.log'}",
            "metaproxy",
            "--config-file",
            str(config),
        ],
        env=env,
        cwd=str(root),
    )
    try:
        ready = _messages(notify, "READY")
        assert ready[-1]["READY"] == "1"
        assert ready[-1]["STATUS"].startswith("serving 2 socket(s)")
        assert os.path.exists(state / "metadata_proxy")  # it listens before it says so
        agent.send_signal(signal.SIGTERM)
        stopping = _messages(notify, "STOPPING")
        assert stopping[-1]["STOPPING"] == "1"
        assert "draining" in stopping[-1]["STATUS"]
        assert agent.wait(timeout=30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
        notify.close()
        nova.stop()
