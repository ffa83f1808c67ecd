"""metaproxy.chassis.serving: the caller is the TCP peer; guest headers are dropped and
counted; one set of sockets per provisioned network, closed when it goes."""

import socket

from twisted.internet.defer import ensureDeferred, fail, succeed

from metaproxy.caller import identify
from metaproxy.chassis.plan import NetworkPlan
from metaproxy.chassis.serving import DirectCounters, NamespaceListeners, peer_request
from metaproxy.http.request import RequestParser
from metaproxy.namespace import Namespace, NamespaceKind

OVN = Namespace(NamespaceKind.OVN, "net-1")


def parse(*headers):
    raw = b"GET / HTTP/1.1\r\nHost: 169.254.169.254\r\n"
    raw += b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    return RequestParser().feed(raw)


def test_the_peer_is_the_caller_and_guest_headers_are_ignored_and_counted() -> None:
    counters = DirectCounters()
    plain = peer_request(parse(), "10.0.0.5", counters)
    assert identify(plain, OVN).ip == "10.0.0.5"
    assert counters == DirectCounters(0, 0)

    spoofed = peer_request(
        parse(b"X-Forwarded-For: 10.0.0.99", b"X-OVN-Network-ID: other-net"), "10.0.0.5", counters
    )
    identity = identify(spoofed, OVN)
    assert (identity.ip, identity.namespace, identity.forwarded_for) == (
        "10.0.0.5",
        OVN,
        b"10.0.0.5",
    )
    assert counters == DirectCounters(guest_forwarded_for=1, guest_namespace_header=1)


def test_an_ipv6_link_local_peer_is_looked_up_by_its_mac() -> None:
    request = peer_request(parse(), "fe80::f816:3eff:fe00:11%tapabc1", DirectCounters())
    identity = identify(request, OVN)
    assert identity.mac == "fa:16:3e:00:00:11"


class FakePort:
    def __init__(self, fd, family, factory):
        self.fd, self.family, self.factory = fd, family, factory
        self.stopped = False

    def stopListening(self):
        self.stopped = True
        return succeed(None)


class FakeReactor:
    def __init__(self):
        self.ports = []

    def adoptStreamPort(self, fd, family, factory):
        port = FakePort(fd, family, factory)
        self.ports.append(port)
        return port


def plan(v6=False):
    addresses = {"10.0.0.2/24", "169.254.169.254/32"}
    if v6:
        addresses |= {"fe80::a9fe:a9fe/128", "fe80::f816:3eff:fe00:2/64"}
    return NetworkPlan("net-1", "md", "fa:16:3e:00:00:02", 0, frozenset(addresses))


def harness(fail_with=None):
    reactor, opened, factories = FakeReactor(), [], []

    def opener(reactor_, namespace, address, port, backlog, interface):
        if fail_with:
            return fail(OSError(fail_with))
        opened.append((namespace, address, port, interface))
        return succeed(socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET))

    def factory_for(namespace, from_peer):
        factories.append((namespace, from_peer))
        return object()

    listeners = NamespaceListeners(reactor, factory_for, port=8080, opener=opener)
    return listeners, reactor, opened, factories


def run(coroutine):
    results = []
    ensureDeferred(coroutine).addBoth(results.append)
    return results[0] if results else None


def test_a_provisioned_network_is_served_on_v4_and_v6_when_it_has_ipv6() -> None:
    listeners, reactor, opened, factories = harness()
    run(listeners.provisioned(plan(v6=True)))
    assert opened == [
        ("ovnmeta-net-1", "169.254.169.254", 8080, ""),
        ("ovnmeta-net-1", "fe80::a9fe:a9fe", 8080, "tapnet-11"),
    ]
    assert [f[0] for f in factories] == [OVN]
    assert [p.family for p in reactor.ports] == [socket.AF_INET, socket.AF_INET6]

    run(listeners.provisioned(plan(v6=True)))  # unchanged: nothing reopened
    assert len(opened) == 2

    run(listeners.provisioned(plan(v6=False)))  # IPv6 gone: v4 only, reopened
    assert [p.stopped for p in reactor.ports[:2]] == [True, True]
    assert listeners.listening("net-1") == (("169.254.169.254", ""),)


def test_removed_closes_the_sockets() -> None:
    listeners, reactor, opened, factories = harness()
    run(listeners.provisioned(plan()))
    listeners.removed("net-1")
    assert reactor.ports[0].stopped and listeners.listening("net-1") == ()


def test_a_socket_that_cannot_be_opened_fails_the_provisioning_with_the_reason() -> None:
    listeners, reactor, opened, factories = harness(fail_with="Operation not permitted")
    result = run(listeners.provisioned(plan()))
    assert result is not None and result.check(OSError)
    assert listeners.listening("net-1") == ()
    result.trap(OSError)
