"""The OVN backend against a real 3-member clustered Southbound database on this machine
(C{ovsdb-tool create-cluster} / C{join-cluster}, three C{ovsdb-server} processes on
127.0.0.1, private directories: L{bench.fakes.ovnsb_cluster}).

Needs what tests/integration/test_ovn_sb.py needs; skips with one line without it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher

from bench.fakes.ovnsb import missing
from bench.fakes.ovnsb_cluster import SbCluster
from metaproxy.ovsdb.remote import parse_remotes
from metaproxy.resolve.base import LookupUnavailable
from metaproxy.resolve.ovn import OvnBackend

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

TABLE = {
    "ports": [
        {
            "id": "pa",
            "network_id": "net-a",
            "mac_address": "fa:16:3e:00:00:0a",
            "fixed_ips": ["10.0.0.5"],
            "device_id": "vm-a",
            "project_id": "proj-a",
        }
    ]
}
NEW_PORT = {
    "id": "pn",
    "network_id": "net-a",
    "mac_address": "fa:16:3e:00:00:0b",
    "fixed_ips": ["10.0.0.6"],
    "device_id": "vm-n",
    "project_id": "proj-a",
}


@pytest.fixture
def cluster(tmp_path_factory):
    sb = SbCluster.start(Path(tmp_path_factory.mktemp("sbc")), size=3)
    sb.load_table(TABLE)
    yield sb
    sb.stop()


def sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


async def until(predicate, timeout: float, step: float = 0.02) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true within {timeout} s")
        await sleep(step)
    return time.monotonic() - start


def backend_on(cluster: SbCluster) -> OvnBackend:
    return OvnBackend(
        reactor,
        parse_remotes(cluster.remotes()),
        timeout=5,
        probe_interval=0,
        retry_max_interval=1,
    )


def member_of(cluster: SbCluster, backend: OvnBackend) -> int:
    remote = str(backend.monitor.remote)
    return next(i for i, m in enumerate(cluster.members) if m.remote("tcp") == remote)


async def answer(backend: OvnBackend, ip: str) -> list[str]:
    return [p.device_id for p in await backend.ports_by_ip(["net-a"], ip)]


def insert_port(cluster: SbCluster, port: dict) -> None:
    chassis = cluster.transact(
        [{"op": "select", "table": "Chassis", "where": [], "columns": ["_uuid"]}]
    )[0]["rows"][0]["_uuid"]
    datapath = cluster.transact(
        [{"op": "select", "table": "Datapath_Binding", "where": [], "columns": ["_uuid"]}]
    )[0]["rows"][0]["_uuid"]
    cluster.transact(
        [
            {
                "op": "insert",
                "table": "Port_Binding",
                "row": {
                    "logical_port": port["id"],
                    "datapath": datapath,
                    "tunnel_key": 50,
                    "chassis": chassis,
                    "mac": f"{port['mac_address']} {port['fixed_ips'][0]}",
                    "external_ids": [
                        "map",
                        [
                            ["neutron:device_id", port["device_id"]],
                            ["neutron:project_id", port["project_id"]],
                        ],
                    ],
                },
            }
        ]
    )


@pytest_twisted.ensureDeferred
async def test_an_isolated_member_is_not_answered_from_until_its_cluster_is_back(
    cluster,
) -> None:
    events = []
    globalLogPublisher.addObserver(events.append)
    backend = backend_on(cluster)
    backend.start()
    try:
        await until(backend.ready, 15)
        assert await answer(backend, "10.0.0.5") == ["vm-a"]
        kept = member_of(cluster, backend)
        others = [i for i in range(3) if i != kept]
        for i in others:
            cluster.members[i].stop()
        # the member left alone loses its cluster: metaproxy stops answering from it
        await until(lambda: not backend.ready(), 20)
        assert backend.monitor.members.states[backend.monitor.members.order[0]] != "unknown"
        kept_remote = cluster.members[kept].remote("tcp")
        await until(
            lambda: any(
                str(r) == kept_remote and s == "cluster_disconnected"
                for r, s in backend.monitor.members.states.items()
            ),
            10,
        )
        # and keeps refusing it while it is alone, trying it again and again
        attempts = backend.monitor.members.attempts.copy()
        for _ in range(20):
            await sleep(0.15)
            assert not backend.ready()
        assert sum(backend.monitor.members.attempts.values()) > sum(attempts.values())
        with pytest.raises(LookupUnavailable, match="refused|lost"):
            await backend.ports_by_ip(["net-a"], "10.0.0.5")
        text = backend.metric_samples()
        states = {
            dict(s.labels)["remote"]: dict(s.labels)["state"]
            for s in text
            if s.name == "metaproxy_ovsdb_member_state" and s.value == 1
        }
        assert states[kept_remote] == "cluster_disconnected"
        assert {states[cluster.members[i].remote("tcp")] for i in others} == {"unreachable"}
        # the cluster comes back: it answers again, changes included
        for i in others:
            cluster.members[i].restart()
        await until(lambda: cluster.connected(kept), 20)
        insert_port(cluster, NEW_PORT)
        await until(backend.ready, 15)
        await until(lambda: backend.index.ports_by_ip(["net-a"], "10.0.0.6"), 5)
        assert await answer(backend, "10.0.0.6") == ["vm-n"]
        assert await answer(backend, "10.0.0.5") == ["vm-a"]
    finally:
        await backend.stop()
        globalLogPublisher.removeObserver(events.append)
    lines = [formatEvent(e) for e in events]
    refused = [
        line for line in lines if kept_remote in line and "refused (cluster_disconnected)" in line
    ]
    # once per state change, however many attempts were refused
    assert len(refused) == 1, refused
    assert (
        backend.monitor.members.refusals[
            next(r for r in backend.monitor.members.order if str(r) == kept_remote),
            "cluster_disconnected",
        ]
        >= 2
    )
    assert any("answering 503 until a usable member" in line for line in lines)


@pytest_twisted.ensureDeferred
async def test_a_member_going_away_moves_the_client_and_only_the_changes_are_sent(
    cluster,
) -> None:
    backend = backend_on(cluster)
    backend.start()
    try:
        await until(backend.ready, 15)
        first = member_of(cluster, backend)
        cluster.members[first].stop()
        insert_port(cluster, NEW_PORT)
        await until(lambda: backend.ready() and backend.monitor.syncs >= 2, 20)
        assert member_of(cluster, backend) != first
        # resumed from the last transaction on another member: no full copy
        assert backend.monitor.sync_kinds == {"full": 1, "changes": 1}
        assert await answer(backend, "10.0.0.6") == ["vm-n"]
        assert await answer(backend, "10.0.0.5") == ["vm-a"]
    finally:
        await backend.stop()
