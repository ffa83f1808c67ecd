"""Real processes for integration tests: the fake Nova and `twistd metaproxy`."""

from __future__ import annotations

import base64
import gzip
import json
import tempfile
import urllib.request
from pathlib import Path

import pytest

from bench.processes import start_agent, start_fakenova, write_agent_config

SECRET = "integration-secret"
GZIPPED = gzip.compress(b"#cloud-config\npackages: [htop]\n" + bytes(range(256)))

#: Two routers whose networks reuse 10.0.0.5; a DHCP network with a link-local-capable
#: port; an OVN network.
TABLE = {
    "routers": {"r1": ["net-a"], "r2": ["net-b"]},
    "ports": [
        {
            "id": "pa",
            "network_id": "net-a",
            "mac_address": "fa:16:3e:00:00:0a",
            "fixed_ips": ["10.0.0.5"],
            "device_id": "vm-a",
            "project_id": "proj-a",
            "device_owner": "compute:nova",
        },
        {
            "id": "pb",
            "network_id": "net-b",
            "mac_address": "fa:16:3e:00:00:0b",
            "fixed_ips": ["10.0.0.5"],
            "device_id": "vm-b",
            "project_id": "proj-b",
            "device_owner": "compute:nova",
        },
        {
            "id": "pc",
            "network_id": "net-c",
            "mac_address": "fa:16:3e:11:22:33",
            "fixed_ips": ["10.0.1.7", "fd00::7"],
            "device_id": "vm-c",
            "project_id": "proj-c",
            "device_owner": "compute:nova",
        },
        {
            "id": "pd",
            "network_id": "net-d",
            "mac_address": "fa:16:3e:00:00:0d",
            "fixed_ips": ["192.168.5.9"],
            "device_id": "vm-d",
            "project_id": "proj-d",
            "device_owner": "compute:nova",
        },
    ],
    "instances": {
        "vm-a": {"hostname": "vm-a", "user_data": "#!/bin/sh\necho a\n"},
        "vm-b": {"hostname": "vm-b", "user_data_gzip_base64": base64.b64encode(GZIPPED).decode()},
        "vm-c": {"hostname": "vm-c", "user_data": None},
        "vm-d": {"hostname": "vm-d"},
    },
}


def short_tmp() -> Path:
    """A short directory: Unix socket paths must stay under haproxy's 97 bytes."""
    return Path(tempfile.mkdtemp(prefix="mp-", dir="/tmp"))


class Stack:
    """A fake Nova and an agent in front of it, with helpers to talk to both."""

    def __init__(self, root: Path, nova, nova_port: int, agent, state: Path, table: Path):
        self.root, self.nova, self.nova_port, self.agent = root, nova, nova_port, agent
        self.state, self.table = state, table

    @property
    def shared(self) -> str:
        return str(self.state / "metadata_proxy")

    def ns_socket(self, name: str) -> str:
        return str(self.state / "metaproxy" / "ns" / f"{name}.sock")

    def nova_control(self, what: str, method: str = "GET"):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.nova_port}/_fakenova/{what}",
            method=method,
            headers={"X-Fakenova-Control": "1"},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.loads(answer.read() or b"null")

    def nova_requests(self):
        return self.nova_control("requests")

    def stop(self):
        for process in (self.agent, self.nova):
            if process is not None:
                process.stop()


def start_stack(
    name: str,
    *,
    secret: str = SECRET,
    agent_secret: str | None = None,
    nova_args=(),
    nova_port: int | None = None,
    extra_default: str = "",
    extra_metaproxy: str = "",
    namespaces=("qrouter-r1", "qrouter-r2", "qdhcp-net-c"),
):
    root = short_tmp()
    table = root / "ports.json"
    table.write_text(json.dumps(TABLE))
    nova = None
    if nova_port is None:
        nova, nova_port = start_fakenova(table, secret, root / "nova", extra_args=nova_args)
    state = root / "s"
    config = write_agent_config(
        root / "agent.ini",
        state_path=state,
        nova_port=nova_port,
        secret=agent_secret if agent_secret is not None else secret,
        table=table,
        namespaces=namespaces,
        extra_default=extra_default,
        extra_metaproxy=extra_metaproxy,
    )
    try:
        agent = start_agent([config], root / "agent", wait_socket=str(state / "metadata_proxy"))
    except Exception:
        if nova is not None:
            nova.stop()
        raise
    return Stack(root, nova, nova_port, agent, state, table)


@pytest.fixture(scope="module")
def stack():
    s = start_stack("main")
    yield s
    s.stop()
