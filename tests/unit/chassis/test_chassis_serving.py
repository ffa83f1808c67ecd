"""metaproxy.chassis.serving: one TCP listener on the service's listeners per
provisioned network, on 169.254.169.254 and (with IPv6) fe80::a9fe:a9fe on the
namespace's veth end; closed when the network goes. (That the caller is the TCP peer
and a guest's identity headers are ignored and counted is the shared listener's,
tested in tests/unit/http/test_server.py.)"""

from twisted.internet.defer import ensureDeferred, fail, succeed

from metaproxy.chassis.plan import NetworkPlan
from metaproxy.chassis.serving import NamespaceServing
from metaproxy.http.listeners import ListenError
from metaproxy.http.netns import ListenAddress
from metaproxy.namespace import Namespace, NamespaceKind

OVN = Namespace(NamespaceKind.OVN, "net-1")


class FakeListeners:
    """Listeners.add_tcp / remove_tcp / tcp_addresses, recorded."""

    def __init__(self, fail_with=None):
        self.fail_with = fail_with
        self.calls = []
        self.tcp = {}

    def add_tcp(self, namespace, addresses):
        self.calls.append(("add", namespace, tuple(addresses)))
        if self.fail_with:
            return fail(ListenError(self.fail_with))
        self.tcp[namespace] = tuple(addresses)
        return succeed(None)

    def remove_tcp(self, namespace):
        self.calls.append(("remove", namespace))
        self.tcp.pop(namespace, None)
        return succeed(None)

    def tcp_addresses(self, namespace):
        return self.tcp.get(namespace, ())


def plan(v6=False):
    addresses = {"10.0.0.2/24", "169.254.169.254/32"}
    if v6:
        addresses |= {"fe80::a9fe:a9fe/128", "fe80::f816:3eff:fe00:2/64"}
    return NetworkPlan("net-1", "md", "fa:16:3e:00:00:02", 0, frozenset(addresses))


def run(coroutine):
    results = []
    ensureDeferred(coroutine).addBoth(results.append)
    return results[0] if results else None


V4 = ListenAddress("169.254.169.254", 8080)
V6 = ListenAddress("fe80::a9fe:a9fe", 8080, "tapnet-11")


def test_a_provisioned_network_is_served_on_v4_and_v6_when_it_has_ipv6() -> None:
    listeners = FakeListeners()
    serving = NamespaceServing(listeners, port=8080)
    run(serving.provisioned(plan(v6=True)))
    assert listeners.calls == [("add", OVN, (V4, V6))]
    assert serving.listening("net-1") == (V4, V6)

    run(serving.provisioned(plan(v6=True)))  # unchanged: nothing reopened
    assert len(listeners.calls) == 1

    run(serving.provisioned(plan(v6=False)))  # IPv6 gone: v4 only, reopened
    assert listeners.calls[1:] == [("remove", OVN), ("add", OVN, (V4,))]
    assert serving.listening("net-1") == (V4,)


def test_the_default_port_is_80() -> None:
    listeners = FakeListeners()
    run(NamespaceServing(listeners).provisioned(plan()))
    assert listeners.calls == [("add", OVN, (ListenAddress("169.254.169.254", 80),))]


def test_removed_closes_the_listener() -> None:
    listeners = FakeListeners()
    serving = NamespaceServing(listeners, port=8080)
    run(serving.provisioned(plan()))
    run(serving.removed("net-1"))
    assert listeners.calls[-1] == ("remove", OVN)
    assert serving.listening("net-1") == () and serving.networks == frozenset()


def test_stop_closes_only_the_listeners_it_opened() -> None:
    listeners = FakeListeners()
    listeners.tcp[Namespace(NamespaceKind.OVN, "someone-elses")] = (V4,)
    serving = NamespaceServing(listeners, port=8080)
    run(serving.provisioned(plan()))
    run(serving.stop())
    assert listeners.calls[-1] == ("remove", OVN)
    assert list(listeners.tcp) == [Namespace(NamespaceKind.OVN, "someone-elses")]


def test_a_listener_that_cannot_be_opened_fails_the_provisioning_with_the_reason() -> None:
    listeners = FakeListeners(fail_with="cannot enter network namespace ovnmeta-net-1")
    serving = NamespaceServing(listeners, port=8080)
    result = run(serving.provisioned(plan()))
    assert result is not None and result.check(ListenError)
    assert "ovnmeta-net-1" in str(result.value)
    assert serving.listening("net-1") == () and serving.networks == frozenset()
    result.trap(ListenError)


class RecordingLeftovers:
    def __init__(self, calls):
        self.calls = calls

    async def clear(self, network_id):
        self.calls.append(("clear", network_id))
        return False


def test_leftovers_are_cleared_before_a_namespace_is_first_listened_in_only() -> None:
    listeners = FakeListeners()
    serving = NamespaceServing(listeners, port=8080, leftovers=RecordingLeftovers(listeners.calls))
    run(serving.provisioned(plan()))
    assert listeners.calls == [("clear", "net-1"), ("add", OVN, (V4,))]
    run(serving.provisioned(plan(v6=True)))  # addresses changed: our own listener moves
    assert listeners.calls[2:] == [("remove", OVN), ("add", OVN, (V4, V6))]


def test_an_address_taken_is_said_counted_and_raised_for_the_retry() -> None:
    from twisted.logger import globalLogPublisher

    from metaproxy.http.sockets import AddressInUse

    class Taken(FakeListeners):
        def add_tcp(self, namespace, addresses):
            self.calls.append(("add", namespace, tuple(addresses)))
            return fail(AddressInUse("cannot listen on 169.254.169.254:8080 in ovnmeta-net-1"))

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        serving = NamespaceServing(Taken(), port=8080)
        result = run(serving.provisioned(plan()))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert result.check(AddressInUse)
    assert serving.address_in_use == 1 and serving.networks == frozenset()
    [line] = [e for e in events if "Another process listens" in e.get("log_format", "")]
    assert line["namespace"] == "ovnmeta-net-1"
    assert "ss -ltnp" in line["log_format"]
