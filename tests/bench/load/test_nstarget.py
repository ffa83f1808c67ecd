"""The haproxy target's plain parts: the plan of namespaces and addresses, sockets made in
other namespaces (with a recording setns), the target's connect, the haproxy
configuration it renders, and what `--target haproxy` says when the host cannot run it.

Building the namespaces and running a storm through them is tests/e2e/test_storm_haproxy.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import pickle
import signal
import socket
import time

import pytest

import bench.__main__ as bench_main
from bench.load import nstarget
from bench.load.fleet import make_fleet
from bench.load.netns import TopologyError
from bench.load.nstarget import (
    CLONE_NEWNET,
    HaproxyNamespaces,
    NetnsSockets,
    plan_front,
    render_haproxy_config,
    target_for,
)
from bench.load.storm import StormConfig
from bench.stack import sigterm_interrupts

# ---- the plan


def test_overlapping_addresses_are_kept_in_different_namespaces():
    """The k-th instance behind every router has the same address: each network gets its
    own instance-side namespace, and within one every address is distinct."""
    fleet = make_fleet(20, 3)
    plan = plan_front(fleet, 20)
    assert len(plan.domains) == 3 and len(plan.sides) == 3
    same = [i for i in fleet.instances if i.ip == fleet.instances[0].ip]
    assert len(same) == 3  # one behind each router
    assert len({plan.placement[i.index] for i in same}) == 3
    for side in plan.sides:
        assert len(set(side.addresses)) == len(side.addresses)
    for instance in fleet.instances:
        side = plan.side_of(instance)
        assert f"{instance.ip}/16" in side.addresses
        assert side.network_id == instance.network_id
        assert plan.domains[side.domain].namespace == instance.namespace
    assert sorted(plan.placement) == list(range(20))


def test_router_and_dhcp_ovn_ports_get_the_fleets_gateway_addresses():
    fleet = make_fleet(24, 2, networks_per_router=2, dhcp_networks=1, ovn_networks=1)
    plan = plan_front(fleet, 24)
    kinds = [d.kind for d in plan.domains]
    assert kinds == ["router", "router", "dhcp", "ovn"]
    assert [d.key for d in plan.domains] == ["r0", "r1", "d0", "o0"]
    router = plan.domains[0]
    assert sorted(cidr for _, cidr in router.ports) == ["10.0.0.1/16", "10.1.0.1/16"]
    assert plan.domains[2].ports[0][1] == "10.0.0.2/16"
    assert plan.domains[3].ports[0][1] == "10.0.0.2/16"
    # one side per (router, network): 2 x 2 + 1 + 1, with unique keys
    assert len(plan.sides) == 6
    assert len({s.key for s in plan.sides}) == 6
    for side in plan.sides:
        (port_cidr,) = [c for n, c in plan.domains[side.domain].ports if n == side.network_id]
        subnet = ipaddress.ip_interface(port_cidr).network
        assert all(ipaddress.ip_interface(a).network == subnet for a in side.addresses)
        assert port_cidr not in side.addresses


def test_only_namespaces_with_booting_instances_are_built():
    fleet = make_fleet(10, 5)
    plan = plan_front(fleet, 3)
    assert [d.namespace for d in plan.domains] == list(fleet.namespaces[:3])
    assert sorted(plan.placement) == [0, 1, 2]


@pytest.mark.parametrize("count", [0, 11])
def test_count_outside_the_fleet_is_refused(count):
    with pytest.raises(ValueError, match="the fleet has 10 instances"):
        plan_front(make_fleet(10, 2), count)


# ---- the target


def _target(fleet, count=6):
    plan = plan_front(fleet, count)
    names = [f"mpe2e-0000abcd-{side.key}" for side in plan.sides]
    return plan, target_for(plan, names, "shared", fleet.instances[:count])


def test_target_connects_each_instance_from_its_own_address_and_namespace():
    fleet = make_fleet(6, 2)
    plan, target = _target(fleet)
    for instance in fleet.instances:
        netns, source = target.places[instance.index]
        assert source == instance.ip
        assert netns == f"/run/netns/mpe2e-0000abcd-{plan.side_of(instance).key}"
        assert target.headers(instance) == b""  # haproxy adds them
    assert target.address == ("169.254.169.254", 80)
    assert target.name == "haproxy"
    assert "2 network namespaces" in target.describe()
    assert "shared socket" in target.describe()
    assert pickle.loads(pickle.dumps(target)) == target  # sent to the workers


class RecordingNamespaces:
    """setns and namespace opening that only record: the thread never moves."""

    def __init__(self, fail_setns_to: int | None = None):
        self.calls: list[tuple[str, object]] = []
        self.fds: dict[str, int] = {}
        self.fail_setns_to = fail_setns_to

    def open(self, path: str) -> int:
        self.calls.append(("open", path))
        return self.fds.setdefault(path, 100 + len(self.fds))

    def setns(self, fd: int, nstype: int) -> None:
        assert nstype == CLONE_NEWNET
        self.calls.append(("setns", fd))
        if fd == self.fail_setns_to:
            raise OSError(errno.EPERM, "not permitted")


def _sockets(recorder, new_socket=socket.socket):
    return NetnsSockets(setns=recorder.setns, open_ns=recorder.open, new_socket=new_socket)


def test_socket_is_made_inside_the_namespace_and_the_thread_goes_home():
    recorder = RecordingNamespaces()
    made_in = []

    def new_socket(family, kind):
        made_in.append(recorder.calls[-1])
        return socket.socket(family, kind)

    sockets = _sockets(recorder, new_socket)
    home = recorder.fds["/proc/thread-self/ns/net"]
    for _ in range(2):
        sockets.socket("/run/netns/a").close()
    sockets.socket("/run/netns/b").close()
    a, b = recorder.fds["/run/netns/a"], recorder.fds["/run/netns/b"]
    assert made_in == [("setns", a), ("setns", a), ("setns", b)]
    assert [c for c in recorder.calls if c[0] == "setns"] == [
        ("setns", a),
        ("setns", home),
        ("setns", a),
        ("setns", home),
        ("setns", b),
        ("setns", home),
    ]
    # each namespace opened once
    assert [c for c in recorder.calls if c[0] == "open"] == [
        ("open", "/proc/thread-self/ns/net"),
        ("open", "/run/netns/a"),
        ("open", "/run/netns/b"),
    ]


def test_thread_goes_home_when_the_socket_cannot_be_made():
    recorder = RecordingNamespaces()

    def no_socket(family, kind):
        raise OSError(errno.EMFILE, "too many open files")

    sockets = _sockets(recorder, no_socket)
    with pytest.raises(OSError, match="too many"):
        sockets.socket("/run/netns/a")
    assert recorder.calls[-1] == ("setns", recorder.fds["/proc/thread-self/ns/net"])


def test_a_thread_stuck_in_another_namespace_is_an_error_not_a_socket():
    recorder = RecordingNamespaces()
    sockets = _sockets(recorder)
    recorder.fail_setns_to = recorder.fds["/proc/thread-self/ns/net"]
    with pytest.raises(
        RuntimeError,
        match="cannot return to this thread's own network "
        "namespace after creating a socket in /run/netns/a",
    ):
        sockets.socket("/run/netns/a")


def test_entering_a_missing_namespace_is_an_oserror():
    """The storm counts it as a connect error, as any other failure to connect."""
    sockets = NetnsSockets(setns=lambda fd, nstype: None)
    try:
        with pytest.raises(FileNotFoundError):
            sockets.socket("/run/netns/mpe2e-no-such-namespace")
    finally:
        sockets.close()


@pytest.fixture
def in_place(monkeypatch):
    """The target's per-process sockets, with a setns that stays where it is."""
    recorder = RecordingNamespaces()
    monkeypatch.setattr(nstarget, "_sockets", _sockets(recorder))
    return recorder


def test_target_open_binds_the_instance_address_and_connects(in_place):
    fleet = make_fleet(2, 1)
    instance = fleet.instances[0]
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        target = HaproxyNamespaces(
            {0: ("/run/netns/x", "127.0.0.1")}, "shared", 1, address=server.getsockname()
        )

        async def connect():
            return await target.open(instance)

        sock = asyncio.run(connect())
        with sock:
            peer, _ = server.accept()
            with peer:
                assert sock.getblocking() is False
                assert sock.getsockname()[0] == "127.0.0.1"
                assert peer.getpeername() == sock.getsockname()
    assert ("open", "/run/netns/x") in in_place.calls


def test_target_open_refused_is_connection_refused(in_place):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        address = free.getsockname()  # nothing listens once closed
    target = HaproxyNamespaces({0: ("/run/netns/x", "127.0.0.1")}, "shared", 1, address=address)
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(target.open(make_fleet(1, 1).instances[0]))


def test_storm_config_says_haproxy_needs_a_built_target():
    with pytest.raises(ValueError, match="start_haproxy_front"):
        StormConfig(instances=1, routers=1, target="haproxy").make_target()


# ---- haproxy's configuration


@pytest.fixture
def agent_ini(tmp_path):
    fleet = make_fleet(2, 1)
    fleet.write(tmp_path / "ports.json")
    path = tmp_path / "agent.ini"
    path.write_text(
        f"[DEFAULT]\nstate_path = {tmp_path}/s\n[metaproxy]\n"
        f"lookup_table = {tmp_path}/ports.json\nnamespace_socket_dir = /tmp/mp-ns\n"
    )
    return fleet, path


def test_config_is_rendered_for_the_fleets_namespace(agent_ini, tmp_path):
    fleet, path = agent_ini
    namespace = fleet.namespaces[0]
    own = render_haproxy_config(
        namespace.name, agent_config=path, pidfile="/tmp/p.pid", shared=False
    )
    assert f"http-request set-header X-Neutron-Router-ID {namespace.id}\n" in own
    assert f"server metadata /tmp/mp-ns/{namespace.name}.sock\n" in own
    assert "    pidfile     /tmp/p.pid\n" in own and "    user        root\n" in own
    shared = render_haproxy_config(
        namespace.name, agent_config=path, pidfile="/tmp/p.pid", shared=True
    )
    assert f"server metadata {tmp_path}/s/metadata_proxy\n" in shared


def test_config_error_is_a_topology_error_saying_why(tmp_path):
    path = tmp_path / "agent.ini"
    path.write_text(f"[metaproxy]\nlookup_table = {tmp_path}/missing.json\n")
    with pytest.raises(TopologyError, match="missing.json"):
        render_haproxy_config("qrouter-x", agent_config=path, pidfile="/tmp/p", shared=True)


# ---- the command line


def test_missing_prerequisites_exit_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(
        nstarget, "missing_prerequisites", lambda: ["root (running as uid 1000)", "haproxy"]
    )
    started = []
    monkeypatch.setattr(bench_main, "run_local_storms", lambda *a, **k: started.append(1))
    status = bench_main.main(["storm", "--target", "haproxy", "--instances", "4", "--routers", "2"])
    assert status == 2 and not started
    err = capsys.readouterr().err
    assert err == (
        "bench storm: --target haproxy needs root, ip, iptables and haproxy: "
        "missing root (running as uid 1000), haproxy\n"
    )


def test_sigterm_becomes_keyboard_interrupt_while_the_front_is_up():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with sigterm_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts it at once
            raise AssertionError("SIGTERM did not interrupt")
    assert signal.getsignal(signal.SIGTERM) is before


def test_compare_haproxy_agent_without_prerequisites_exits_with_one_line(monkeypatch, capsys):
    from bench.compare import cli as compare_cli

    monkeypatch.setattr(nstarget, "missing_prerequisites", lambda: ["iptables"])
    monkeypatch.setattr(compare_cli, "run_compare", lambda *a, **k: pytest.fail("started"))
    status = bench_main.main(
        [
            "compare",
            "--a",
            "metaproxy",
            "--b",
            "upstream-haproxy",
            "--instances",
            "4",
            "--routers",
            "2",
        ]
    )
    assert status == 2
    assert capsys.readouterr().err == (
        "bench compare: a -haproxy agent needs root, ip, iptables and haproxy: missing iptables\n"
    )


def test_compare_routers_agent_without_prerequisites_exits_with_one_line(monkeypatch, capsys):
    from bench.compare import cli as compare_cli

    monkeypatch.setattr(nstarget, "missing_prerequisites", lambda: ["iptables"])
    monkeypatch.setattr(compare_cli, "run_compare", lambda *a, **k: pytest.fail("started"))
    argv = ["compare", "--a", "metaproxy-routers", "--b", "metaproxy", "--instances", "4"]
    assert bench_main.main([*argv, "--routers", "2"]) == 2
    assert capsys.readouterr().err == (
        "bench compare: the metaproxy-routers agent needs root, ip, iptables and haproxy: "
        "missing iptables\n"
    )


def test_storm_namespaces_tcp_without_prerequisites_exits_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(nstarget, "missing_prerequisites", lambda: ["iptables"])
    monkeypatch.setattr(bench_main, "run_local_storms", lambda *a, **k: pytest.fail("started"))
    argv = ["storm", "--target", "namespaces-tcp", "--instances", "4", "--routers", "2"]
    assert bench_main.main(argv) == 2
    assert capsys.readouterr().err == (
        "bench storm: --target namespaces-tcp needs root, ip, iptables and haproxy: "
        "missing iptables\n"
    )


def test_neighbour_room_is_raised_only_when_short(tmp_path):
    """The ARP table's limits grow to fit a storm's addresses (three fronts at once and
    the host), never shrink, and the change is said."""
    from bench.load.netns_host import ensure_neighbour_room

    (tmp_path / "gc_thresh2").write_text("512\n")
    (tmp_path / "gc_thresh3").write_text("1024\n")
    said = ensure_neighbour_room(1000, sysctl_dir=str(tmp_path))
    assert (tmp_path / "gc_thresh2").read_text() == "4048"
    assert (tmp_path / "gc_thresh3").read_text() == "8096"
    assert said == (
        "raised the host's ARP table limits (net.ipv4.neigh.default: gc_thresh2 512 -> "
        "4048, gc_thresh3 1024 -> 8096) for 1,000 instance addresses"
    )
    assert ensure_neighbour_room(100, sysctl_dir=str(tmp_path)) is None
    assert (tmp_path / "gc_thresh3").read_text() == "8096"
