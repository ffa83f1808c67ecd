"""metaproxy.resolve.rpc and metaproxy.neutron.bus: upstream's filters, Neutron's port and
context shapes, and the backend's threads, timeouts and errors (a fake bus, a Clock)."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from metaproxy.caller import Identity
from metaproxy.config import default_settings
from metaproxy.namespace import Namespace, NamespaceKind
from metaproxy.neutron.bus import (
    NEUTRON_CONTROL_EXCHANGE,
    NeutronRpc,
    admin_context,
    messaging_conf,
    report_time,
    rpc_timeout,
)
from metaproxy.resolve import backends
from metaproxy.resolve.base import LookupUnavailable, Port
from metaproxy.resolve.cache import CachingBackend
from metaproxy.resolve.resolver import InstanceResolver
from metaproxy.resolve.rpc import (
    RpcBackend,
    ip_filters,
    mac_filters,
    port_from_dict,
    router_filters,
)

OWNERS = [
    "network:router_interface",
    "network:ha_router_replicated_interface",
    "network:router_interface_distributed",
]


def neutron_port(
    pid: str, network: str, ip: str, device: str, owner: str = "compute:nova", **extra: Any
) -> dict[str, Any]:
    return {
        "id": pid,
        "network_id": network,
        "mac_address": "FA:16:3E:00:00:01",
        "fixed_ips": [{"subnet_id": "s1", "ip_address": ip}],
        "device_id": device,
        "device_owner": owner,
        "project_id": "proj",
        "tenant_id": "proj",
        **extra,
    }


# --- upstream's filters (docs/upstream.md, "Port lookup") ---------------------------


def test_router_filters_are_upstreams() -> None:
    assert router_filters("r1") == {"device_id": ["r1"], "device_owner": OWNERS}


def test_ip_and_mac_filters_are_upstreams() -> None:
    assert ip_filters(("n1", "n2", "n1"), "10.0.0.5") == {
        "fixed_ips": {"ip_address": ["10.0.0.5"]},
        "network_id": ["n1", "n2", "n1"],
    }
    assert mac_filters(("n1",), "02:00:00:00:00:99") == {
        "mac_address": ["02:00:00:00:00:99"],
        "network_id": ["n1"],
    }


# --- Neutron's shapes ------------------------------------------------------------------


def test_port_from_neutron_dict() -> None:
    port = port_from_dict(neutron_port("p1", "n1", "fd00:0::5", "vm-1"))
    assert port == Port(
        "p1", "n1", "fa:16:3e:00:00:01", ("fd00::5",), "vm-1", "proj", "compute:nova"
    )


def test_port_from_older_server_uses_tenant_id() -> None:
    raw = neutron_port("p1", "n1", "10.0.0.5", "vm-1")
    del raw["project_id"]
    raw["tenant_id"] = "old-proj"
    assert port_from_dict(raw).project_id == "old-proj"


def test_port_without_network_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a port"):
        port_from_dict({"id": "p1"})


def test_admin_context_is_neutron_libs_without_session() -> None:
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901)
    ctx = admin_context(now, request_id="req-1")
    assert ctx["is_admin"] is True and ctx["is_admin_project"] is True
    assert sorted(ctx["roles"]) == ["admin", "member", "reader"]
    assert (ctx["user_id"], ctx["project_id"], ctx["user"], ctx["project"]) == (None,) * 4
    assert ctx["request_id"] == "req-1"
    assert ctx["timestamp"] == "2026-01-02 03:04:05.678901"
    assert ctx["user_identity"] == "- - - - -"
    assert ctx["has_global_access"] is True and ctx["can_set_project_id"] is True
    assert admin_context()["request_id"] != admin_context()["request_id"]
    assert report_time(now) == "2026-01-02T03:04:05.678901"


# --- the backend -----------------------------------------------------------------------


class FakeBus:
    """A blocking get_ports over a list of Neutron port dicts, recording the filters."""

    timeout_errors = (TimeoutError,)

    def __init__(self, ports: list[dict[str, Any]]) -> None:
        self.ports = ports
        self.filters: list[dict[str, Any]] = []
        self.error: Exception | None = None

    def get_ports(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        self.filters.append(filters)
        if self.error is not None:
            raise self.error
        found = []
        for p in self.ports:
            if "device_id" in filters:
                ok = (
                    p["device_id"] in filters["device_id"]
                    and p["device_owner"] in filters["device_owner"]
                )
            else:
                ok = p["network_id"] in filters["network_id"] and (
                    any(
                        ip["ip_address"] in filters["fixed_ips"]["ip_address"]
                        for ip in p["fixed_ips"]
                    )
                    if "fixed_ips" in filters
                    else p["mac_address"].lower() in filters["mac_address"]
                )
            if ok:
                found.append(p)
        return found


def sync(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    try:
        return succeed(f(*args))
    except Exception:
        return fail()


PORTS = [
    neutron_port("rif", "net-a", "10.0.0.1", "r1", "network:router_interface"),
    neutron_port("gw", "ext", "203.0.113.9", "r1", "network:router_gateway"),
    neutron_port("pa", "net-a", "10.0.0.5", "vm-a"),
]


def test_router_then_ip_through_resolver_with_upstreams_filters() -> None:
    bus = FakeBus(PORTS)
    backend = RpcBackend(Clock(), bus, timeout=5, run_in_thread=sync)
    resolver = InstanceResolver(backend)
    d = resolver.resolve(
        Identity(Namespace(NamespaceKind.ROUTER, "r1"), "10.0.0.5", None, b"10.0.0.5")
    )
    instance = d.result
    assert (instance.instance_id, instance.project_id) == ("vm-a", "proj")
    assert bus.filters == [router_filters("r1"), ip_filters(["net-a"], "10.0.0.5")]


def test_link_local_caller_is_looked_up_by_mac() -> None:
    bus = FakeBus(PORTS)
    backend = RpcBackend(Clock(), bus, timeout=5, run_in_thread=sync)
    d = InstanceResolver(backend).resolve(
        Identity(
            Namespace(NamespaceKind.NETWORK, "net-a"), "fe80::1", "fa:16:3e:00:00:01", b"fe80::1"
        )
    )
    assert d.result is not None
    assert bus.filters == [mac_filters(["net-a"], "fa:16:3e:00:00:01")]


def test_a_boot_through_the_cache_costs_two_calls() -> None:
    """~28 requests of one boot: one router call and one port call."""
    bus = FakeBus(PORTS)
    clock = Clock()
    cache = CachingBackend(
        RpcBackend(clock, bus, timeout=5, run_in_thread=sync), clock, ttl=30, enabled=True
    )
    resolver = InstanceResolver(cache)
    caller = Identity(Namespace(NamespaceKind.ROUTER, "r1"), "10.0.0.5", None, b"10.0.0.5")
    for _ in range(28):
        assert resolver.resolve(caller).result.instance_id == "vm-a"
    assert len(bus.filters) == 2


def test_no_answer_in_time_is_unavailable_and_the_late_answer_is_ignored() -> None:
    clock = Clock()
    pending: list[tuple[Callable[..., Any], Deferred[Any]]] = []

    def later(f: Callable[..., Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        pending.append((f, d))
        return d

    bus = FakeBus(PORTS)
    backend = RpcBackend(clock, bus, timeout=3, run_in_thread=later)
    backend.start()
    d = backend.ports_by_ip(["net-a"], "10.0.0.5")
    clock.advance(2.9)
    assert not d.called
    clock.advance(0.2)
    failure = d.result
    d.addErrback(lambda _: None)
    assert failure.check(LookupUnavailable)
    assert "within 3 s" in str(failure.value)
    assert not backend.ready()
    # the thread gets to the queued call only now: it is not sent
    f, thread_d = pending[0]
    with pytest.raises(Exception, match="dropped before sending"):
        f()
    assert bus.filters == []
    thread_d.callback([])  # a late answer changes nothing


def test_remote_timeout_and_errors_are_unavailable_naming_what_failed() -> None:
    bus = FakeBus(PORTS)
    backend = RpcBackend(Clock(), bus, timeout=5, run_in_thread=sync)
    backend.start()
    bus.error = TimeoutError("Timed out waiting for a reply")
    d = backend.router_networks("r1")
    f = d.result
    d.addErrback(lambda _: None)
    assert f.check(LookupUnavailable) and "no answer from neutron-server" in str(f.value)
    bus.error = ConnectionRefusedError("Connection refused")
    errors: list[str] = []
    backend.router_networks("r1").addErrback(
        lambda f: f.check(LookupUnavailable) and errors.append(str(f.value))
    )
    assert "ConnectionRefusedError: Connection refused" in errors[0]
    assert backend.failures == 2 and not backend.ready()
    bus.error = None
    assert backend.router_networks("r1").result == ("net-a",)
    assert backend.ready()


def test_an_answer_that_is_not_ports_is_unavailable() -> None:
    class Odd:
        def get_ports(self, filters: Any) -> Any:
            return {"ports": []}

    d = RpcBackend(Clock(), Odd(), timeout=5, run_in_thread=sync).router_networks("r1")
    f = d.result
    d.addErrback(lambda _: None)
    assert f.check(LookupUnavailable) and "not a list of ports" in str(f.value)


def test_rpc_backend_needs_transport_url() -> None:
    settings = default_settings(lookup_backend="rpc")
    with pytest.raises(backends.BackendError, match="needs \\[DEFAULT\\] transport_url"):
        backends.build_backend(Clock(), settings)


def test_rpc_backend_is_built_from_transport_url_without_connecting() -> None:
    settings = default_settings(transport_url="rabbit://u:RABBITPASS@127.0.0.1:1/")
    assert settings.lookup_backend == "rpc"
    backend = backends.build_backend(Clock(), settings)
    assert isinstance(backend, RpcBackend)
    text = backends.describe_backend(backend)
    assert "q-plugin" in text and "RABBITPASS" not in text
    assert "exchange neutron" in text


def test_rpc_timeout_is_bounded_by_nova_timeout() -> None:
    assert rpc_timeout(default_settings()) == 28
    assert rpc_timeout(default_settings(rpc_response_timeout=5)) == 5


# --- the exchange: neutron-server consumes from "neutron", not oslo.messaging's "openstack"


def test_messaging_conf_defaults_to_neutrons_exchange(tmp_path) -> None:
    assert messaging_conf().control_exchange == NEUTRON_CONTROL_EXCHANGE == "neutron"
    # an operator's explicit value still wins
    conf_file = tmp_path / "neutron.conf"
    conf_file.write_text("[DEFAULT]\ncontrol_exchange = openstack\n")
    assert messaging_conf([str(conf_file)]).control_exchange == "openstack"


def test_lookups_reach_a_server_on_the_neutron_exchange() -> None:
    """What neutron-server and upstream's agent use: a server listening on the exchange
    C{neutron} answers metaproxy's get_ports (over oslo.messaging's in-process driver).
    With oslo.messaging's default exchange the call would go unanswered and time out."""
    import oslo_messaging

    rpc = NeutronRpc(
        default_settings(transport_url="fake://"), lookup_timeout=10, report_timeout=10
    )
    seen: list[dict[str, Any]] = []

    class Endpoint:
        target = oslo_messaging.Target(version="1.0")

        def get_ports(self, context: Any, filters: dict[str, Any]) -> list[dict[str, Any]]:
            seen.append(filters)
            return [{"id": "p1"}]

    server = oslo_messaging.get_rpc_server(
        rpc.transport,
        oslo_messaging.Target(exchange="neutron", topic="q-plugin", server="neutron-server"),
        [Endpoint()],
        executor="threading",
        serializer=oslo_messaging.NoOpSerializer(),
    )
    server.start()
    try:
        assert rpc.get_ports({"device_id": ["r1"]}) == [{"id": "p1"}]
    finally:
        server.stop()
        server.wait()
        rpc.close()
    assert seen == [{"device_id": ["r1"]}]
