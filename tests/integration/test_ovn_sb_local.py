"""The chassis-local replica (metaproxy.resolve.ovn_local) against a real ovsdb-server
on the OVN Southbound schema: a one-member cluster, so that transactions have ids and
a reconnect resumes with monitor_cond_since.

The cloud: chassis "here" and "other", networks net-a, net-b, net-c (each with its
metadata localport), one port bound here on net-a, ports of other chassis on every
network, and a router interface. The replica must hold this chassis's row, its bound
ports, the localports of their networks and those networks' datapaths: nothing else.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from bench.fakes.ovnsb import missing
from bench.fakes.ovnsb_cluster import SbCluster
from metaproxy.ovsdb.jsonrpc import JsonRpcProtocol
from metaproxy.ovsdb.remote import parse_remotes
from metaproxy.resolve.ovn import OvnBackend

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

NETWORKS = ("net-a", "net-b", "net-c")


def _map(pairs: dict) -> list:
    return ["map", sorted(pairs.items())]


def _port(name, datapath, mac, ip, *, chassis=None, kind="", owner="compute:nova", key=1):
    row = {
        "logical_port": name,
        "datapath": ["uuid", datapath],
        "tunnel_key": key,
        "type": kind,
        "mac": ["set", [f"{mac} {ip}"]],
        "external_ids": _map(
            {
                "neutron:device_id": f"vm-{name}",
                "neutron:project_id": "proj",
                "neutron:device_owner": owner,
            }
        ),
    }
    if chassis:
        row["chassis"] = ["uuid", chassis]
    return {"op": "insert", "table": "Port_Binding", "row": row}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    sb = SbCluster.start(Path(tmp_path_factory.mktemp("sblocal")), size=1)
    ops = [
        {
            "op": "insert",
            "table": "Encap",
            "uuid-name": f"e{i}",
            "row": {"type": "geneve", "ip": f"192.0.2.{i + 1}", "chassis_name": name},
        }
        for i, name in enumerate(("here", "other"))
    ]
    ops += [
        {
            "op": "insert",
            "table": "Chassis",
            "row": {"name": name, "hostname": name, "encaps": ["named-uuid", f"e{i}"]},
        }
        for i, name in enumerate(("here", "other"))
    ]
    ops += [
        {
            "op": "insert",
            "table": "Datapath_Binding",
            "row": {"tunnel_key": n + 1, "external_ids": _map({"name": f"neutron-{net}"})},
        }
        for n, net in enumerate(NETWORKS)
    ]
    results = sb.transact(ops)
    here, other = results[2]["uuid"][1], results[3]["uuid"][1]
    dps = {net: results[4 + n]["uuid"][1] for n, net in enumerate(NETWORKS)}
    ports = []
    for n, net in enumerate(NETWORKS):
        ports.append(
            _port(
                f"meta-{net}",
                dps[net],
                f"fa:16:3e:00:0{n}:01",
                f"10.{n}.0.2",
                kind="localport",
                owner="network:distributed",
                key=1,
            )
        )
        for i in range(5):
            ports.append(
                _port(
                    f"o-{net}-{i}",
                    dps[net],
                    f"fa:16:3e:0{n}:01:0{i}",
                    f"10.{n}.1.{i}",
                    chassis=other,
                    key=10 + i,
                )
            )
        ports.append(_port(f"free-{net}", dps[net], f"fa:16:3e:0{n}:02:01", f"10.{n}.2.1", key=20))
    ports.append(
        _port("p-here-a", dps["net-a"], "fa:16:3e:aa:00:01", "10.0.9.1", chassis=here, key=30)
    )
    sb.transact(ports)
    yield {"sb": sb, "here": here, "other": other, "dps": dps}
    sb.stop()


def sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


async def until(predicate, timeout: float, step: float = 0.002) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true within {timeout} s")
        await sleep(step)
    return time.monotonic() - start


def names(backend: OvnBackend) -> set[str]:
    return {row["logical_port"] for row in backend.monitor._store.tables["Port_Binding"].values()}


def networks(backend: OvnBackend) -> set[str]:
    return {
        row["external_ids"]["name"]
        for row in backend.monitor._store.tables["Datapath_Binding"].values()
    }


def set_port(sb, name: str, row: dict) -> None:
    sb.transact(
        [
            {
                "op": "update",
                "table": "Port_Binding",
                "where": [["logical_port", "==", name]],
                "row": row,
            }
        ]
    )


def answers(backend: OvnBackend, network: str, ip: str) -> list[str]:
    found = backend.ports_by_ip_now([network], ip)
    return [] if found is None else [p.id for p in found]


@pytest.fixture
def backend(cloud):
    b = OvnBackend(
        reactor,
        parse_remotes(cloud["sb"].remotes()),
        timeout=10,
        probe_interval=0,
        chassis="here",
        local_retry_interval=0.2,
    )
    yield b
    pytest_twisted.blockon(b.stop())


@pytest_twisted.ensureDeferred
async def test_the_replica_holds_only_what_this_chassis_needs(cloud, backend) -> None:
    backend.start()
    await until(lambda: backend.ready() and "meta-net-a" in names(backend), 10)
    assert names(backend) == {"p-here-a", "meta-net-a"}
    assert networks(backend) == {"neutron-net-a"}
    chassis = backend.monitor._store.tables["Chassis"]
    assert [row["name"] for row in chassis.values()] == ["here"]
    assert answers(backend, "net-a", "10.0.9.1") == ["p-here-a"]
    assert answers(backend, "net-a", "10.0.1.0") == []  # bound on the other chassis


@pytest_twisted.ensureDeferred
async def test_ports_arriving_and_leaving_move_the_conditions(cloud, backend) -> None:
    sb, here, other = cloud["sb"], cloud["here"], cloud["other"]
    backend.start()
    await until(lambda: backend.ready() and "meta-net-a" in names(backend), 10)
    try:
        # a boot here on net-b: answered within 1 s, its network's datapath and
        # localport come with it
        set_port(sb, "free-net-b", {"chassis": ["uuid", here]})
        took = await until(lambda: answers(backend, "net-b", "10.1.2.1") == ["free-net-b"], 1.0)
        await until(lambda: "meta-net-b" in names(backend), 1.0)
        assert networks(backend) == {"neutron-net-a", "neutron-net-b"}
        assert took < 1.0
        # an incoming live migration to here on net-c: additional_chassis
        set_port(sb, "o-net-c-0", {"additional_chassis": ["uuid", here]})
        await until(lambda: answers(backend, "net-c", "10.2.1.0") == ["o-net-c-0"], 1.0)
        await until(lambda: "meta-net-c" in names(backend), 1.0)
        # the migration done: only on the other chassis again; net-c leaves
        set_port(sb, "o-net-c-0", {"additional_chassis": ["set", []]})
        await until(lambda: "o-net-c-0" not in names(backend), 1.0)
        await until(lambda: networks(backend) == {"neutron-net-a", "neutron-net-b"}, 1.0)
        await until(lambda: "meta-net-c" not in names(backend), 1.0)
        assert answers(backend, "net-c", "10.2.1.0") == []
        # the port on net-b leaves this chassis: it and its network disappear
        set_port(sb, "free-net-b", {"chassis": ["uuid", other]})
        await until(lambda: names(backend) == {"p-here-a", "meta-net-a"}, 1.0)
        await until(lambda: networks(backend) == {"neutron-net-a"}, 1.0)
        assert answers(backend, "net-b", "10.1.2.1") == []
    finally:
        set_port(sb, "free-net-b", {"chassis": ["set", []]})
        set_port(sb, "o-net-c-0", {"additional_chassis": ["set", []]})


@pytest_twisted.ensureDeferred
async def test_a_reconnect_resumes_with_the_narrowed_conditions(
    cloud, backend, monkeypatch
) -> None:
    sb, here = cloud["sb"], cloud["here"]
    sent: list[tuple[str, list]] = []
    request = JsonRpcProtocol.request

    def recording(self, method, params):
        sent.append((method, params))
        return request(self, method, params)

    monkeypatch.setattr(JsonRpcProtocol, "request", recording)
    backend.start()
    await until(lambda: backend.ready() and "meta-net-a" in names(backend), 10)
    try:
        set_port(sb, "free-net-c", {"chassis": ["uuid", here]})
        await until(lambda: "meta-net-c" in names(backend), 1.0)
        await until(lambda: backend.monitor._acked_conditions == backend.monitor.conditions, 1.0)
        sent.clear()
        backend.monitor._protocol.transport.abortConnection()
        await until(lambda: not backend.ready(), 5)
        await until(backend.ready, 10)
        (since,) = [params for method, params in sent if method == "monitor_cond_since"]
        ports_where = since[2]["Port_Binding"]["where"]
        assert ["chassis", "==", ["uuid", here]] in ports_where
        assert ["additional_chassis", "includes", ["uuid", here]] in ports_where
        assert len(ports_where) == 4  # and the localports of net-a and net-c, by uuid
        assert sorted(since[2]["Datapath_Binding"]["where"]) == sorted(
            ["_uuid", "==", ["uuid", cloud["dps"][net]]] for net in ("net-a", "net-c")
        )
        assert since[3] != "00000000-0000-0000-0000-000000000000"
        assert backend.monitor.sync_kinds["changes"] == 1  # resumed, no full copy
        assert names(backend) == {"p-here-a", "meta-net-a", "free-net-c", "meta-net-c"}
        assert answers(backend, "net-c", "10.2.2.1") == ["free-net-c"]
    finally:
        set_port(sb, "free-net-c", {"chassis": ["set", []]})
