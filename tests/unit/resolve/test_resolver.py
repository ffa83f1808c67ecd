"""Caller to instance, as upstream resolves it (docs/upstream.md, "Port lookup";
tests/CHECKLIST.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from metaproxy.caller import Identity
from metaproxy.namespace import Namespace, NamespaceKind
from metaproxy.resolve.base import Instance, LookupUnavailable, Port
from metaproxy.resolve.cache import CachingBackend
from metaproxy.resolve.resolver import InstanceResolver, NotFound
from metaproxy.resolve.table import TableBackend

ROUTER, NETWORK, OVN = NamespaceKind.ROUTER, NamespaceKind.NETWORK, NamespaceKind.OVN


def port(
    id: str,
    network_id: str,
    ips: list[str],
    device_id: str = "",
    project_id: str = "proj",
    mac: str = "fa:16:3e:00:00:01",
    owner: str = "compute:nova",
) -> dict[str, object]:
    return {
        "id": id,
        "network_id": network_id,
        "mac_address": mac,
        "fixed_ips": ips,
        "device_id": device_id,
        "project_id": project_id,
        "device_owner": owner,
    }


TABLE = {
    "ports": [
        # router r-a on network blue (plain interface) and red (distributed); gateway on ext
        port("ra-blue", "blue", ["10.0.0.1"], "r-a", owner="network:router_interface"),
        port("ra-ext", "ext", ["203.0.113.9"], "r-a", owner="network:router_gateway"),
        port("ra-red", "red", ["10.1.0.1"], "r-a", owner="network:router_interface_distributed"),
        # router r-b (HA) on network green, which reuses blue's addresses
        port(
            "rb-green", "green", ["10.0.0.1"], "r-b", owner="network:ha_router_replicated_interface"
        ),
        # router r-c has two interface ports on one network
        port("rc-blue-4", "blue", ["10.0.0.254"], "r-c", owner="network:router_interface"),
        port("rc-blue-6", "blue", ["fd00::1"], "r-c", owner="network:router_interface"),
        # instances
        port(
            "vm-blue",
            "blue",
            ["10.0.0.5", "fd00::5"],
            "inst-blue",
            "proj-blue",
            mac="fa:16:3e:00:00:05",
        ),
        port(
            "vm-green", "green", ["10.0.0.5"], "inst-green", "proj-green", mac="fa:16:3e:00:00:06"
        ),
        port("vm-red", "red", ["10.1.0.7"], "inst-red", "proj-red", mac="fa:16:3e:00:00:07"),
        port("vm-ext", "ext", ["203.0.113.50"], "inst-ext", "proj-ext", mac="fa:16:3e:00:00:08"),
        # two ports claiming one address on red
        port("dup-1", "red", ["10.1.0.66"], "inst-x", mac="fa:16:3e:00:00:09"),
        port("dup-2", "red", ["10.1.0.66"], "inst-y", mac="fa:16:3e:00:00:0a"),
        # a reserved port with no device
        port("reserved", "green", ["10.0.0.9"], "", mac="fa:16:3e:00:00:0b"),
        # OVN network, no router
        port("vm-ovn", "ovn-net", ["192.168.1.1"], "inst-ovn", "proj-ovn", mac="fa:16:3e:00:00:0c"),
    ],
    "routers": {"r-empty": []},
}


@pytest.fixture
def table(tmp_path: Path) -> TableBackend:
    path = tmp_path / "ports.json"
    path.write_text(json.dumps(TABLE))
    return TableBackend(path)


class Recording:
    """Wraps a backend, recording each call (method and arguments, keywords included)."""

    def __init__(self, backend: Any, accepts_fresh: bool = False) -> None:
        self.backend = backend
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        if accepts_fresh:
            self.accepts_fresh = True

    def __getattr__(self, method: str) -> Any:
        if method not in ("router_networks", "ports_by_ip", "ports_by_mac"):
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Deferred:
            self.calls.append((method, args, kwargs))
            return getattr(self.backend, method)(*args)

        return call


def caller(kind: NamespaceKind, id: str, ip: str, mac: str | None = None) -> Identity:
    return Identity(Namespace(kind, id), ip, mac, ip.encode())


def fired(d: Deferred) -> object:
    """The result of an already-fired Deferred (raising its failure)."""
    box: list[object] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def failed(d: Deferred) -> Failure:
    """The failure of an already-failed Deferred."""
    box: list[object] = []
    d.addBoth(box.append)
    assert box and isinstance(box[0], Failure), box
    return box[0]


# --- which networks ------------------------------------------------------------------------


def test_router_queries_its_interface_networks_then_ports_on_them(table: TableBackend) -> None:
    """A router caller: router networks first (the three interface owners, in order, not
    the gateway network), then an IP lookup on exactly those networks."""
    backend = Recording(table)
    found = fired(InstanceResolver(backend).resolve(caller(ROUTER, "r-a", "10.1.0.7")))
    assert found == Instance("inst-red", "proj-red")
    assert backend.calls == [
        ("router_networks", ("r-a",), {}),
        ("ports_by_ip", (("blue", "red"), "10.1.0.7"), {}),
    ]


def test_gateway_network_is_not_searched(table: TableBackend) -> None:
    """An address on the router's gateway network is not found through the router."""
    found = fired(InstanceResolver(table).resolve(caller(ROUTER, "r-a", "203.0.113.50")))
    assert found == NotFound("no port", ("blue", "red"))


@pytest.mark.parametrize("kind", [NETWORK, OVN])
def test_network_id_given_means_no_router_query(table: TableBackend, kind: NamespaceKind) -> None:
    """A DHCP or OVN namespace searches its one network and never asks for router
    networks; a match gives (device_id, project_id)."""
    backend = Recording(table)
    found = fired(InstanceResolver(backend).resolve(caller(kind, "ovn-net", "192.168.1.1")))
    assert found == Instance("inst-ovn", "proj-ovn")
    assert backend.calls == [("ports_by_ip", (("ovn-net",), "192.168.1.1"), {})]


def test_router_without_networks_is_not_found_without_a_port_query(table: TableBackend) -> None:
    """A router with no interface ports: NotFound, and no port lookup at all."""
    for router in ("r-empty", "r-unknown"):
        backend = Recording(table)
        found = fired(InstanceResolver(backend).resolve(caller(ROUTER, router, "10.0.0.5")))
        assert found == NotFound("router has no interface ports")
        assert str(found) == "router has no interface ports"
        assert [method for method, _, _ in backend.calls] == ["router_networks"]


# --- which port ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "ip", "expected"),
    [
        (Namespace(ROUTER, "r-a"), "10.0.0.5", Instance("inst-blue", "proj-blue")),
        (Namespace(ROUTER, "r-a"), "fd00::5", Instance("inst-blue", "proj-blue")),
        (Namespace(NETWORK, "blue"), "10.0.0.5", Instance("inst-blue", "proj-blue")),
        (Namespace(ROUTER, "r-b"), "10.0.0.5", Instance("inst-green", "proj-green")),
        (Namespace(NETWORK, "green"), "10.0.0.5", Instance("inst-green", "proj-green")),
    ],
)
def test_match_gives_device_and_project(
    table: TableBackend, namespace: Namespace, ip: str, expected: Instance
) -> None:
    """One port with a device id: its (device_id, project_id). The same 10.0.0.5 on two
    networks behind two routers resolves to the right instance for each."""
    assert (
        fired(InstanceResolver(table).resolve(Identity(namespace, ip, None, ip.encode())))
        == expected
    )


def test_no_match_is_not_found(table: TableBackend) -> None:
    """No port with the address on the networks: NotFound("no port") naming the networks."""
    found = fired(InstanceResolver(table).resolve(caller(NETWORK, "blue", "10.0.0.77")))
    assert isinstance(found, NotFound)
    assert (found.reason, found.networks, found.port_ids) == ("no port", ("blue",), ())
    assert str(found) == "no port on network blue"


def test_two_ports_are_not_found(table: TableBackend) -> None:
    """Two ports with the address: NotFound("2 ports"), naming them; never a guess."""
    found = fired(InstanceResolver(table).resolve(caller(ROUTER, "r-a", "10.1.0.66")))
    assert found == NotFound("2 ports", ("blue", "red"), ("dup-1", "dup-2"))
    assert str(found) == "2 ports: dup-1, dup-2"


def test_port_without_device_id_is_not_found(table: TableBackend) -> None:
    """The one port found has an empty device id: NotFound (upstream tests `if instance_id`)."""
    found = fired(InstanceResolver(table).resolve(caller(ROUTER, "r-b", "10.0.0.9")))
    assert found == NotFound("port has no device_id", ("green",), ("reserved",))


def test_repeated_router_network_does_not_make_two_ports(table: TableBackend) -> None:
    """A router with two interface ports on one network searches it once: one port."""
    backend = Recording(table)
    found = fired(InstanceResolver(backend).resolve(caller(ROUTER, "r-c", "10.0.0.5")))
    assert found == Instance("inst-blue", "proj-blue")
    assert backend.calls[1] == ("ports_by_ip", (("blue", "blue"), "10.0.0.5"), {})


@pytest.mark.parametrize("kind_and_id", [(ROUTER, "r-a"), (NETWORK, "blue")])
def test_mac_lookup_is_used_for_link_local_callers(
    table: TableBackend, kind_and_id: tuple[NamespaceKind, str]
) -> None:
    """With a MAC set (IPv6 link-local caller) the port is looked up by MAC, not IP."""
    backend = Recording(table)
    who = caller(*kind_and_id, "fe80::f816:3eff:fe00:5", mac="fa:16:3e:00:00:05")
    assert fired(InstanceResolver(backend).resolve(who)) == Instance("inst-blue", "proj-blue")
    method, args, _ = backend.calls[-1]
    assert method == "ports_by_mac" and args[1] == "fa:16:3e:00:00:05"
    assert "ports_by_ip" not in [m for m, _, _ in backend.calls]


def test_mac_of_a_port_on_another_network_is_not_found(table: TableBackend) -> None:
    """The MAC lookup is confined to the namespace's networks too."""
    who = caller(NETWORK, "green", "fe80::f816:3eff:fe00:5", mac="fa:16:3e:00:00:05")
    assert fired(InstanceResolver(table).resolve(who)) == NotFound("no port", ("green",))


# --- errors --------------------------------------------------------------------------------


class Broken:
    """A backend whose every lookup fails with C{error} (or raises it at once)."""

    name = "neutron http://neutron:9696"

    def __init__(
        self, error: Exception, at_once: bool = False, networks: tuple[str, ...] | None = None
    ) -> None:
        self.error, self.at_once, self.networks = error, at_once, networks

    def _fail(self) -> Deferred:
        if self.at_once:
            raise self.error
        return fail(self.error)

    def router_networks(self, router_id: str) -> Deferred:
        return succeed(self.networks) if self.networks else self._fail()

    def ports_by_ip(self, networks: Any, ip: str) -> Deferred:
        return self._fail()

    def ports_by_mac(self, networks: Any, mac: str) -> Deferred:
        return self._fail()


@pytest.mark.parametrize("kind", [ROUTER, NETWORK])
def test_lookup_unavailable_passes_through_unchanged(kind: NamespaceKind) -> None:
    """A LookupUnavailable from the backend reaches the caller as it is."""
    error = LookupUnavailable("neutron answered 503")
    failure = failed(InstanceResolver(Broken(error)).resolve(caller(kind, "x", "10.0.0.5")))
    assert failure.value is error


@pytest.mark.parametrize("at_once", [False, True])
@pytest.mark.parametrize("networks", [None, ("n1",)])
def test_unexpected_errors_become_lookup_unavailable_naming_the_backend(
    at_once: bool, networks: tuple[str, ...] | None
) -> None:
    """Any other error (failed Deferred or raised at once, in either step) becomes
    LookupUnavailable naming the backend, with the original as its cause."""
    backend = Broken(KeyError("fixed_ips"), at_once=at_once, networks=networks)
    failure = failed(InstanceResolver(backend).resolve(caller(ROUTER, "r", "10.0.0.5")))
    assert failure.check(LookupUnavailable)
    assert str(failure.value) == (
        "port lookup in neutron http://neutron:9696 failed: KeyError: 'fixed_ips'"
    )
    assert isinstance(failure.value.__cause__, KeyError)


def test_backend_without_a_name_is_named_by_its_class() -> None:
    """Without a C{name} attribute the message names the backend's class."""

    class Nameless(Broken):
        name = None  # type: ignore[assignment]

    failure = failed(
        InstanceResolver(Nameless(ValueError("x"))).resolve(caller(NETWORK, "n", "10.0.0.5"))
    )
    assert str(failure.value) == "port lookup in Nameless failed: ValueError: x"


def test_cancelling_a_resolve_is_not_turned_into_unavailable() -> None:
    """Cancelling the lookup (the client went away) fails it with CancelledError."""

    class Hanging(Broken):
        def ports_by_ip(self, networks: Any, ip: str) -> Deferred:
            return Deferred()

    d = InstanceResolver(Hanging(ValueError())).resolve(caller(NETWORK, "n", "10.0.0.5"))
    d.cancel()
    assert failed(d).check(CancelledError)


# --- with the cache ------------------------------------------------------------------------


def test_cached_resolves_make_no_second_backend_call(table: TableBackend) -> None:
    """Behind the cache a repeated router lookup asks the backend once per step."""
    backend = Recording(table)
    resolver = InstanceResolver(CachingBackend(backend, Clock(), ttl=10))
    who = caller(ROUTER, "r-a", "10.0.0.5")
    for _ in range(3):
        assert fired(resolver.resolve(who)) == Instance("inst-blue", "proj-blue")
    assert [m for m, _, _ in backend.calls] == ["router_networks", "ports_by_ip"]
    named = InstanceResolver(CachingBackend(table, Clock(), ttl=10))
    assert named.backend_name == f"table {table.path}"


def test_fresh_reaches_the_cache_and_refreshes_both_steps(table: TableBackend) -> None:
    """resolve(fresh=True) bypasses the cached router networks and ports and keeps the new
    answers; the backend behind the cache gets no C{fresh} keyword."""
    backend = Recording(table)
    resolver = InstanceResolver(CachingBackend(backend, Clock(), ttl=10))
    who = caller(ROUTER, "r-a", "10.0.0.5")
    fired(resolver.resolve(who))
    assert fired(resolver.resolve(who, fresh=True)) == Instance("inst-blue", "proj-blue")
    assert [(m, kw) for m, _, kw in backend.calls] == [
        ("router_networks", {}),
        ("ports_by_ip", {}),
        ("router_networks", {}),
        ("ports_by_ip", {}),
    ]
    fired(resolver.resolve(who))
    assert len(backend.calls) == 4


def test_fresh_is_passed_only_to_backends_that_accept_it(table: TableBackend) -> None:
    """C{fresh=True} is passed as a keyword to a backend with C{accepts_fresh}; a plain
    backend is called as the protocol says, without it."""
    plain = Recording(table)
    fired(InstanceResolver(plain).resolve(caller(ROUTER, "r-a", "10.0.0.5"), fresh=True))
    assert [kw for _, _, kw in plain.calls] == [{}, {}]
    aware = Recording(table, accepts_fresh=True)
    fired(
        InstanceResolver(aware).resolve(
            caller(ROUTER, "r-a", "fe80::1", mac="fa:16:3e:00:00:05"), fresh=True
        )
    )
    assert [(m, kw) for m, _, kw in aware.calls] == [
        ("router_networks", {"fresh": True}),
        ("ports_by_mac", {"fresh": True}),
    ]
    aware.calls.clear()
    fired(InstanceResolver(aware).resolve(caller(NETWORK, "blue", "10.0.0.5"), fresh=True))
    assert aware.calls == [("ports_by_ip", (("blue",), "10.0.0.5"), {"fresh": True})]


def test_concurrent_resolves_share_backend_calls() -> None:
    """28 concurrent resolves of one caller through the cache: one router-networks call,
    one ports call, 28 answers."""

    class Pending:
        def __init__(self) -> None:
            self.calls: list[tuple[str, Deferred]] = []

        def router_networks(self, router_id: str) -> Deferred:
            d: Deferred = Deferred()
            self.calls.append(("router_networks", d))
            return d

        def ports_by_ip(self, networks: Any, ip: str) -> Deferred:
            d: Deferred = Deferred()
            self.calls.append(("ports_by_ip", d))
            return d

    backend = Pending()
    resolver = InstanceResolver(CachingBackend(backend, Clock(), ttl=10))
    results: list[object] = []
    for _ in range(28):
        resolver.resolve(caller(ROUTER, "r", "10.0.0.5")).addBoth(results.append)
    assert [m for m, _ in backend.calls] == ["router_networks"]
    backend.calls[0][1].callback(("n1",))
    assert [m for m, _ in backend.calls] == ["router_networks", "ports_by_ip"]
    assert results == []
    backend.calls[1][1].callback([Port("p", "n1", "fa:16:3e:00:00:01", ("10.0.0.5",), "i", "pr")])
    assert results == [Instance("i", "pr")] * 28


# --- answers now (no Deferred) ---------------------------------------------------------------

NOW_CALLERS = [
    caller(ROUTER, "r-a", "10.0.0.5"),
    caller(ROUTER, "r-a", "fd00::5"),
    caller(ROUTER, "r-b", "10.0.0.5"),
    caller(NETWORK, "green", "10.0.0.5"),
    caller(ROUTER, "r-a", "10.1.0.66"),
    caller(ROUTER, "r-b", "10.0.0.9"),
    caller(ROUTER, "r-empty", "10.0.0.5"),
    caller(ROUTER, "r-unknown", "10.0.0.5"),
    caller(NETWORK, "blue", "10.0.0.77"),
    caller(OVN, "ovn-net", "192.168.1.1"),
    caller(ROUTER, "r-a", "fe80::f816:3eff:fe00:5", mac="fa:16:3e:00:00:05"),
]


@pytest.mark.parametrize("who", NOW_CALLERS, ids=lambda c: f"{c.namespace.name}-{c.ip}")
@pytest.mark.parametrize("cache", [None, "off", "on"])
def test_answer_now_is_the_answer_resolve_gives(
    table: TableBackend, who: Identity, cache: str | None
) -> None:
    """For a backend with the answers in memory (the table), resolve_now gives what
    resolve gives, directly or through the cache (kept answers or not)."""
    backend: Any = (
        table if cache is None else CachingBackend(table, Clock(), ttl=60, enabled=cache == "on")
    )
    resolver = InstanceResolver(backend)
    assert resolver.resolve_now(who) == fired(resolver.resolve(who))
    assert resolver.resolve_now(who) == fired(resolver.resolve(who))


def test_backend_without_answers_now_is_asked_through_deferreds(table: TableBackend) -> None:
    """A backend with only the Deferred methods (a network backend): resolve_now says
    None, directly and through the cache until an answer is kept, which it then gives."""
    who = caller(ROUTER, "r-a", "10.0.0.5")
    assert InstanceResolver(Recording(table)).resolve_now(who) is None
    cache = CachingBackend(Recording(table), Clock(), ttl=60)
    resolver = InstanceResolver(cache)
    assert resolver.resolve_now(who) is None
    assert fired(resolver.resolve(who)) == Instance("inst-blue", "proj-blue")
    hits = cache.hits
    assert resolver.resolve_now(who) == Instance("inst-blue", "proj-blue")
    assert cache.hits == hits + 2  # router networks, then the ports


def test_answer_now_waits_for_a_call_in_flight() -> None:
    """While a backend call for the key is in flight, resolve_now says None (the request
    joins the call through resolve) instead of asking the in-memory path again."""
    pending: Deferred = Deferred()

    class Both:
        def router_networks(self, router_id):
            return pending

        def router_networks_now(self, router_id):
            raise AssertionError("asked while a call is in flight")

        def ports_by_ip(self, networks, ip):
            return succeed([])

        def ports_by_ip_now(self, networks, ip):
            return []

    cache = CachingBackend(Both(), Clock(), ttl=60)
    resolver = InstanceResolver(cache)
    who = caller(ROUTER, "r-a", "10.0.0.5")
    d = resolver.resolve(who)
    assert resolver.resolve_now(who) is None
    pending.callback(("blue",))
    assert fired(d) == NotFound("no port", ("blue",))


def test_answer_now_counts_misses_and_keeps_them(table: TableBackend) -> None:
    """Answers got now are counted as misses (a backend call) and kept when enabled."""
    cache = CachingBackend(table, Clock(), ttl=60, enabled=True)
    resolver = InstanceResolver(cache)
    who = caller(ROUTER, "r-a", "10.0.0.5")
    resolver.resolve_now(who)
    assert (cache.misses, cache.hits, len(cache)) == (2, 0, 2)
    resolver.resolve_now(who)
    assert (cache.misses, cache.hits) == (2, 2)


def test_answer_now_errors_fall_back_to_resolve() -> None:
    """A backend whose in-memory path raises: resolve_now says None, never raises."""

    class Broken:
        def router_networks_now(self, router_id):
            raise RuntimeError("bug")

    assert InstanceResolver(Broken()).resolve_now(caller(ROUTER, "r", "10.0.0.5")) is None
    cache = CachingBackend(Broken(), Clock(), ttl=60)
    assert InstanceResolver(cache).resolve_now(caller(ROUTER, "r", "10.0.0.5")) is None
