"""Unit tests for L{metaproxy.nova}: the real client, pool and agent, over in-memory I/O.

Most tests drive a L{NovaClient} built exactly as in production (its own pool and
L{twisted.web.client.Agent}) on a L{MemoryReactorClock}: each connection the agent opens
is wired with L{twisted.test.iosim} to L{_RawNova}, a fake Nova that records the raw bytes
of each request and answers with raw bytes. That lets the tests assert what is on the
wire, byte for byte, in both directions. One test injects treq's
L{RequestTraversalAgent} to check the same through a L{twisted.web} resource.
"""

from __future__ import annotations

import gzip
from typing import Callable

import attrs
import pytest
from OpenSSL import SSL
from service_identity import VerificationError
from treq.testing import RequestTraversalAgent
from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web.client import (
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
    _HTTP11ClientFactory,
)
from twisted.internet.ssl import optionsForClientTLS
from twisted.web.iweb import IAgent, IPolicyForHTTPS
from twisted.web.resource import Resource
from zope.interface import implementer

from metaproxy import nova
from metaproxy.nova import (
    CACHED_CONNECTION_TIMEOUT,
    NovaBadResponse,
    NovaClient,
    NovaResponse,
    NovaTimeout,
    NovaUnreachable,
)

BASE = "http://127.0.0.1:8775"
SIGNATURE = b"773ba44693c7553d6ee20f61ea5d2757a9a4f4a44d2841ae4e95b52e4cd62db4"
PROXY_HEADERS = [
    (b"X-Forwarded-For", b"10.0.0.5"),
    (b"X-Instance-ID", b"a0b1c2d3-0000-4000-8000-000000000001"),
    (b"X-Tenant-ID", b"7f3e9a"),
    (b"X-Instance-ID-Signature", SIGNATURE),
]
HERE = "Nova metadata API at 127.0.0.1:8775"
THERE = "Nova metadata API at nova.invalid:8775"
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


# --- A fake Nova on the wire -----------------------------------------------------------


@attrs.frozen
class Exchange:
    """One request as Nova received it: the raw head and body."""

    head: bytes
    body: bytes

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


class _RawNova(Protocol):
    """Parse requests (Content-Length framing only), record them, answer from a script."""

    def __init__(self, wire: Wire) -> None:
        self._wire = wire
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
            exchange = Exchange(head, self._buffer[end + 4 : end + 4 + length])
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
    """A L{MemoryReactorClock} whose outgoing TCP connections reach a L{_RawNova}."""

    def __init__(self, reply: Reply = lambda exchange: OK) -> None:
        self.reactor = MemoryReactorClock()
        self.reply = reply
        self.received: list[Exchange] = []
        self.pumps: list[iosim.IOPump] = []
        self.servers: list[_RawNova] = []
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
            server = _RawNova(self)
            client = factory.buildProtocol(server_address)
            pump = iosim.connect(
                server,
                iosim.FakeTransport(server, True, server_address, client_address),
                client,
                iosim.FakeTransport(client, False, client_address, server_address),
            )
            self.servers.append(server)
            self.pumps.append(pump)
            accepted = True
        return accepted

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


# --- What goes out ---------------------------------------------------------------------


def test_sends_exactly_the_given_headers_plus_host():
    """A GET carries the caller's headers and Host, nothing else: no Accept-Encoding,
    User-Agent, Connection or body framing."""
    wire = Wire()
    response = success(wire.forward(wire.client()))
    assert response.status == 200
    [exchange] = wire.received
    assert exchange.request_line == b"GET /latest/meta-data/ HTTP/1.1"
    assert sorted(exchange.headers) == sorted(
        [(name.lower(), value) for name, value in PROXY_HEADERS] + [(b"host", b"127.0.0.1:8775")]
    )
    assert exchange.body == b""


@pytest.mark.parametrize(
    "target",
    [
        b"/openstack/2018-08-27/meta_data.json",
        b"/latest/meta-data/%7Efoo?x=1&y",
        b"/a%2Fb%20c?q=%2F%3F%26&q=2&empty=&flag",
        b"/latest/user-data?x=a?b",
        b"//double//slashes/",
        b"/path;param/x;y?z",
        b"/",
        b"/weird!$&'()*+,:@~chars",
    ],
)
def test_target_reaches_nova_byte_exact(target):
    """Path and query, percent-escapes included, are sent exactly as the instance sent
    them (no decoding, re-quoting or normalising)."""
    wire = Wire()
    success(wire.forward(wire.client(), target=target))
    assert wire.received[0].request_line == b"GET " + target + b" HTTP/1.1"


@pytest.mark.parametrize(
    "target, sent",
    [(b"/a?", b"/a"), (b"/a;", b"/a"), (b"/a#frag", b"/a"), (b"/a?#", b"/a")],
)
def test_target_edge_cases_twisted_normalises(target, sent):
    """Twisted's Agent parses the URL: an empty query, an empty parameter and a
    fragment are dropped. Documented in L{NovaClient.forward}; meaning is unchanged."""
    wire = Wire()
    success(wire.forward(wire.client(), target=target))
    assert wire.received[0].request_line == b"GET " + sent + b" HTTP/1.1"


@pytest.mark.parametrize(
    "target",
    [
        b"http://169.254.169.254/latest",
        b"*",
        b"",
        b"latest",
        b"/a b",
        b"/a\r\nX: y",
        b"/caf\xc3\xa9",
    ],
)
def test_target_not_in_origin_form_is_refused(target):
    """A target that is not origin form, or holds bytes no request line may, fails
    with ValueError before anything is sent or queued."""
    wire = Wire()
    client = wire.client()
    failure(wire.forward(client, target=target), ValueError)
    assert wire.connections == 0
    assert client.in_flight == 0 and client.queued == 0


def test_invalid_method_is_refused_and_frees_the_slot():
    """A method Twisted will not put on a request line fails with ValueError, and the
    slot it took is given back."""
    wire = Wire()
    client = wire.client(max_in_flight=1)
    failure(wire.forward(client, method=b"GET /x HTTP/1.1\r\n"), ValueError)
    assert (client.in_flight, wire.connections) == (0, 0)
    success(wire.forward(client))


@pytest.mark.parametrize("name", [b"Host", b"content-length", b"Transfer-Encoding", b"Connection"])
def test_headers_owned_by_the_client_are_refused(name):
    """Host and framing headers come from the client; a caller supplying one gets
    ValueError rather than a duplicated or contradictory header."""
    wire = Wire()
    failure(wire.forward(wire.client(), headers=PROXY_HEADERS + [(name, b"1")]), ValueError)
    assert wire.connections == 0


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"GET", b"PATCH", b"DELETE"])
def test_body_sent_byte_exact_with_content_length(method):
    """A non-empty body goes out for any method, byte-exact, framed by Content-Length
    (not chunked)."""
    body = b'{"password": "x"}\r\n\x00\xff\x1f\x8b'
    wire = Wire()
    target = b"/openstack/latest/password"
    success(wire.forward(wire.client(), method=method, target=target, body=body))
    [exchange] = wire.received
    assert exchange.request_line == method + b" /openstack/latest/password HTTP/1.1"
    assert exchange.body == body
    assert [v for n, v in exchange.headers if n == b"content-length"] == [b"%d" % len(body)]


@pytest.mark.parametrize(
    "method, content_length",
    [(b"POST", [b"0"]), (b"PUT", [b"0"]), (b"GET", []), (b"HEAD", []), (b"DELETE", [])],
)
def test_empty_body(method, content_length):
    """An empty POST or PUT says Content-Length: 0; other empty requests have no body
    framing at all."""
    wire = Wire(reply=lambda e: b"HTTP/1.1 204 No Content\r\n\r\n")
    success(wire.forward(wire.client(), method=method))
    [exchange] = wire.received
    assert [v for n, v in exchange.headers if n == b"content-length"] == content_length
    assert exchange.body == b""


@pytest.mark.parametrize(
    "base_url, host, url",
    [
        ("http://127.0.0.1:8775", b"127.0.0.1:8775", b"http://127.0.0.1:8775/x?y"),
        ("http://nova.example", b"nova.example", b"http://nova.example:80/x?y"),
        ("http://nova.example:80/", b"nova.example", b"http://nova.example:80/x?y"),
        ("https://nova.example", b"nova.example", b"https://nova.example:443/x?y"),
        ("https://nova.example:8775", b"nova.example:8775", b"https://nova.example:8775/x?y"),
        ("http://[fd00::1]:8775", b"[fd00::1]:8775", b"http://[fd00::1]:8775/x?y"),
        ("http://NOVA.Example:8775", b"nova.example:8775", b"http://nova.example:8775/x?y"),
    ],
)
def test_host_header_and_url(base_url, host, url):
    """Host is the configured host, with the port only when not the scheme's default,
    an IPv6 literal in brackets; the URL handed to the agent is base + target."""
    agent = RecordingAgent()
    client = injected(agent, base_url)
    d = client.forward(b"GET", b"/x?y", [], b"")
    [(method, sent_url, headers, producer)] = agent.requests
    assert (method, sent_url, producer) == (b"GET", url, None)
    assert list(headers.getAllRawHeaders()) == [(b"Host", [host])]
    d.cancel()
    failure(d, CancelledError)


@pytest.mark.parametrize(
    "base_url, host",
    [("http://[fd00::1]:8775", b"[fd00::1]:8775"), ("http://nova.example", b"nova.example")],
)
def test_host_header_on_the_wire(base_url, host):
    """The Host computed from the base URL is the one on the wire (the memory reactor
    resolves every name to 127.0.0.1)."""
    wire = Wire()
    success(wire.forward(wire.client(base_url), headers=[]))
    assert wire.received[0].headers == [(b"host", host)]


@implementer(IPolicyForHTTPS)
class CountingPolicy:
    """An HTTPS policy that counts the connection creators asked of it."""

    def __init__(self) -> None:
        self.asked: list[tuple[bytes, int]] = []

    def creatorForNetloc(self, hostname, port):
        self.asked.append((hostname, port))
        return optionsForClientTLS(hostname.decode("ascii"))


def test_tls_connection_creator_built_once():
    """The HTTPS policy is asked for a connection creator once, for the configured host
    and port, not on every request (Agent's default endpoint factory would)."""
    wire = Wire()
    policy = CountingPolicy()
    client = wire.client("https://nova.example:8775", tls=policy)
    requests = [client.forward(b"GET", b"/", PROXY_HEADERS, b"") for _ in range(3)]
    assert policy.asked == [(b"nova.example", 8775)]
    assert [attempt[:2] for attempt in wire.reactor.tcpClients] == [("127.0.0.1", 8775)] * 3
    for d in requests:
        d.cancel()
        failure(d, CancelledError)


def test_base_url_path_prefix():
    """A path prefix in the base URL comes before the target; a trailing slash does not
    double the first slash of the target."""
    wire = Wire()
    success(wire.forward(wire.client("http://127.0.0.1:8775/nova/"), target=b"/latest?x"))
    assert wire.received[0].request_line == b"GET /nova/latest?x HTTP/1.1"


@pytest.mark.parametrize(
    "base_url",
    [
        "ftp://nova:21",
        "nova:8775",
        "http://",
        "http://nova:notaport",
        "http://u:p@nova",
        "http://nova/?q",
        "http://nové",
    ],
)
def test_bad_base_url(base_url):
    """A base URL that is not http(s)://host[:port][/prefix] is refused at construction."""
    with pytest.raises(ValueError):
        Wire().client(base_url)


# --- What comes back -------------------------------------------------------------------


def test_redirect_is_returned_not_followed():
    """A 302 is Nova's answer to relay: one request, the Location header intact."""
    raw = b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere/x\r\nContent-Length: 0\r\n\r\n"
    wire = Wire(reply=lambda e: raw)
    response = success(wire.forward(wire.client()))
    assert (response.status, response.reason) == (302, b"Found")
    assert (b"Location", b"http://elsewhere/x") in response.headers
    assert len(wire.received) == 1


@pytest.mark.parametrize(
    "status, reason",
    [
        (200, b"OK"), (201, b"Created"), (301, b"Moved Permanently"), (400, b"Bad Request"),
        (401, b"Unauthorized"), (403, b"Forbidden"), (404, b"Not Found"),
        (405, b"Method Not Allowed"), (409, b"Conflict"), (413, b"Payload Too Large"),
        (418, b"I'm a teapot, really"), (500, b"Internal Server Error"), (502, b"Bad Gateway"),
        (503, b"Service Unavailable"), (504, b"Gateway Timeout"), (599, b""),
    ],
)
def test_any_status_returned_as_is(status, reason):
    """Every status comes back with Nova's own reason phrase and body; none is an error."""
    body = b"<html>%d</html>" % status
    raw = b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n\r\n%s" % (status, reason, len(body), body)
    wire = Wire(reply=lambda e: raw)
    response = success(wire.forward(wire.client()))
    assert response == NovaResponse(status=status, reason=reason, headers=(), body=body)


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses(status):
    """204 and 304 come back with an empty body."""
    wire = Wire(reply=lambda e: b"HTTP/1.1 %d Whatever\r\nETag: \"x\"\r\n\r\n" % status)
    response = success(wire.forward(wire.client()))
    assert (response.status, response.reason, response.body) == (status, b"Whatever", b"")
    assert response.headers == ((b"ETag", b'"x"'),)


def test_gzip_body_byte_exact_not_decompressed():
    """A gzip body (user data) comes back compressed, byte for byte, with its
    Content-Encoding; binary bytes are never decoded."""
    payload = gzip.compress(b"#cloud-config\n" + bytes(range(256)) * 100, mtime=0)
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)
    )
    wire = Wire(reply=lambda e: raw)
    response = success(wire.forward(wire.client(), target=b"/latest/user-data"))
    assert response.body == payload
    assert response.headers == (
        (b"Content-Type", b"application/octet-stream"),
        (b"Content-Encoding", b"gzip"),
    )


def test_chunked_body_is_dechunked():
    """A chunked response comes back as the joined body, without Transfer-Encoding."""
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    wire = Wire(reply=lambda e: raw)
    response = success(wire.forward(wire.client()))
    assert response.body == b"hello world"
    assert response.headers == ((b"X-A", b"1"),)


def test_body_delimited_by_close_is_complete():
    """No Content-Length, not chunked, then close: legal HTTP/1.1, a complete body (not
    Twisted's PartialDownloadError)."""
    raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"
    wire = Wire(reply=lambda e: Answer(raw, close=True))
    response = success(wire.forward(wire.client()))
    assert response.body == b"all of it"


def test_response_headers_repeats_kept_as_twisted_shapes_them():
    """Repeated headers keep every value in order. Twisted canonicalises name case,
    groups a name's values where it first appeared, and drops connection-control
    headers (documented on NovaResponse.headers)."""
    raw = (
        b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nX-Openstack-Request-Id: req-1\r\n"
        b"Set-Cookie: b=2\r\nContent-Type: text/plain\r\nKeep-Alive: timeout=5\r\n"
        b"Connection: keep-alive\r\nContent-Length: 0\r\n\r\n"
    )
    wire = Wire(reply=lambda e: raw)
    response = success(wire.forward(wire.client()))
    assert response.headers == (
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"X-Openstack-Request-Id", b"req-1"),
        (b"Content-Type", b"text/plain"),
    )


def test_head_keeps_content_length():
    """The answer to HEAD keeps Content-Length (it describes the resource) and has no body."""
    wire = Wire(reply=lambda e: b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    response = success(wire.forward(wire.client(), method=b"HEAD"))
    assert response.headers == ((b"Content-Length", b"1234"),)
    assert response.body == b""


def test_announced_body_over_the_cap(monkeypatch):
    """A Content-Length over MAX_BODY_BYTES fails with NovaBadResponse and the
    connection is closed, not pooled."""
    monkeypatch.setattr(nova, "MAX_BODY_BYTES", 100)
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n" + b"x" * 101
    wire = Wire(reply=lambda e: big if e.request_line.startswith(b"GET /big ") else OK)
    client = wire.client()
    exc = failure(wire.forward(client, target=b"/big"), NovaBadResponse)
    assert "101-byte body" in str(exc) and "100 bytes" in str(exc)
    assert wire.pumps[0].clientIO.disconnected
    assert client.in_flight == 0
    success(wire.forward(client))
    assert wire.connections == 2


def test_streamed_body_over_the_cap(monkeypatch):
    """A body that grows past MAX_BODY_BYTES without announcing it fails the same way."""
    monkeypatch.setattr(nova, "MAX_BODY_BYTES", 100)
    wire = Wire(
        reply=lambda e: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"40\r\n" + b"x" * 64 + b"\r\n" + b"40\r\n" + b"y" * 64 + b"\r\n0\r\n\r\n"
    )
    client = wire.client()
    failure(wire.forward(client), NovaBadResponse)
    assert wire.pumps[0].clientIO.disconnected
    assert client.in_flight == 0


def test_unparsable_response():
    """Garbage instead of a status line is NovaBadResponse."""
    wire = Wire(reply=lambda e: Answer(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", close=True))
    exc = failure(wire.forward(wire.client()), NovaBadResponse)
    assert "127.0.0.1:8775" in str(exc)


def test_closed_before_responding():
    """Nova closing the connection without a response is NovaUnreachable."""
    wire = Wire(reply=lambda e: Answer(b"", close=True))
    exc = failure(wire.forward(wire.client()), NovaUnreachable)
    assert str(exc) == f"{HERE} closed the connection before responding"


def test_closed_in_the_middle_of_the_body():
    """A body cut short of its Content-Length is NovaUnreachable, saying so."""
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    wire = Wire(reply=lambda e: Answer(raw, close=True))
    exc = failure(wire.forward(wire.client()), NovaUnreachable)
    assert "in the middle of the response" in str(exc)


# --- Pool, concurrency, timeouts --------------------------------------------------------


def test_pool_is_persistent_sized_and_quiet():
    """The pool is explicit and persistent, keeps pool_size idle connections for
    CACHED_CONNECTION_TIMEOUT (4 s), retries idempotent requests, and builds
    connections with a factory that does not log."""
    client = Wire().client(pool_size=17, max_in_flight=40)
    pool = client.pool
    assert pool.persistent is True
    assert pool.maxPersistentPerHost == 17
    assert pool.cachedConnectionTimeout == CACHED_CONNECTION_TIMEOUT == 4.0
    assert pool.retryAutomatically is True
    assert issubclass(pool._factory, _HTTP11ClientFactory)
    assert pool._factory(lambda p: None, "metadata").noisy is False


def test_connect_timeout_is_passed_to_the_connection_attempt():
    """connect_timeout bounds each TCP connection attempt."""
    wire = Wire()
    client = wire.client(connect_timeout=2.5)
    client.forward(b"GET", b"/", [], b"")
    assert wire.reactor.tcpClients[0][:2] == ("127.0.0.1", 8775)
    assert wire.reactor.tcpClients[0][3] == 2.5
    wire.flush()


def test_keep_alive_reuses_one_connection_and_close_releases_it():
    """Sequential requests share one connection; close() closes it and leaves nothing
    scheduled on the reactor."""
    wire = Wire()
    client = wire.client()
    for _ in range(5):
        success(wire.forward(client))
    assert (wire.connections, len(wire.received)) == (1, 5)
    assert wire.reactor.getDelayedCalls()  # The idle timer of the pooled connection.
    closed = client.close()
    wire.flush()
    success(closed)
    assert wire.pumps[0].clientIO.disconnected
    assert wire.reactor.getDelayedCalls() == []


def test_idle_connection_expires():
    """A connection idle for CACHED_CONNECTION_TIMEOUT is closed; the next request opens
    a new one."""
    wire = Wire()
    client = wire.client()
    success(wire.forward(client))
    wire.reactor.advance(CACHED_CONNECTION_TIMEOUT)
    wire.flush()
    assert wire.pumps[0].clientIO.disconnected
    success(wire.forward(client))
    assert wire.connections == 2


def test_max_in_flight_queues_the_next_request():
    """With max_in_flight=2 the third request waits, without a connection, until one
    finishes; it then reuses the freed connection."""
    pending: list[Exchange] = []
    wire = Wire(reply=lambda e: pending.append(e))  # Answer later, by hand.
    client = wire.client(max_in_flight=2)
    first, second, third = (wire.forward(client, target=b"/%d" % i) for i in range(3))
    assert (client.in_flight, client.queued, wire.connections) == (2, 1, 2)
    assert [e.request_line for e in pending] == [b"GET /0 HTTP/1.1", b"GET /1 HTTP/1.1"]
    for d in (first, second, third):
        no_result(d)

    wire.servers[0].transport.write(OK)
    wire.flush()
    assert success(first).body == b"ok"
    assert (client.in_flight, client.queued, wire.connections) == (2, 0, 2)
    assert pending[-1].request_line == b"GET /2 HTTP/1.1"

    wire.servers[1].transport.write(OK)
    wire.servers[0].transport.write(OK)
    wire.flush()
    assert success(second).body == success(third).body == b"ok"
    assert (client.in_flight, client.queued) == (0, 0)
    closed = client.close()
    wire.flush()
    success(closed)


def test_timeout_when_nova_never_answers():
    """No response within `timeout` fails with NovaTimeout exactly then; the connection
    is aborted and the slot freed."""
    wire = Wire(reply=lambda e: None)
    client = wire.client(timeout=5)
    d = wire.forward(client)
    wire.reactor.advance(4.999)
    no_result(d)
    wire.reactor.advance(0.001)
    wire.flush()
    exc = failure(d, NovaTimeout)
    assert str(exc) == f"no complete response from {HERE} within 5s"
    assert wire.pumps[0].clientIO.disconnected
    assert client.in_flight == 0
    assert wire.reactor.getDelayedCalls() == []


def test_timeout_while_connecting():
    """A connection attempt still pending at the deadline is NovaTimeout (not the
    connect timeout's message), and the attempt is stopped."""
    wire = Wire()
    client = wire.client(timeout=1, connect_timeout=3)
    d = client.forward(b"GET", b"/", PROXY_HEADERS, b"")  # Never accepted.
    wire.reactor.advance(1)
    failure(d, NovaTimeout)
    assert wire.reactor.connectors[0].stoppedConnecting
    assert client.in_flight == 0
    assert wire.reactor.getDelayedCalls() == []


def test_timeout_covers_reading_the_body():
    """Headers in time but the body never completes is still NovaTimeout."""
    wire = Wire(reply=lambda e: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    client = wire.client(timeout=5)
    d = wire.forward(client)
    no_result(d)
    wire.reactor.advance(5)
    wire.flush()
    failure(d, NovaTimeout)
    assert wire.pumps[0].clientIO.disconnected
    assert client.in_flight == 0


def test_timeout_counts_time_queued():
    """Time spent waiting for a slot counts: a request queued at t=2 behind one stuck
    since t=0 gets the slot at t=5 and times out at its own deadline, t=7."""
    wire = Wire(reply=lambda e: None)
    client = wire.client(timeout=5, max_in_flight=1)
    stuck = wire.forward(client)
    wire.reactor.advance(2)
    queued = wire.forward(client)
    assert (client.in_flight, client.queued, len(wire.received)) == (1, 1, 1)
    wire.reactor.advance(3)
    wire.flush()
    failure(stuck, NovaTimeout)
    assert (client.in_flight, client.queued, len(wire.received)) == (1, 0, 2)
    wire.reactor.advance(1.999)
    no_result(queued)
    wire.reactor.advance(0.001)
    wire.flush()
    failure(queued, NovaTimeout)
    assert (client.in_flight, client.queued) == (0, 0)
    assert wire.reactor.getDelayedCalls() == []


def test_caller_cancel_aborts_and_frees_the_slot():
    """Cancelling forward()'s Deferred (the instance went away) aborts the request and
    fails it with CancelledError, not a Nova error."""
    wire = Wire(reply=lambda e: None)
    client = wire.client(max_in_flight=1)
    sent = wire.forward(client)
    queued = wire.forward(client)
    queued.cancel()
    failure(queued, CancelledError)
    sent.cancel()
    wire.flush()
    failure(sent, CancelledError)
    assert wire.pumps[0].clientIO.disconnected
    assert (client.in_flight, client.queued) == (0, 0)
    assert wire.reactor.getDelayedCalls() == []


def test_connection_attempt_failures():
    """Refused and connect-timeout attempts fail with NovaUnreachable saying which,
    and leave nothing scheduled."""
    wire = Wire()
    client = wire.client(connect_timeout=3)
    for exc, text in [
        (error.ConnectionRefusedError(), f"{HERE} refused the connection"),
        (error.TimeoutError(), f"cannot connect to {HERE}: connect timeout after 3s"),
    ]:
        d = client.forward(b"GET", b"/", PROXY_HEADERS, b"")
        wire.reactor.tcpClients[-1][2].clientConnectionFailed(None, Failure(exc))
        wire.reactor.advance(0)
        # HostnameEndpoint reports the failure when its 0.3 s attempt loop next runs
        # and finds no address left to try.
        no_result(d)
        wire.reactor.advance(0.3)
        assert str(failure(d, NovaUnreachable)) == text
    assert client.in_flight == 0
    assert wire.reactor.getDelayedCalls() == []


# --- Error mapping, through an injected agent --------------------------------------------


@implementer(IAgent)
class RecordingAgent:
    """An IAgent that records requests and answers with a canned result (or never)."""

    def __init__(self, result: Callable[[], Deferred] | None = None) -> None:
        self.requests: list[tuple] = []
        self._result = result

    def request(self, method, uri, headers=None, bodyProducer=None):
        self.requests.append((method, uri, headers, bodyProducer))
        return self._result() if self._result else Deferred()


def injected(agent: IAgent, base_url: str = BASE) -> NovaClient:
    """A client that sends through C{agent}, with a Clock for the timeouts."""
    return NovaClient(
        Clock(), base_url, timeout=1, connect_timeout=1, pool_size=1, max_in_flight=1, agent=agent
    )


def _tls_error() -> SSL.Error:
    return SSL.Error([("SSL routines", "", "certificate verify failed")])


@pytest.mark.parametrize(
    "exc, text",
    [
        (
            error.DNSLookupError("no results for nova.invalid"),
            f"cannot connect to {THERE}: DNS lookup failed: no results for nova.invalid",
        ),
        (error.NoRouteError(), f"cannot connect to {THERE}: No route to host"),
        (
            ResponseNeverReceived([Failure(_tls_error())]),
            f"TLS with {THERE} failed: certificate verify failed",
        ),
        (
            ResponseNeverReceived([Failure(VerificationError(errors=["mismatch"]))]),
            f"TLS with {THERE} failed: the certificate does not match the host",
        ),
        (_tls_error(), f"TLS with {THERE} failed: certificate verify failed"),
        (
            ResponseNeverReceived([Failure(error.ConnectionDone())]),
            f"{THERE} closed the connection before responding",
        ),
        (
            RequestTransmissionFailed([Failure(error.ConnectionLost())]),
            f"{THERE} closed the connection before responding",
        ),
        (
            ResponseFailed([Failure(error.ConnectionLost())]),
            f"{THERE} closed the connection in the middle of the response",
        ),
        (RuntimeError("odd"), f"request to {THERE} failed: RuntimeError: odd"),
    ],
)
def test_agent_failures_become_nova_unreachable(exc, text):
    """Each way the agent fails maps to NovaUnreachable naming host:port and the cause,
    and never the signature."""
    agent = RecordingAgent(lambda: fail(exc))
    client = injected(agent, "http://nova.invalid:8775")
    message = str(failure(client.forward(b"GET", b"/", PROXY_HEADERS, b""), NovaUnreachable))
    assert message.startswith(text)
    assert SIGNATURE.decode() not in message
    assert client.in_flight == 0


def test_injected_agent_with_a_web_resource():
    """Through an injected agent (treq's RequestTraversalAgent over a twisted.web
    resource), Nova's resource sees the path, query, headers and body sent; close() has
    no pool to close."""
    seen = []

    class Meta(Resource):
        isLeaf = True

        def render(self, request):
            seen.append((request, request.content.read()))
            request.setHeader(b"Content-Type", b"application/json")
            return b'{"uuid": "x"}'

    client = injected(RequestTraversalAgent(Meta()))
    target = b"/openstack/latest/meta%2Fdata.json?a=1&a=2"
    response = success(client.forward(b"POST", target, PROXY_HEADERS, b"pw"))
    assert (response.status, response.body) == (200, b'{"uuid": "x"}')
    [(request, body)] = seen
    assert request.uri == b"/openstack/latest/meta%2Fdata.json?a=1&a=2"
    assert request.args == {b"a": [b"1", b"2"]}
    assert request.requestHeaders.getRawHeaders(b"X-Instance-ID-Signature") == [SIGNATURE]
    assert request.requestHeaders.getRawHeaders(b"Accept-Encoding") is None
    assert body == b"pw"
    assert client.pool is None
    success(client.close())

