"""The test suite's own doubles (the public ones are in L{metaproxy.testing}).

Nova, three ways, each for the tests that need that level:

L{Wire}
    Nova on the wire, in memory: a L{MemoryReactorClock} whose outgoing TCP connections
    are wired with L{twisted.test.iosim} to L{RawNova}, which records the raw bytes of
    each request and answers with raw bytes (optionally behind real TLS, or to a
    L{twisted.web} site instead). For the real L{NovaClient}: what is on the wire, byte
    for byte, in both directions, with time, connection loss and failures driven exactly.
L{ListeningNova}
    a tiny L{twisted.web} site listening on 127.0.0.1 (plain or TLS) on the real reactor,
    echoing the request-target it saw, that counts its connections and cleans up after
    itself.
C{bench.processes.start_fakenova}
    the full fake Nova (C{bench.fakes.nova}) as a process.

With L{success}, L{failure} and L{no_result} to read Deferreds that fire (or not)
synchronously, and L{reactor_turn} to run one reactor turn of a C{Clock}.
No pytest here: fixtures are in C{tests/conftest.py}.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from metaproxy.nova.client import NovaClient
from metaproxy.nova.connection import HTTPConnection

#: Where L{Wire}'s clients send by default.
BASE = "http://127.0.0.1:8775"
#: The four headers the proxy sends Nova (L{Wire.forward}'s default), with a signature.
SIGNATURE = b"773ba44693c7553d6ee20f61ea5d2757a9a4f4a44d2841ae4e95b52e4cd62db4"
PROXY_HEADERS = [
    (b"X-Forwarded-For", b"10.0.0.5"),
    (b"X-Instance-ID", b"a0b1c2d3-0000-4000-8000-000000000001"),
    (b"X-Tenant-ID", b"7f3e9a"),
    (b"X-Instance-ID-Signature", SIGNATURE),
]
#: A complete 200 answer on the wire (L{Wire}'s default reply).
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


# --- Deferred helpers ------------------------------------------------------------------


def _outcome(d: Deferred) -> list[object]:
    results: list[object] = []
    d.addBoth(results.append)
    return results


def success(d: Deferred) -> object:
    """The result C{d} already has; fails the test if it has none or failed."""
    results = _outcome(d)
    assert results, "the Deferred has no result yet"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def failure(d: Deferred, kind: type[BaseException]) -> BaseException:
    """The exception C{d} already failed with, which must be a C{kind}."""
    results = _outcome(d)
    assert results, "the Deferred has no result yet"
    assert isinstance(results[0], Failure), f"expected a failure, got {results[0]!r}"
    assert results[0].check(kind), results[0].getTraceback()
    return results[0].value


def no_result(d: Deferred) -> None:
    """C{d} has no result yet. Any result it gets later passes on to the next helper."""
    results: list[object] = []

    def probe(result: object) -> object:
        results.append(result)
        return result

    d.addBoth(probe)
    assert not results, f"unexpected result {results[0]!r}"


# --- One reactor turn on a Clock --------------------------------------------------------


def reactor_turn(clock: Clock) -> int:
    """Run the calls of C{clock} due now that were scheduled before this turn, as one
    iteration of a real reactor does (C{Clock.advance(0)} also runs the C{callLater(0)}
    calls they make, at once); return how many ran."""
    due = [call for call in clock.calls if call.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.called = 1
        call.func(*call.args, **call.kw)
    return len(due)


# --- A fake Nova on the wire -----------------------------------------------------------


@attrs.frozen
class Exchange:
    """One request as Nova received it: the raw head and body, and which connection
    (0 for the first one the client opened) it came on."""

    head: bytes
    body: bytes
    connection: int = 0

    @property
    def request_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """(lower-cased name, value) in wire order."""
        lines = self.head.split(b"\r\n")[1:-2]
        pairs = [line.split(b": ", 1) for line in lines]
        return [(name.lower(), value) for name, value in pairs]


@attrs.frozen
class Answer:
    """Raw bytes to send back; C{close} then closes the connection."""

    data: bytes
    close: bool = False


Reply = Callable[[Exchange], "Answer | bytes | None"]


class RawNova(Protocol):
    """Parse requests (Content-Length framing only), record them, answer from a script."""

    def __init__(self, wire: Wire, index: int) -> None:
        self._wire = wire
        self._index = index
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = self._buffer[: end + 4]
            exchange = Exchange(head, b"")
            lengths = [int(v) for n, v in exchange.headers if n == b"content-length"]
            assert b"transfer-encoding" not in dict(exchange.headers)
            length = lengths[0] if lengths else 0
            if len(self._buffer) < end + 4 + length:
                return
            exchange = Exchange(head, self._buffer[end + 4 : end + 4 + length], self._index)
            self._buffer = self._buffer[end + 4 + length :]
            self._wire.received.append(exchange)
            answer = self._wire.reply(exchange)
            if answer is None:
                continue  # Never answer.
            if isinstance(answer, bytes):
                answer = Answer(answer)
            self.transport.write(answer.data)
            if answer.close:
                self.transport.loseConnection()


class Wire:
    """A L{MemoryReactorClock} whose outgoing TCP connections reach a L{RawNova}.

    @param tls: Server TLS options: Nova speaks HTTPS with them.
    @param site: Connections reach this L{twisted.web} site instead of a L{RawNova}.
    """

    def __init__(
        self,
        reply: Reply = lambda exchange: OK,
        *,
        tls: CertificateOptions | None = None,
        site: Site | None = None,
    ) -> None:
        self.reactor = MemoryReactorClock()
        self.reply = reply
        self.received: list[Exchange] = []
        self.pumps: list[iosim.IOPump] = []
        self.servers: list[RawNova] = []
        self._tls = tls
        self._site = site
        self._seen = 0

    def client(self, base_url: str = BASE, **options) -> NovaClient:
        settings = dict(timeout=10.0, connect_timeout=3.0, pool_size=4, max_in_flight=8)
        settings.update(options)
        return NovaClient(self.reactor, base_url, **settings)

    @property
    def connections(self) -> int:
        """Connections the client has opened so far."""
        return len(self.reactor.tcpClients)

    def flush(self) -> None:
        """Accept new connections and move bytes until nothing moves."""
        while True:
            accepted = self._accept()
            if self._tls is not None:
                # TLS batches writes with callLater(0) on the reactor (both sides'
                # TLS layers are given this one).
                pending = [
                    c
                    for c in self.reactor.getDelayedCalls()
                    if c.getTime() <= self.reactor.seconds()
                ]
                self.reactor.advance(0)
                accepted = accepted or bool(pending)
            moved = [pump.flush() for pump in self.pumps]
            if not accepted and not any(moved):
                return

    def _accept(self) -> bool:
        accepted = False
        while self._seen < len(self.reactor.tcpClients):
            _, port, factory, _, _ = self.reactor.tcpClients[self._seen]
            connector = self.reactor.connectors[self._seen]
            self._seen += 1
            if connector.stoppedConnecting:
                continue  # The attempt was cancelled before we got to it.
            server_address = IPv4Address("TCP", "127.0.0.1", port)
            client_address = IPv4Address("TCP", "127.0.0.1", 40000 + len(self.pumps))
            if self._site is not None:
                server = self._site.buildProtocol(client_address)
            else:
                server = raw = RawNova(self, len(self.pumps))
                self.servers.append(raw)
                if self._tls is not None:
                    tls = TLSMemoryBIOFactory(
                        self._tls, False, Factory.forProtocol(lambda: raw), clock=self.reactor
                    )
                    server = tls.buildProtocol(client_address)
            client = factory.buildProtocol(server_address)
            pump = iosim.connect(
                server,
                iosim.FakeTransport(server, True, server_address, client_address),
                client,
                iosim.FakeTransport(client, False, client_address, server_address),
            )
            self.pumps.append(pump)
            accepted = True
        return accepted

    def connection(self, index: int) -> HTTPConnection:
        """The client's protocol on connection C{index} (under the endpoint's wrapper)."""
        protocol = self.pumps[index].client
        while not isinstance(protocol, HTTPConnection):
            inner = getattr(protocol, "wrappedProtocol", None)
            protocol = inner if inner is not None else protocol._wrappedProtocol
        return protocol

    def forward(
        self,
        client: NovaClient,
        method: bytes = b"GET",
        target: bytes = b"/latest/meta-data/",
        headers=PROXY_HEADERS,
        body: bytes = b"",
    ) -> Deferred:
        d = client.forward(method, target, headers, body)
        self.flush()
        return d


# --- A fake Nova on a real socket ------------------------------------------------------


class EchoTarget(Resource):
    """Answers with the request-target it saw; C{/hang} never answers."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.hanging: list = []

    def render(self, request):
        if request.path == b"/hang":
            self.hanging.append(request)
            return NOT_DONE_YET
        request.setHeader(b"Content-Type", b"text/plain")
        return b"target=" + request.uri


class CountingSite(Site):
    """A quiet Site that counts connections and can wait for all of them to close."""

    noisy = False

    def __init__(self) -> None:
        self.meta = EchoTarget()
        super().__init__(self.meta)
        self.connections = 0
        self._lost: list[Deferred] = []

    def log(self, request) -> None:
        pass

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        self.connections += 1
        lost: Deferred = Deferred()
        self._lost.append(lost)
        original = channel.connectionLost

        def connectionLost(reason):
            original(reason)
            lost.callback(None)

        channel.connectionLost = connectionLost
        return channel

    def all_closed(self) -> Deferred:
        return gatherResults(self._lost)


class ListeningNova:
    """A listening fake Nova (plain or TLS) and the clients made for it, cleaned up on exit."""

    def __init__(self, reactor, tls: CertificateOptions | None = None) -> None:
        self.reactor = reactor
        self.site = CountingSite()
        if tls is None:
            self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        else:
            self.port = reactor.listenSSL(0, self.site, tls, interface="127.0.0.1")
        scheme = "http" if tls is None else "https"
        self.url = f"{scheme}://127.0.0.1:{self.port.getHost().port}"
        self._clients: list[NovaClient] = []
        self._before = set(reactor.getDelayedCalls())

    def client(self, **options) -> NovaClient:
        settings = dict(timeout=5.0, connect_timeout=2.0, pool_size=4, max_in_flight=16)
        settings.update(options)
        client = NovaClient(self.reactor, self.url, **settings)
        self._clients.append(client)
        return client

    async def __aenter__(self) -> ListeningNova:
        return self

    async def __aexit__(self, *exc_info) -> None:
        for request in self.site.meta.hanging:
            if not request.finished and not request._disconnected:
                request.finish()
        for client in self._clients:
            await client.close()
        await self.site.all_closed()
        await self.port.stopListening()
        leftover = set(self.reactor.getDelayedCalls()) - self._before
        assert not [call for call in leftover if call.active()], leftover
