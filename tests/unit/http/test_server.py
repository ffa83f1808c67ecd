"""The protocol shell: bytes from a StringTransport in, bytes of the answer out."""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from metaproxy.http.server import Limits, MetadataFactory, RequestTimeouts
from metaproxy.namespace import Namespace, NamespaceKind

GET = b"GET /openstack HTTP/1.1\r\nX-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: r1\r\n\r\n"


class RecordingPipeline:
    def __init__(self, answer=None):
        self.calls = []
        self.answer = answer

    def handle(self, request, namespace):
        self.calls.append((request, namespace))
        if self.answer is None:
            self.pending = Deferred(lambda d: self.cancelled.append(True))
            self.cancelled = []
            return self.pending
        return succeed(self.answer)


def connect(pipeline, namespace=None, limits=Limits()):
    clock = Clock()
    factory = MetadataFactory(pipeline, namespace, limits, clock)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport, clock


def test_request_answered_and_closed():
    """A whole request goes to the pipeline once; its bytes are written, then closed."""
    pipeline = RecordingPipeline(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    protocol, transport, _ = connect(pipeline)
    protocol.dataReceived(GET[:10])
    assert pipeline.calls == []
    protocol.dataReceived(GET[10:])
    assert len(pipeline.calls) == 1 and pipeline.calls[0][1] is None
    assert transport.value() == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert transport.disconnecting


def test_namespace_socket_passes_its_namespace():
    """A per-namespace listener hands the pipeline its own namespace."""
    own = Namespace(NamespaceKind.NETWORK, "n1")
    pipeline = RecordingPipeline(b"x")
    protocol, _, _ = connect(pipeline, own)
    protocol.dataReceived(GET)
    assert pipeline.calls[0][1] == own


def test_malformed_request_gets_400_and_log(no_logged_errors):
    """A malformed request is answered 400 without reaching the pipeline."""
    pipeline = RecordingPipeline(b"x")
    protocol, transport, _ = connect(pipeline)
    protocol.dataReceived(b"GARBAGE\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert transport.disconnecting and pipeline.calls == []


def test_oversized_headers_get_431():
    """Headers over the limit are 431."""
    protocol, transport, _ = connect(RecordingPipeline(b"x"), limits=Limits(max_header_bytes=1024))
    protocol.dataReceived(b"GET / HTTP/1.1\r\nX: " + b"a" * 2000)
    assert transport.value().startswith(b"HTTP/1.1 431 ")


def test_slow_request_gets_408():
    """A request not complete within request_timeout is answered 408."""
    protocol, transport, clock = connect(RecordingPipeline(b"x"), limits=Limits(request_timeout=5))
    protocol.dataReceived(GET[:20])
    clock.advance(4.9)
    assert transport.value() == b""
    clock.advance(0.2)
    assert transport.value().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert transport.disconnecting


def test_idle_connection_closed_without_answer():
    """A connection that sends nothing is closed at the timeout, with nothing written."""
    protocol, transport, clock = connect(RecordingPipeline(b"x"), limits=Limits(request_timeout=5))
    clock.advance(6)
    assert transport.value() == b"" and transport.disconnecting


def test_timer_cancelled_once_request_complete():
    """A complete request is not answered 408 while the pipeline works on it."""
    pipeline = RecordingPipeline()
    protocol, transport, clock = connect(pipeline, limits=Limits(request_timeout=5))
    protocol.dataReceived(GET)
    clock.advance(60)
    assert transport.value() == b""
    pipeline.pending.callback(b"late answer")
    assert transport.value() == b"late answer"
    assert clock.getDelayedCalls() == []


def test_client_gone_cancels_pipeline():
    """When haproxy drops the connection, the pending work is cancelled, nothing logged."""
    pipeline = RecordingPipeline()
    protocol, transport, _ = connect(pipeline)
    protocol.dataReceived(GET)
    protocol.connectionLost(None)
    assert pipeline.cancelled == [True]
    assert transport.value() == b""


def test_bytes_after_request_ignored():
    """One request per connection: a second request on it is not handled."""
    pipeline = RecordingPipeline()
    protocol, _, _ = connect(pipeline)
    protocol.dataReceived(GET + GET)
    protocol.dataReceived(GET)
    assert len(pipeline.calls) == 1


def test_one_timer_for_many_waiting_connections():
    """Connections waiting for their request share one timer; each is answered 408 at
    its own deadline, never before; the timer goes once nobody waits."""
    clock = Clock()
    factory = MetadataFactory(RecordingPipeline(b"x"), None, Limits(request_timeout=5), clock)
    connections = []
    for i in range(20):
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(GET[:10])
        connections.append(transport)
        clock.advance(0.1)  # connection i arrives at 0.1 * i, its deadline is 5 + 0.1 * i
    assert len(clock.getDelayedCalls()) == 1
    answered = lambda: [t.value().startswith(b"HTTP/1.1 408 ") for t in connections]  # noqa
    clock.advance(5 - 2 - 0.01)  # just before the first deadline
    assert not any(answered())
    for i in range(20):
        clock.advance(0.02)  # just past connection i's deadline
        assert answered() == [j <= i for j in range(20)]
        clock.advance(0.08)
    assert clock.getDelayedCalls() == []


def test_complete_or_lost_connections_are_not_timed_out():
    """Among connections waiting together, those whose request completed or that went
    away are not timed out; the others are."""
    clock = Clock()
    pipeline = RecordingPipeline()
    factory = MetadataFactory(pipeline, None, Limits(request_timeout=5), clock)
    made = []
    for _ in range(3):
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(GET[:10])
        made.append((protocol, transport))
    made[0][0].dataReceived(GET[10:])  # complete: with the pipeline now
    made[1][0].connectionLost(None)  # gone
    clock.advance(6)
    assert made[0][1].value() == b"" and made[1][1].value() == b""
    assert made[2][1].value().startswith(b"HTTP/1.1 408 ")
    assert clock.getDelayedCalls() == []
    assert len(factory.timeouts) == 0


def test_listeners_of_one_clock_share_their_timeouts():
    """Every listener on a clock with the same timeout uses one RequestTimeouts."""
    clock = Clock()
    shared = MetadataFactory(RecordingPipeline(b"x"), None, Limits(), clock)
    own = MetadataFactory(
        RecordingPipeline(b"x"), Namespace(NamespaceKind.ROUTER, "r1"), Limits(), clock
    )
    other = MetadataFactory(RecordingPipeline(b"x"), None, Limits(request_timeout=9), clock)
    elsewhere = MetadataFactory(RecordingPipeline(b"x"), None, Limits(), Clock())
    assert shared.timeouts is own.timeouts
    assert other.timeouts is not shared.timeouts and other.timeouts.timeout == 9
    assert elsewhere.timeouts is not shared.timeouts
    for factory in (shared, own):
        factory.buildProtocol(None).makeConnection(StringTransport())
    assert len(shared.timeouts) == 2 and len(clock.getDelayedCalls()) == 1


def test_shared_timeouts_do_not_keep_a_clock_alive():
    """A clock nothing else refers to goes away with its RequestTimeouts."""
    import gc
    import weakref

    clock = Clock()
    MetadataFactory(RecordingPipeline(b"x"), None, Limits(), clock)
    ref = weakref.ref(clock)
    del clock
    gc.collect()
    assert ref() is None


def test_timeouts_given_to_the_factory_are_used():
    clock = Clock()
    timeouts = RequestTimeouts(clock, 2)
    factory = MetadataFactory(
        RecordingPipeline(b"x"), None, Limits(request_timeout=30), clock, timeouts=timeouts
    )
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(GET[:10])
    clock.advance(2)
    assert transport.value().startswith(b"HTTP/1.1 408 ")


# --- Connection bounds --------------------------------------------------------------


def open_on(factory):
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_connections_over_the_total_get_503_and_are_closed_unread(no_logged_errors):
    """max_connections 2: the third connection is answered 503 with Retry-After at once
    and closed; its request is never read. Once one closes, a new one is served."""
    from metaproxy.http.connlimit import ConnectionLimit

    limits = Limits(connections=ConnectionLimit(2), retry_after=3)
    pipeline = RecordingPipeline()
    factory = MetadataFactory(pipeline, None, limits, Clock())
    first, _ = open_on(factory)
    open_on(factory)
    refused, transport = open_on(factory)
    assert transport.value().startswith(b"HTTP/1.1 503 ")
    assert b"Retry-After: 3\r\n" in transport.value() and transport.disconnecting
    refused.dataReceived(GET)
    assert len(pipeline.calls) == 0
    assert (limits.connections.open, limits.connections.refused) == (2, 1)
    first.connectionLost(None)
    again, transport = open_on(factory)
    again.dataReceived(GET)
    assert len(pipeline.calls) == 1 and transport.value() == b""


def test_total_bound_is_shared_by_every_listener():
    from metaproxy.http.connlimit import ConnectionLimit

    limits = Limits(connections=ConnectionLimit(2))
    own = Namespace(NamespaceKind.NETWORK, "n1")
    shared = MetadataFactory(RecordingPipeline(), None, limits, Clock())
    mine = MetadataFactory(RecordingPipeline(), own, limits, Clock())
    open_on(shared), open_on(mine)
    _, transport = open_on(mine)
    assert transport.value().startswith(b"HTTP/1.1 503 ")


def test_namespace_socket_bound_leaves_other_sockets_alone():
    """max_connections_per_namespace 1: a second connection on that namespace's socket
    is refused; the shared socket and another namespace still accept."""
    limits = Limits(max_connections_per_namespace=1)
    full = MetadataFactory(
        RecordingPipeline(), Namespace(NamespaceKind.NETWORK, "n1"), limits, Clock()
    )
    other = MetadataFactory(
        RecordingPipeline(), Namespace(NamespaceKind.NETWORK, "n2"), limits, Clock()
    )
    shared = MetadataFactory(RecordingPipeline(), None, limits, Clock())
    open_on(full)
    _, refused = open_on(full)
    assert refused.value().startswith(b"HTTP/1.1 503 ")
    assert full.connections.refused == 1
    for factory in (other, shared, shared):
        _, transport = open_on(factory)
        assert transport.value() == b""
    assert limits.connections.open == 4  # the refused one was never counted


def test_refused_connections_log_at_most_once_per_interval():
    from twisted.logger import formatEvent, globalLogPublisher

    from metaproxy.http.connlimit import ConnectionLimit

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        clock = Clock()
        limits = Limits(connections=ConnectionLimit(1), refusal_log_interval=60)
        factory = MetadataFactory(RecordingPipeline(), None, limits, clock)
        for _ in range(200):
            open_on(factory)
        clock.advance(60)
        open_on(factory)
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [formatEvent(e) for e in events if "max_connections" in formatEvent(e)]
    assert len(lines) == 2 and "198 more" in lines[1]


def test_bare_lf_request_answered_400_at_once():
    """A head with LF-only line ends gets 400 when the first line arrives, not 408."""
    pipeline = RecordingPipeline()
    protocol, transport, _ = connect(pipeline)
    protocol.dataReceived(b"GET / HTTP/1.1\nHost: x\n")
    assert transport.value().startswith(b"HTTP/1.1 400 ") and b"bare LF" in transport.value()


def test_a_direct_listener_rewrites_the_request_from_its_peer():
    """With request_from_peer, the pipeline gets the request as that function made it
    from the parsed one and the connection's peer."""
    import attrs
    from twisted.internet.address import IPv4Address

    own = Namespace(NamespaceKind.OVN, "n1")
    pipeline = RecordingPipeline(b"x")
    seen = []

    def from_peer(request, peer):
        seen.append((request.forwarded_for, peer))
        return attrs.evolve(request, forwarded_for=peer.host.encode())

    factory = MetadataFactory(pipeline, own, Limits(), Clock(), request_from_peer=from_peer)
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.7", 40000)))
    protocol.dataReceived(GET)
    assert seen == [(b"10.0.0.5", IPv4Address("TCP", "10.0.0.7", 40000))]
    assert pipeline.calls[0][0].forwarded_for == b"10.0.0.7"
