"""The OVN backend against a real ovsdb-server on the OVN Southbound schema.

Needs ovsdb-server and ovsdb-tool (Debian: openvswitch-common) and ovn-sb.ovsschema
(Debian: ovn-central; .ci/run unpacks it into ~/.cache/metaproxy/ovn). Without them
every test here skips with one line saying what is missing.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from bench.fakes.ovnsb import SbServer, missing
from metaproxy.ovsdb.remote import TlsFiles, load_tls_options, parse_remotes
from metaproxy.resolve.base import LookupUnavailable
from metaproxy.resolve.ovn import OvnBackend

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

TABLE = {
    "routers": {"rt-1": ["net-a", "net-b"]},
    "ports": [
        {
            "id": "pa",
            "network_id": "net-a",
            "mac_address": "fa:16:3e:00:00:0a",
            "fixed_ips": ["10.0.0.5"],
            "device_id": "vm-a",
            "project_id": "proj-a",
        },
        {
            "id": "pb",
            "network_id": "net-b",
            "mac_address": "fa:16:3e:00:00:0b",
            "fixed_ips": ["10.0.0.5", "fd00::5"],
            "device_id": "vm-b",
            "project_id": "proj-b",
        },
    ],
}


@pytest.fixture
def server(tmp_path_factory):
    run = Path(tmp_path_factory.mktemp("sb"))
    sb = SbServer.start(run)
    sb.load_table(TABLE)
    yield sb
    sb.stop()


def backend_on(remote: str, **kw) -> OvnBackend:
    return OvnBackend(reactor, parse_remotes(remote), timeout=10, probe_interval=0, **kw)


def sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


async def until(predicate, timeout: float, step: float = 0.002) -> float:
    """Wait on the reactor until C{predicate()}; return the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true within {timeout} s")
        await sleep(step)
    return time.monotonic() - start


def ids(backend: OvnBackend, networks, ip) -> list[tuple[str, str]]:
    return [(p.device_id, p.project_id) for p in backend.index.ports_by_ip(networks, ip)]


def update(server: SbServer, port: str, row: dict) -> None:
    server.transact(
        [
            {
                "op": "update",
                "table": "Port_Binding",
                "where": [["logical_port", "==", port]],
                "row": row,
            }
        ]
    )


@pytest.mark.parametrize("kind", ["unix", "tcp"])
@pytest_twisted.ensureDeferred
async def test_synchronises_over_unix_and_tcp(server, kind) -> None:
    backend = backend_on(server.remote(kind))
    backend.start()
    try:
        await until(backend.ready, 10)
        assert ids(backend, ("net-a",), "10.0.0.5") == [("vm-a", "proj-a")]
        assert ids(backend, ("net-b",), "fd00::5") == [("vm-b", "proj-b")]
        networks = await backend.router_networks("rt-1")
        assert sorted(networks) == ["net-a", "net-b"]
        found = await backend.ports_by_mac(["net-b"], "fa:16:3e:00:00:0b")
        assert [p.id for p in found] == ["pb"]
    finally:
        await backend.stop()


@pytest_twisted.ensureDeferred
async def test_inserts_updates_and_deletes_show_up_within_100_ms(server) -> None:
    backend = backend_on(server.remote("unix"))
    backend.start()
    try:
        await until(backend.ready, 10)
        dp = server.transact(
            [
                {
                    "op": "select",
                    "table": "Datapath_Binding",
                    "where": [],
                    "columns": ["_uuid", "external_ids"],
                }
            ]
        )[0]["rows"]
        net_a = next(r["_uuid"] for r in dp if r["external_ids"][1][0][1] == "neutron-net-a")
        chassis = server.transact(
            [{"op": "select", "table": "Chassis", "where": [], "columns": ["_uuid"]}]
        )[0]["rows"][0]["_uuid"]
        # inserted, unbound: identifies nobody
        server.transact(
            [
                {
                    "op": "insert",
                    "table": "Port_Binding",
                    "row": {
                        "logical_port": "pn",
                        "datapath": net_a,
                        "tunnel_key": 99,
                        "mac": "fa:16:3e:00:00:99 10.0.0.99",
                        "external_ids": [
                            "map",
                            [["neutron:device_id", "vm-n"], ["neutron:project_id", "proj-n"]],
                        ],
                    },
                }
            ]
        )
        await sleep(0.1)
        assert ids(backend, ("net-a",), "10.0.0.99") == []
        update(server, "pn", {"chassis": chassis})  # bound
        assert await until(lambda: ids(backend, ("net-a",), "10.0.0.99"), 0.1) <= 0.1
        assert ids(backend, ("net-a",), "10.0.0.99") == [("vm-n", "proj-n")]
        update(server, "pn", {"mac": "fa:16:3e:00:00:99 10.0.0.100"})  # IP changed
        await until(lambda: ids(backend, ("net-a",), "10.0.0.100"), 0.1)
        assert ids(backend, ("net-a",), "10.0.0.99") == []
        update(server, "pn", {"chassis": ["set", []]})  # unbound
        await until(lambda: not ids(backend, ("net-a",), "10.0.0.100"), 0.1)
        update(
            server,
            "pa",
            {
                "external_ids": [
                    "map",
                    [["neutron:device_id", "vm-a2"], ["neutron:project_id", "proj-a"]],
                ]
            },
        )
        await until(lambda: ids(backend, ("net-a",), "10.0.0.5") == [("vm-a2", "proj-a")], 0.1)
        server.transact(
            [{"op": "delete", "table": "Port_Binding", "where": [["logical_port", "==", "pa"]]}]
        )  # deleted
        await until(lambda: not ids(backend, ("net-a",), "10.0.0.5"), 0.1)
        assert ids(backend, ("net-b",), "10.0.0.5") == [("vm-b", "proj-b")]
    finally:
        await backend.stop()


@pytest_twisted.ensureDeferred
async def test_server_restarted_mid_test_is_resynchronised(server) -> None:
    backend = backend_on(server.remote("tcp"))
    backend.start()
    try:
        await until(backend.ready, 10)
        server.stop()
        await until(lambda: not backend.monitor.synchronised, 10)
        # while the server is away: 503, never the last copy (it may be stale)
        assert not backend.ready()
        with pytest.raises(LookupUnavailable, match="lost"):
            await backend.ports_by_ip(["net-a"], "10.0.0.5")
        server.restart()
        # changed as the agent reconnects: the full copy must carry it
        server.transact(
            [{"op": "delete", "table": "Port_Binding", "where": [["logical_port", "==", "pa"]]}]
        )
        await until(lambda: backend.monitor.syncs >= 2, 15)
        await until(lambda: not ids(backend, ("net-a",), "10.0.0.5"), 1)
        assert ids(backend, ("net-b",), "10.0.0.5") == [("vm-b", "proj-b")]
    finally:
        await backend.stop()


@pytest_twisted.ensureDeferred
async def test_lookup_storm_during_sync_gets_503_never_a_wrong_answer(tmp_path) -> None:
    sb = SbServer.start(tmp_path / "big")
    try:
        ports = [
            {
                "id": f"p{i}",
                "network_id": f"net-{i % 20}",
                "mac_address": "fa:16:3e:%02x:%02x:%02x" % (i >> 16, (i >> 8) & 255, i & 255),
                "fixed_ips": [f"10.{i >> 8 & 255}.{i & 255}.{i % 20 + 1}"],
                "device_id": f"vm-{i}",
                "project_id": "pr",
            }
            for i in range(3000)
        ]
        sb.load_table({"ports": ports})
        backend = backend_on(sb.remote("unix"))
        outcomes = {"unavailable": 0, "right": 0, "wrong": 0}

        def ask(i: int) -> None:
            port = ports[i]
            d = backend.ports_by_ip([port["network_id"]], port["fixed_ips"][0])

            def answered(found):
                good = [p.device_id for p in found] == [port["device_id"]]
                outcomes["right" if good else "wrong"] += 1

            def failed(failure):
                failure.trap(LookupUnavailable)
                outcomes["unavailable"] += 1

            d.addCallbacks(answered, failed)

        backend.start()
        try:
            i = 0
            while not backend.ready() or outcomes["right"] < 500:
                for _ in range(50):
                    ask(i % len(ports))
                    i += 1
                await sleep(0)
                assert i < 10_000_000
            assert outcomes["wrong"] == 0
            assert outcomes["unavailable"] > 0 and outcomes["right"] >= 500
        finally:
            await backend.stop()
    finally:
        sb.stop()


@pytest_twisted.ensureDeferred
async def test_ssl_with_real_certificates(tmp_path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    for who, identity in (("server", "127.0.0.1"), ("client", "metaproxy")):
        cert = ca.issue_cert(identity)
        cert.private_key_pem.write_to_path(str(tmp_path / f"{who}-key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / f"{who}-cert.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    sb = SbServer.start(
        tmp_path / "ssl",
        tls={
            "private_key": str(tmp_path / "server-key.pem"),
            "certificate": str(tmp_path / "server-cert.pem"),
            "ca_cert": str(tmp_path / "ca.pem"),
        },
    )
    try:
        sb.load_table(TABLE)
        tls = load_tls_options(
            TlsFiles(
                str(tmp_path / "client-key.pem"),
                str(tmp_path / "client-cert.pem"),
                str(tmp_path / "ca.pem"),
            )
        )
        backend = backend_on(sb.remote("ssl"), tls_options=tls)
        backend.start()
        try:
            await until(backend.ready, 10)
            assert ids(backend, ("net-a",), "10.0.0.5") == [("vm-a", "proj-a")]
        finally:
            await backend.stop()
        # a client whose CA did not sign the server's certificate never synchronises
        other = trustme.CA()
        other.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
        stranger = backend_on(
            sb.remote("ssl"),
            tls_options=load_tls_options(
                TlsFiles(
                    str(tmp_path / "client-key.pem"),
                    str(tmp_path / "client-cert.pem"),
                    str(tmp_path / "other-ca.pem"),
                )
            ),
        )
        stranger.start()
        try:
            await sleep(1.0)
            assert not stranger.ready()
        finally:
            await stranger.stop()
    finally:
        sb.stop()
