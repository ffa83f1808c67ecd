"""metaproxy.resolve.rpc and metaproxy.neutron.bus: upstream's filters, Neutron's port and
context shapes, and the backend's threads, timeouts and errors (a fake bus, a Clock)."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

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
    call_bound,
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


class Undeliverable(Exception):
    """What RabbitMQ's mandatory flag makes of a call no queue takes."""


class FakeBus:
    """A blocking get_ports over a list of Neutron port dicts, recording the filters and
    each call's timeout."""

    timeout_errors = (TimeoutError,)
    no_consumer_errors = (Undeliverable,)

    def __init__(self, ports: list[dict[str, Any]]) -> None:
        self.ports = ports
        self.filters: list[dict[str, Any]] = []
        self.timeouts: list[float] = []
        self.error: Exception | None = None

    def get_ports(self, filters: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        self.filters.append(filters)
        self.timeouts.append(timeout)
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


class Threads:
    """A run_in_thread whose threads run only when the test says (each call stays
    pending until then, as a call waiting for its answer)."""

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[..., Any], Deferred[Any]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((lambda: f(*args), d))
        return d

    def run(self, index: int = 0) -> None:
        """Let the thread of the C{index}th pending call run to its end."""
        f, d = self.pending.pop(index)
        try:
            result = f()
        except Exception:
            d.errback(Failure())
        else:
            d.callback(result)


def outcome(d: Deferred[Any]) -> list[Any]:
    box: list[Any] = []
    d.addBoth(box.append)
    return box


def rpc_log(events: list[dict[str, Any]]) -> list[str]:
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in events if e.get("log_namespace") == "metaproxy.resolve.rpc"]


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


@pytest.mark.parametrize(
    ("budget", "first"), [(28, 3.5), (60, 5), (8, 1), (2, 1), (0.5, 0.5), (16, 2)]
)
def test_a_call_waits_an_eighth_of_the_budget_between_1_and_5_s(budget, first) -> None:
    assert call_bound(budget) == first
    assert RpcBackend(Clock(), FakeBus([]), timeout=budget, run_in_thread=sync).join_within == first


def test_a_lost_call_is_sent_again_after_its_bound_not_after_the_whole_budget() -> None:
    """The issue: a call published while neutron-server had not subscribed again was
    waited for 28 s. Now the first call waits 3.5 s, the next twice as long."""
    clock, threads, bus = Clock(), Threads(), FakeBus(PORTS)
    backend = RpcBackend(clock, bus, timeout=28, limit="nova_timeout = 28", run_in_thread=threads)
    backend.start()
    d = outcome(backend.ports_by_ip(["net-a"], "10.0.0.5"))
    clock.advance(3.5)
    bus.error = TimeoutError("Timed out waiting for a reply")  # oslo.messaging's own timeout
    threads.run()
    assert d == [] and len(threads.pending) == 1  # sent again at once
    bus.error = None
    clock.advance(0.5)
    threads.run()
    assert [p.id for p in d[0]] == ["pa"]
    assert bus.timeouts == [pytest.approx(3.5, abs=0.05), pytest.approx(7, abs=0.05)]
    assert clock.seconds() == 4.0 and backend.calls == 2 and backend.lookups == 1


def test_a_lookup_whose_every_call_is_lost_fails_when_its_budget_is_spent() -> None:
    clock, threads, bus = Clock(), Threads(), FakeBus(PORTS)
    backend = RpcBackend(clock, bus, timeout=28, limit="nova_timeout = 28", run_in_thread=threads)
    backend.start()
    d = outcome(backend.router_networks("r1"))
    bus.error = TimeoutError("Timed out waiting for a reply")
    while threads.pending:
        # the thread sends at once, waits its call's timeout, then oslo.messaging raises
        f, thread = threads.pending.pop(0)
        with pytest.raises(TimeoutError) as raised:
            f()
        clock.advance(round(bus.timeouts[-1], 2))
        thread.errback(Failure(raised.value))
    failure = d[0]
    assert isinstance(failure, Failure) and failure.check(LookupUnavailable)
    assert [round(t, 1) for t in bus.timeouts] == [3.5, 7, 14, 3.5]
    assert clock.seconds() == pytest.approx(28, abs=0.1)
    message = str(failure.value)
    assert "no answer from neutron-server" in message
    assert "within 28 s (nova_timeout = 28; 4 call(s)" in message
    assert "rpc_response_timeout" not in message  # the limit that applied is named
    assert backend.given_up == 0  # each thread came back by itself
    assert not backend.ready() and backend.failures == 1


def test_a_call_no_queue_takes_is_sent_again_shortly_and_answered_once_one_does() -> None:
    """RabbitMQ's mandatory flag: neutron-server not subscribed yet. The next call goes
    a quarter of a second later, not 28 s."""
    clock, threads, bus = Clock(), Threads(), FakeBus(PORTS)
    backend = RpcBackend(clock, bus, timeout=28, run_in_thread=threads)
    backend.start()
    d = outcome(backend.ports_by_ip(["net-a"], "10.0.0.5"))
    bus.error = Undeliverable("no queue bound")
    threads.run()
    assert d == [] and threads.pending == []
    clock.advance(0.24)
    assert threads.pending == []
    clock.advance(0.01)
    bus.error = None
    threads.run()
    assert [p.id for p in d[0]] == ["pa"]
    assert len(bus.filters) == 2 and clock.seconds() == 0.25


def test_a_topic_nobody_consumes_for_the_whole_budget_says_so() -> None:
    clock, bus = Clock(), FakeBus(PORTS)
    bus.error = Undeliverable("no queue bound")
    backend = RpcBackend(
        clock, bus, timeout=2, limit="rpc_response_timeout = 2", run_in_thread=sync
    )
    backend.start()
    d = outcome(backend.router_networks("r1"))
    clock.pump([0.25] * 8)
    failure = d[0]
    assert isinstance(failure, Failure) and failure.check(LookupUnavailable)
    assert "nothing consumes the calls to neutron-server" in str(failure.value)
    assert "within 2 s (rpc_response_timeout = 2" in str(failure.value)
    assert len(bus.filters) == 8  # one every 0.25 s while time was left
    assert clock.seconds() == 2


def test_when_the_bus_is_back_calls_sent_before_the_outage_are_sent_again_at_once() -> None:
    """Calls sent before the broker went down went with it: they are given up on when it
    is back, their turns freed at once for the lookups waiting (one turn here)."""
    clock, threads, bus = Clock(), Threads(), FakeBus(PORTS)
    backend = RpcBackend(clock, bus, timeout=28, threads=1, run_in_thread=threads)
    backend.start()
    a = outcome(backend.ports_by_ip(["net-a"], "10.0.0.5"))
    clock.advance(1)  # the broker goes down
    b = outcome(backend.router_networks("r1"))  # waits for the only turn
    assert len(threads.pending) == 1
    clock.advance(1)
    backend.bus_back(lost_since=0.5)
    assert backend.given_up == 1
    assert len(threads.pending) == 2  # b's call has the turn; a's old thread goes on
    threads.run(1)
    assert b == [("net-a",)]
    assert len(threads.pending) == 2  # a's new call
    threads.run(1)
    assert [p.id for p in a[0]] == ["pa"]
    assert clock.seconds() == 2  # not 3.5 s after the first call
    threads.run(0)  # the old thread ends at last: nothing changes
    assert backend.given_up == 1 and len(a) == 1


def test_a_call_sent_after_the_outage_began_is_not_given_up() -> None:
    clock, threads, bus = Clock(), Threads(), FakeBus(PORTS)
    backend = RpcBackend(clock, bus, timeout=28, run_in_thread=threads)
    backend.start()
    clock.advance(1)
    d = outcome(backend.router_networks("r1"))
    backend.bus_back(lost_since=0.5)
    assert backend.given_up == 0 and len(threads.pending) == 1
    threads.run()
    assert d == [("net-a",)]


def test_bus_back_is_heard_from_the_bus() -> None:
    listeners: list[Callable[[float], None]] = []

    class Bus(FakeBus):
        def on_reconnect(self, listener: Callable[[float], None]) -> None:
            listeners.append(listener)

    backend = RpcBackend(Clock(), Bus(PORTS), timeout=5, run_in_thread=sync)
    backend.start()
    backend.start()
    assert listeners == [backend.bus_back]


def test_a_thread_stuck_past_its_call_does_not_keep_its_turn() -> None:
    """A thread that does not come back (stuck reconnecting) is given up on one second
    after its call's time; the next lookup gets its turn."""
    clock, threads, bus = Clock(), Threads(), FakeBus(PORTS)
    backend = RpcBackend(clock, bus, timeout=28, threads=1, run_in_thread=threads)
    backend.start()
    a = outcome(backend.ports_by_ip(["net-a"], "10.0.0.5"))
    b = outcome(backend.router_networks("r1"))
    assert len(threads.pending) == 1
    clock.advance(4.4)
    assert len(threads.pending) == 1
    clock.advance(0.1)  # 3.5 s + 1 s of grace
    assert backend.given_up == 1 and len(threads.pending) == 2
    threads.run(1)
    assert b == [("net-a",)]
    threads.run(1)  # a's second call
    assert [p.id for p in a[0]] == ["pa"]
    threads.run(0)  # the stuck thread answers at last: a late answer changes nothing
    assert len(a) == 1 and len(b) == 1 and backend.given_up == 1 and threads.pending == []


def test_a_call_given_up_before_its_thread_started_is_not_sent() -> None:
    clock, threads, bus = Clock(), Threads(), FakeBus(PORTS)
    backend = RpcBackend(clock, bus, timeout=28, run_in_thread=threads)
    backend.start()
    d = outcome(backend.ports_by_ip(["net-a"], "10.0.0.5"))
    clock.advance(4.5)  # no thread ran it (the pool was full)
    assert backend.given_up == 1
    with pytest.raises(Exception, match="dropped before sending"):
        threads.pending[0][0]()
    assert bus.filters == []
    threads.run(1)
    assert [p.id for p in d[0]] == ["pa"]


def test_a_lookup_waiting_for_a_turn_when_its_time_is_up_is_not_sent() -> None:
    clock, threads, bus = Clock(), Threads(), FakeBus(PORTS)
    backend = RpcBackend(
        clock, bus, timeout=1.5, threads=1, limit="rpc_response_timeout = 1", run_in_thread=threads
    )
    backend.start()
    outcome(backend.router_networks("r1"))
    waiting = outcome(backend.router_networks("r2"))
    clock.advance(1.5)
    failure = waiting[0]
    assert isinstance(failure, Failure) and failure.check(LookupUnavailable)
    assert "no call to neutron-server" in str(failure.value)
    assert "within 1.5 s (rpc_response_timeout = 1): all 1 lookup threads" in str(failure.value)
    assert len(threads.pending) == 1  # never sent


def test_remote_timeout_and_errors_are_unavailable_naming_what_failed() -> None:
    bus = FakeBus(PORTS)
    clock = Clock()
    backend = RpcBackend(clock, bus, timeout=5, run_in_thread=sync)
    backend.start()
    bus.error = ConnectionRefusedError("Connection refused")
    errors: list[str] = []
    backend.router_networks("r1").addErrback(
        lambda f: f.check(LookupUnavailable) and errors.append(str(f.value))
    )
    assert "ConnectionRefusedError: Connection refused" in errors[0]
    assert len(bus.filters) == 1  # a bus that cannot be reached fails the lookup at once
    assert backend.failures == 1 and not backend.ready()
    bus.error = None
    clock.advance(1)
    assert backend.router_networks("r1").result == ("net-a",)
    assert backend.ready()


def test_failing_and_answered_again_alternate_truthfully() -> None:
    """The issue: "failing" came back after "answered again" when a call from before the
    recovery timed out. A lookup begun before the last answer says nothing now."""
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        clock, threads, bus = Clock(), Threads(), FakeBus(PORTS)
        backend = RpcBackend(clock, bus, timeout=28, run_in_thread=threads)
        backend.start()
        stale = outcome(backend.router_networks("r1"))  # sent before the outage
        clock.advance(1)
        bus.error = ConnectionRefusedError("Connection refused")
        broken = outcome(backend.router_networks("r2"))
        threads.run(1)
        assert isinstance(broken[0], Failure)
        clock.advance(1)
        bus.error = None
        answered = outcome(backend.router_networks("r1"))
        threads.run(1)
        assert answered == [("net-a",)]
        clock.advance(1)
        bus.error = RuntimeError("stale call's error")
        threads.run(0)  # the stale lookup fails after the answer
        assert isinstance(stale[0], Failure)
        clock.advance(1)
        bus.error = ConnectionRefusedError("Connection refused")
        outcome(backend.router_networks("r2"))
        threads.run(0)
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = rpc_log(events)
    assert [line.split(" by ")[0].split(":")[0] for line in lines] == [
        "RPC lookups failing",
        "RPC lookups answered again",
        "RPC lookups failing",
    ]
    assert backend.failures == 3


def test_an_answer_that_is_not_ports_is_unavailable() -> None:
    class Odd:
        def get_ports(self, filters: Any, timeout: float) -> Any:
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
        serializer=oslo_messaging.NoOpSerializer(),
    )
    assert server.executor_type == "threading"  # the default without eventlet's patching
    server.start()
    try:
        assert rpc.get_ports({"device_id": ["r1"]}) == [{"id": "p1"}]
    finally:
        server.stop()
        server.wait()
        rpc.close()
    assert seen == [{"device_id": ["r1"]}]


def test_each_lookup_call_has_its_own_timeout() -> None:
    """No neutron-server consumes the in-process bus: a call given 0.3 s times out in
    0.3 s, not in the transport's lookup_timeout (10 s)."""
    import time

    rpc = NeutronRpc(
        default_settings(transport_url="fake://"), lookup_timeout=10, report_timeout=10
    )
    try:
        started = time.monotonic()
        with pytest.raises(rpc.timeout_errors):
            rpc.get_ports({"device_id": ["r1"]}, timeout=0.3)
        assert time.monotonic() - started < 3
    finally:
        rpc.close()


def test_the_transport_reconnects_every_second_unless_the_operator_says_otherwise(
    tmp_path,
) -> None:
    url = "rabbit://u:p@127.0.0.1:1/"
    rpc = NeutronRpc(default_settings(transport_url=url), lookup_timeout=5, report_timeout=5)
    assert rpc.transport.conf.oslo_messaging_rabbit.rabbit_interval_max == 1
    assert rpc.transport.conf.oslo_messaging_rabbit.rabbit_retry_interval == 1
    conf_file = tmp_path / "neutron.conf"
    conf_file.write_text("[oslo_messaging_rabbit]\nrabbit_interval_max = 7\n")
    settings = default_settings(transport_url=url, config_files=(str(conf_file),))
    rpc = NeutronRpc(settings, lookup_timeout=5, report_timeout=5)
    assert rpc.transport.conf.oslo_messaging_rabbit.rabbit_interval_max == 7


def test_lookups_know_undelivered_calls_from_timeouts() -> None:
    import oslo_messaging

    rpc = NeutronRpc(
        default_settings(transport_url="fake://"), lookup_timeout=10, report_timeout=10
    )
    assert rpc.no_consumer_errors == (oslo_messaging.MessageUndeliverable,)
    assert rpc.timeout_errors == (oslo_messaging.MessagingTimeout,)


def test_importing_oslo_messaging_prints_no_warning() -> None:
    """The issue: start-up printed an EventletDeprecationWarning."""
    import subprocess
    import sys

    code = "from metaproxy.neutron.bus import import_messaging; import_messaging()"
    done = subprocess.run(
        [sys.executable, "-W", "error::Warning", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_the_lookup_backend_names_the_limit_that_applies() -> None:
    url = "rabbit://u:p@127.0.0.1:1/"
    backend = backends.build_backend(Clock(), default_settings(transport_url=url))
    assert "28 s per lookup (nova_timeout = 28)" in backends.describe_backend(backend)
    backend = backends.build_backend(
        Clock(), default_settings(transport_url=url, rpc_response_timeout=5)
    )
    text = backends.describe_backend(backend)
    assert "5 s per lookup (rpc_response_timeout = 5), each call 1 s at first" in text
