"""Upstream's real neutron-metadata-agent serving our table through its own code.

The slow tests install neutron from the package index into ~/.cache/metaproxy/upstream-venv once per
machine (a stamp file makes later runs start at once) and skip if the index cannot be
reached. The table lookup that replaces upstream's RPC is also tested on its own here (it
is plain standard library, so metaproxy's environment can import it).

The last tests run upstream unpatched (C{compare --lookup rpc}'s upstream side): its own
RPC client against the bench's fake neutron-server on a private RabbitMQ; they skip with one
line when rabbitmq-server is not installed.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import pytest

from bench.compare import upstream
from bench.compare.upstream_launch import PortIndex, load_ports, select_ports
from bench.fakes.neutronserver import FakeNeutronServer
from bench.fakes.rabbitmq import RabbitMQ, rabbitmq_missing
from bench.load.unixhttp import get
from bench.processes import start_fakenova
from metaproxy.signing import sign_instance_id
from tests.integration.conftest import SECRET, TABLE, Stack, short_tmp

ROUTER_OWNERS = [
    "network:router_interface",
    "network:ha_router_replicated_interface",
    "network:router_interface_distributed",
]


# --- the table lookup that stands in for neutron-server ------------------------------------


@pytest.fixture
def table_ports(tmp_path):
    path = tmp_path / "ports.json"
    document = json.loads(json.dumps(TABLE))
    # a real router interface port as well as the routers map, and a gateway port that
    # upstream's router filter must not return
    document["ports"] += [
        {
            "id": "r3-if",
            "network_id": "net-d",
            "mac_address": "fa:16:3e:00:03:01",
            "fixed_ips": ["192.168.5.1"],
            "device_id": "r3",
            "project_id": "admin",
            "device_owner": "network:router_interface_distributed",
        },
        {
            "id": "r3-gw",
            "network_id": "ext",
            "mac_address": "fa:16:3e:00:03:02",
            "fixed_ips": ["203.0.113.3"],
            "device_id": "r3",
            "project_id": "admin",
            "device_owner": "network:router_gateway",
        },
    ]
    path.write_text(json.dumps(document))
    return load_ports(str(path))


def test_router_filter_returns_interfaces_only(table_ports):
    """Upstream's first query for a router: its interface ports, not its gateway."""
    r1 = select_ports(table_ports, {"device_id": ["r1"], "device_owner": ROUTER_OWNERS})
    assert [p["network_id"] for p in r1] == ["net-a"]
    assert r1[0]["device_id"] == "r1"
    r3 = select_ports(table_ports, {"device_id": ["r3"], "device_owner": ROUTER_OWNERS})
    assert [p["id"] for p in r3] == ["r3-if"]
    assert select_ports(table_ports, {"device_id": ["nope"], "device_owner": ROUTER_OWNERS}) == []


def test_ip_filter_finds_the_port_on_those_networks(table_ports):
    found = select_ports(
        table_ports, {"network_id": ("net-b",), "fixed_ips": {"ip_address": ["10.0.0.5"]}}
    )
    assert len(found) == 1
    port = found[0]
    assert (port["device_id"], port["project_id"], port["tenant_id"]) == (
        "vm-b",
        "proj-b",
        "proj-b",
    )
    assert port["fixed_ips"] == [{"ip_address": "10.0.0.5"}]
    # both networks that reuse 10.0.0.5: two ports, which upstream treats as not found
    both = select_ports(
        table_ports, {"network_id": ("net-a", "net-b"), "fixed_ips": {"ip_address": ["10.0.0.5"]}}
    )
    assert [p["device_id"] for p in both] == ["vm-a", "vm-b"]
    assert (
        select_ports(
            table_ports, {"network_id": ("net-c",), "fixed_ips": {"ip_address": ["10.0.0.5"]}}
        )
        == []
    )


def test_mac_filter_and_unknown_filters(table_ports):
    found = select_ports(
        table_ports, {"network_id": ("net-c",), "mac_address": ["FA:16:3E:11:22:33"]}
    )
    assert [p["device_id"] for p in found] == ["vm-c"]
    with pytest.raises(ValueError, match="unsupported port filter 'status'"):
        select_ports(table_ports, {"status": ["ACTIVE"]})


def test_answers_are_copies(table_ports):
    """Upstream may change what it gets back; the table must not change with it."""
    filters = {"network_id": ("net-a",), "fixed_ips": {"ip_address": ["10.0.0.5"]}}
    select_ports(table_ports, filters)[0]["fixed_ips"][0]["ip_address"] = "changed"
    assert select_ports(table_ports, filters)[0]["fixed_ips"] == [{"ip_address": "10.0.0.5"}]


@pytest.mark.parametrize(
    "filters",
    [
        {"device_id": ["r1"], "device_owner": ROUTER_OWNERS},
        {"device_id": ["r3", "r1"], "device_owner": ROUTER_OWNERS},
        {"device_id": ["r3"], "device_owner": ["network:router_gateway"]},
        {"network_id": ("net-a", "net-b"), "fixed_ips": {"ip_address": ["10.0.0.5"]}},
        {"network_id": ("net-b", "net-a", "net-b"), "fixed_ips": {"ip_address": ["10.0.0.5"]}},
        {"network_id": ("net-c",), "fixed_ips": {"ip_address": ["fd00:0::7"]}},
        {"network_id": ("net-c",), "fixed_ips": {"ip_address": ["10.0.0.5"]}},
        {"network_id": ("net-c",), "mac_address": ["FA:16:3E:11:22:33"]},
        {"network_id": ("net-d",), "mac_address": ["fa:16:3e:00:00:99"]},
    ],
)
def test_index_answers_as_the_scan_does(table_ports, filters):
    """The constant-time index (what upstream's agent really calls) gives exactly the
    scan's answer, in the same order, for every filter shape upstream sends."""
    assert PortIndex(table_ports).select(filters) == select_ports(table_ports, filters)


# --- the real upstream agent ---------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream_python():
    """The upstream virtualenv's python: installed once per machine (stamp file)."""
    if not upstream.upstream_installed() and not upstream.index_reachable():
        pytest.skip("package index unreachable: cannot install upstream neutron")
    return upstream.ensure_upstream_venv()


@pytest.fixture(scope="module")
def upstream_stack(upstream_python):
    root = short_tmp()
    table = root / "ports.json"
    table.write_text(json.dumps(TABLE))
    nova, nova_port = start_fakenova(table, SECRET, root / "nova")
    try:
        agent, socket_path = upstream.start_upstream_agent(
            table, root / "up", nova_port=nova_port, secret=SECRET
        )
    except BaseException:
        nova.stop()
        raise
    stack = Stack(root, nova, nova_port, agent, root / "up" / "state", table)
    assert stack.shared == socket_path
    yield stack
    stack.stop()


def read_raw(path: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.slow
def test_installed_version_and_stamp(upstream_python):
    python = upstream.ensure_upstream_venv()  # installed: returns at once
    assert python == upstream_python
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('neutron'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert f"neutron=={version}" == upstream.NEUTRON_SPEC
    assert (python.parent.parent / ".installed").read_text().strip() == upstream.NEUTRON_SPEC
    assert not upstream.upstream_installed(neutron_spec="neutron==0.0.1")


@pytest.mark.slow
@pytest.mark.parametrize(
    "header, xff, instance, project",
    [
        (("X-Neutron-Router-ID", "r1"), "10.0.0.5", "vm-a", "proj-a"),
        (("X-Neutron-Router-ID", "r2"), "10.0.0.5", "vm-b", "proj-b"),
        (("X-Neutron-Network-ID", "net-c"), "10.0.1.7", "vm-c", "proj-c"),
        # link-local IPv6: upstream looks the port up by the MAC the EUI-64 address encodes
        (("X-Neutron-Network-ID", "net-c"), "fe80::f816:3eff:fe11:2233", "vm-c", "proj-c"),
    ],
)
def test_upstream_serves_our_table(upstream_stack, header, xff, instance, project):
    answer = get(
        upstream_stack.shared,
        "/openstack/latest/meta_data.json",
        forwarded_for=xff,
        headers=[header],
    )
    assert answer.status == 200, (answer.status, answer.body, upstream_stack.agent.log()[-2000:])
    assert json.loads(answer.body)["uuid"] == instance
    # forwarded by upstream's own code: requests, upstream's headers, its signature
    seen = upstream_stack.nova_requests()[-1]
    headers = dict(seen["headers"])
    assert headers["User-Agent"].startswith("python-requests/")
    assert headers["X-Instance-ID"] == instance
    assert headers["X-Tenant-ID"] == project
    assert headers["X-Forwarded-For"] == xff
    assert headers["X-Instance-ID-Signature"] == sign_instance_id(SECRET.encode(), instance)


@pytest.mark.slow
def test_unknown_address_gets_upstreams_404(upstream_stack):
    """Upstream's own 404, written with bare LF line ends (read raw here, so the test sees
    the exact bytes)."""
    data = read_raw(
        upstream_stack.shared,
        b"GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\n"
        b"X-Neutron-Router-ID: r1\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n",
    )
    head, sep, body = data.partition(b"\n\n")
    assert sep, data
    lines = head.split(b"\n")
    assert lines[0] == b"HTTP/1.1 404 Not Found"
    assert b"Content-Length: %d" % len(body) in lines
    assert b"Instance was not found on router r1." in body
    assert "Instance was not found on router r1." in upstream_stack.agent.log()


@pytest.mark.slow
def test_listen_backlog_is_five(upstream_stack):
    """Upstream sets metadata_backlog after listen(), so the backlog is
    socketserver's default of 5 (metadata_backlog is 4096 by default)."""
    try:
        backlog = upstream.listen_backlog(upstream_stack.shared)
    except FileNotFoundError:
        pytest.skip("ss (iproute2) is not installed")
    assert backlog == 5


# --- the real upstream agent, unpatched, looking ports up over RPC ---------------------------

CASES = [
    (("X-Neutron-Router-ID", "r1"), "10.0.0.5", "vm-a"),
    (("X-Neutron-Router-ID", "r2"), "10.0.0.5", "vm-b"),
    (("X-Neutron-Network-ID", "net-c"), "10.0.1.7", "vm-c"),
    (("X-Neutron-Network-ID", "net-c"), "fe80::f816:3eff:fe11:2233", "vm-c"),
]


class UpstreamRpcStack:
    """A private RabbitMQ, the bench's fake neutron-server on it, a fake Nova and
    upstream's agent with nothing replaced (C{compare --lookup rpc}'s upstream side)."""

    def __init__(self) -> None:
        self.root = short_tmp()
        self.broker = self.neutron = self.nova = self.agent = None
        try:
            table = self.root / "ports.json"
            table.write_text(json.dumps(TABLE))
            self.broker = RabbitMQ.start(self.root / "rabbit")
            self.neutron = FakeNeutronServer(
                self.broker.transport_url, load_ports(str(table))
            ).start()
            self.nova, nova_port = start_fakenova(table, SECRET, self.root / "nova")
            self.agent, self.shared = upstream.start_upstream_agent(
                table,
                self.root / "up",
                nova_port=nova_port,
                secret=SECRET,
                workers=1,
                transport_url=self.broker.transport_url,
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for process in (self.agent, self.nova):
            if process is not None:
                process.stop()
        if self.neutron is not None:
            self.neutron.stop()
        if self.broker is not None:
            self.broker.close()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def upstream_rpc(upstream_python):
    missing = rabbitmq_missing()
    if missing is not None:
        pytest.skip(f"upstream over RPC: needs {missing}")
    stack = UpstreamRpcStack()
    yield stack
    stack.stop()


@pytest.mark.slow
def test_upstream_over_rpc_answers_from_neutron_server(upstream_rpc):
    """Upstream's own RPC client reaches the fake neutron-server (on neutron's exchange,
    as a real one listens) and serves every instance; if its calls go unanswered each
    request times out instead."""
    upstream_rpc.neutron.clear("get_ports")
    for header, xff, instance in CASES:
        answer = get(
            upstream_rpc.shared,
            "/openstack/latest/meta_data.json",
            forwarded_for=xff,
            headers=[header],
        )
        assert answer.status == 200, (
            header,
            xff,
            answer.status,
            answer.body,
            upstream_rpc.agent.log()[-2000:],
        )
        assert json.loads(answer.body)["uuid"] == instance
    # upstream's lookups, sent as calls: per router request its interfaces then the
    # address on their networks; per network request the address or (link-local) the MAC
    lookups = upstream_rpc.neutron.calls_of("get_ports")
    assert all(c.call for c in lookups)
    shapes = [tuple(sorted(c.kwargs["filters"])) for c in lookups]
    assert shapes == [("device_id", "device_owner"), ("fixed_ips", "network_id")] * 2 + [
        ("fixed_ips", "network_id"),
        ("mac_address", "network_id"),
    ]
    assert lookups[0].kwargs["filters"]["device_id"] == ["r1"]
    assert lookups[-1].kwargs["filters"]["mac_address"] == ["fa:16:3e:11:22:33"]
    assert lookups[0].context["is_admin"] is True


@pytest.mark.slow
def test_upstream_over_rpc_reports_its_state(upstream_rpc):
    """Its first state report, at start, is a call that the fake answers."""
    deadline = time.monotonic() + 30
    while not (reports := upstream_rpc.neutron.calls_of("report_state")):
        assert time.monotonic() < deadline, upstream_rpc.agent.log()[-2000:]
        time.sleep(0.2)
    first = reports[0]
    assert first.call
    state = first.kwargs["agent_state"]["agent_state"]
    assert state["binary"] == "neutron-metadata-agent"
    assert state["agent_type"] == "Metadata agent"
    assert state["start_flag"] is True
    assert "Failed reporting state" not in upstream_rpc.agent.log()


@pytest.mark.slow
def test_upstream_over_rpc_unknown_address_is_its_404(upstream_rpc):
    """An address neutron-server has no port for: upstream's own 404 after asking."""
    answer = get(
        upstream_rpc.shared,
        "/openstack/latest/meta_data.json",
        forwarded_for="10.9.9.9",
        headers=[("X-Neutron-Router-ID", "r1")],
    )
    assert answer.status == 404, (answer.status, answer.body)
    assert b"Instance was not found on router r1." in answer.body
