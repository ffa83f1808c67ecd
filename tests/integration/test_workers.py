"""The real `twistd metaproxy` with `metadata_workers = 2` against the fake Nova.

Which worker answers a connection is the kernel's choice. To know that a given worker
serves a socket, the tests stop every other worker (SIGSTOP): a stopped process cannot
accept, so the connection can only be taken by the one left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from bench.load.unixhttp import get
from tests.integration.conftest import start_stack

pytestmark = pytest.mark.slow

WORKERS = "metadata_workers = 2\n"
SHARED_R1 = dict(forwarded_for="10.0.0.5", headers=[("X-Neutron-Router-ID", "r1")])


@pytest.fixture(scope="module")
def stack():
    s = start_stack("workers", extra_default=WORKERS)
    yield s
    s.stop()


def children(pid: int) -> list[int]:
    """Process ids of C{pid}'s live children that are metaproxy workers."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and b"metaproxy.agent.workers" in cmdline:
            found.append(int(entry))
    return sorted(found)


def wait_for(condition, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def workers_of(stack, count: int = 2) -> list[int]:
    """The agent's workers, once C{count} of them run and each has said it is ready
    (its reactor runs and it serves every socket it inherited)."""

    def ready():
        pids = children(stack.agent.pid)
        log = stack.agent.log()
        if len(pids) == count and all(
            re.search(rf"pid {pid}\] Worker \d+ ready: serving \d+ socket", log) for pid in pids
        ):
            return pids
        return None

    return wait_for(ready, f"{count} workers ready")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def only(pid: int, everyone: list[int]):
    """Stop every worker but C{pid} for the duration."""
    others = [p for p in everyone if p != pid]
    for other in others:
        os.kill(other, signal.SIGSTOP)
    try:
        yield
    finally:
        for other in others:
            os.kill(other, signal.SIGCONT)


def uuid(path: str, **request) -> str:
    answer = get(path, "/openstack/latest/meta_data.json", **request)
    assert answer.status == 200, (answer.status, answer.body)
    return json.loads(answer.body)["uuid"]


def ctl(stack, *args):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "metaproxy.cli",
            "ctl",
            "--control-socket",
            str(stack.state / "metaproxy" / "control.sock"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_every_worker_serves_the_shared_and_namespace_sockets(stack):
    """Two workers run; each of them, alone, answers on the shared socket and on a
    namespace's socket, with the right instance."""
    pids = workers_of(stack)
    for pid in pids:
        with only(pid, pids):
            assert uuid(stack.shared, **SHARED_R1) == "vm-a"
            assert uuid(stack.ns_socket("qrouter-r2"), forwarded_for="10.0.0.5") == "vm-b"
            assert uuid(stack.ns_socket("qdhcp-net-c"), forwarded_for="10.0.1.7") == "vm-c"
    log = stack.agent.log()
    for index, pid in enumerate(pids, 1):
        assert f"Worker {index} started (pid {pid}) with 4 socket(s)" in log


def test_socket_mode_and_backlog_kept_after_workers_adopt(stack):
    """The workers leave the sockets as the agent made them: mode (deduce as root:
    0644) and metadata_backlog (4096)."""
    workers_of(stack)
    for path in (stack.shared, stack.ns_socket("qrouter-r1")):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    try:
        out = subprocess.run(["ss", "-xlH"], capture_output=True, text=True, check=True).stdout
    except (FileNotFoundError, subprocess.CalledProcessError):
        pytest.skip("ss (iproute2) is not installed: cannot read the listen backlog")
    for path in (stack.shared, stack.ns_socket("qrouter-r1")):
        line = next(l for l in out.splitlines() if path in l.split())
        assert line.split()[3] == "4096", line


def test_namespace_added_at_run_time_served_by_every_worker_then_removed(stack):
    """`metaproxy ctl add` makes a socket every worker serves, with the configured mode;
    `remove` deletes it; the other sockets are untouched."""
    pids = workers_of(stack)
    assert ctl(stack, "add", "ovnmeta-net-d").returncode == 0
    path = stack.ns_socket("ovnmeta-net-d")
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        for pid in pids:
            with only(pid, pids):
                assert uuid(path, forwarded_for="192.168.5.9") == "vm-d"
    finally:
        result = ctl(stack, "remove", "ovnmeta-net-d")
    assert result.returncode == 0, result.stderr
    assert not os.path.exists(path)
    for pid in pids:
        with only(pid, pids):
            assert uuid(stack.ns_socket("qrouter-r1"), forwarded_for="10.0.0.5") == "vm-a"
    assert children(stack.agent.pid) == pids


def test_killed_worker_restarted_with_every_socket(stack):
    """SIGKILL one worker: requests keep being answered (the agent still holds every
    socket), a new worker is started, and it serves every socket, one added at run time
    before the kill included."""
    pids = workers_of(stack)
    assert ctl(stack, "add", "qrouter-r9").returncode == 0
    try:
        victim, survivor = pids
        os.kill(victim, signal.SIGKILL)
        for _ in range(20):
            assert uuid(stack.shared, **SHARED_R1) == "vm-a"
        new = wait_for(
            lambda: [p for p in children(stack.agent.pid) if p not in pids], "a new worker"
        )
        assert len(new) == 1 and not alive(victim)
        current = workers_of(stack)
        assert sorted(current) == sorted([survivor, new[0]])
        with only(new[0], current):
            assert uuid(stack.shared, **SHARED_R1) == "vm-a"
            assert uuid(stack.ns_socket("qrouter-r2"), forwarded_for="10.0.0.5") == "vm-b"
            # qrouter-r9 has no instance: a 404 from the new worker means it serves it
            answer = get(stack.ns_socket("qrouter-r9"), "/openstack", forwarded_for="10.0.0.5")
            assert answer.status == 404 and b"not found on router r9" in answer.body
        log = stack.agent.log()
        assert f"(pid {victim}) was killed by SIGKILL" in log
        assert f"started (pid {new[0]}) with 5 socket(s)" in log
    finally:
        assert ctl(stack, "remove", "qrouter-r9").returncode == 0


def test_sighup_reaches_every_worker(stack):
    """SIGHUP to the agent: each worker re-reads the table (a new port resolves on
    each of them) and says so in the agent's log."""
    pids = workers_of(stack)
    table = json.loads(stack.table.read_text())
    table["ports"].append(
        {
            "id": "pz",
            "network_id": "net-a",
            "mac_address": "fa:16:3e:00:00:7a",
            "fixed_ips": ["10.0.0.88"],
            "device_id": "vm-a",
            "project_id": "proj-a",
        }
    )
    stack.table.write_text(json.dumps(table))
    before = stack.agent.log().count("Reloaded: secret, lookups from table")
    stack.agent.popen.send_signal(signal.SIGHUP)
    wait_for(
        lambda: stack.agent.log().count("Reloaded: secret, lookups from table") >= before + 2,
        "both workers reloaded",
    )
    log = stack.agent.log()
    for pid in pids:
        assert re.search(rf"pid {pid}\] Reloaded: secret, lookups from table \S+ \(5 ports\)", log)
        with only(pid, pids):
            assert (
                uuid(
                    stack.shared, forwarded_for="10.0.0.88", headers=[("X-Neutron-Router-ID", "r1")]
                )
                == "vm-a"
            )


def nova_config(stack, **values):
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.nova_port}/_fakenova/config",
        method="POST",
        data=json.dumps(values).encode(),
        headers={"X-Fakenova-Control": "1", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


def test_sigterm_finishes_requests_in_flight_and_stops_every_worker():
    """SIGTERM, to a worker and then to the agent (systemd signals the whole unit, then
    the agent signals its workers again): the request in flight on that worker is still
    answered, nothing fails in the log, both workers exit with status 0, the sockets
    are removed and the agent shuts down cleanly."""
    s = start_stack("workers-stop", extra_default=WORKERS)
    try:
        pids = workers_of(s)
        busy, idle = pids
        nova_config(s, delay=3)
        answers = []
        with only(busy, pids):  # the request can only be taken by `busy`
            client = threading.Thread(
                target=lambda: answers.append(
                    get(s.shared, "/openstack/latest/meta_data.json", **SHARED_R1)
                )
            )
            client.start()
            wait_for(lambda: s.nova_control("stats")["in_service"] == 1, "the request at Nova")
        os.kill(busy, signal.SIGTERM)
        wait_for(
            lambda: re.search(rf"pid {busy}\] Worker \d+ stopping \(SIGTERM\)", s.agent.log()),
            "the worker stopping",
        )
        s.agent.popen.send_signal(signal.SIGTERM)
        client.join(30)
        assert answers and answers[0].status == 200, answers
        returncode = s.agent.popen.wait(30)
        # the agent's own SIGTERM handler (metaproxy.agent.drain) stops the reactor itself, so
        # twistd exits 0 instead of ending itself with the signal
        assert returncode == 0
        assert not any(alive(pid) for pid in pids)
        assert not os.path.exists(s.shared)
        assert not os.path.exists(s.ns_socket("qrouter-r1"))
        log = s.agent.log()
        for index, pid in enumerate(pids, 1):
            assert f"Worker {index} (pid {pid}) stopped: exited with status 0" in log, log
        assert "Traceback" not in log and "Unhandled" not in log, log
        assert "Server Shut Down." in log
    finally:
        s.stop()


def test_workers_exit_when_the_agent_is_killed():
    """SIGKILL to the agent: its workers notice (their channel closes) and exit."""
    s = start_stack("workers-orphans", extra_default=WORKERS)
    pids = []
    try:
        pids = workers_of(s)
        s.agent.popen.kill()
        s.agent.popen.wait(30)
        wait_for(lambda: not any(alive(pid) for pid in pids), "the workers exited")
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        s.stop()
