"""Unit tests for L{metaproxy.nova.client}: the real client and pool, over in-memory I/O.

Most tests drive a L{NovaClient} built exactly as in production (its own
L{metaproxy.nova.connection.ConnectionPool}, the TCP endpoint and, for HTTPS, TLS) on a
L{MemoryReactorClock}: each connection it opens is wired with L{twisted.test.iosim} to
L{tests.doubles.RawNova}, a fake Nova that records the raw bytes of each request and
answers with raw bytes (optionally behind real TLS, or to a L{twisted.web} site
instead). That lets the tests assert what is on the wire, byte for byte, in both
directions, and drive time, connection loss and failures exactly.
"""

from __future__ import annotations

import gzip

import pytest
import trustme
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import error
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IHostnameResolver
from twisted.internet.ssl import Certificate, CertificateOptions, optionsForClientTLS
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from metaproxy.nova import client as nova
from metaproxy.nova.client import (
    CACHED_CONNECTION_TIMEOUT,
    NovaBadResponse,
    NovaResponse,
    NovaTimeout,
    NovaUnreachable,
)
from tests.doubles import (
    OK,
    PROXY_HEADERS,
    SIGNATURE,
    Answer,
    Exchange,
    Wire,
    failure,
    no_result,
    success,
)

HERE = "Nova metadata API at 127.0.0.1:8775"
THERE = "Nova metadata API at nova.invalid:8775"


# --- What goes out ---------------------------------------------------------------------


def test_sends_exactly_the_given_headers_plus_host():
    """A GET is the request line, Host, then the caller's headers as given (names as
    spelled, in order), nothing else: no Accept-Encoding, User-Agent, Connection or body
    framing. Byte for byte."""
    wire = Wire()
    response = success(wire.forward(wire.client()))
    assert response.status == 200
    [exchange] = wire.received
    assert exchange.head == (
        b"GET /latest/meta-data/ HTTP/1.1\r\n"
        b"Host: 127.0.0.1:8775\r\n"
        b"X-Forwarded-For: 10.0.0.5\r\n"
        b"X-Instance-ID: a0b1c2d3-0000-4000-8000-000000000001\r\n"
        b"X-Tenant-ID: 7f3e9a\r\n"
        b"X-Instance-ID-Signature: " + SIGNATURE + b"\r\n"
        b"\r\n"
    )
    assert exchange.body == b""


def test_request_is_one_write():
    """The whole request, head and body, leaves in a single transport.write."""
    wire = Wire()
    client = wire.client()
    success(wire.forward(client))  # Opens the connection, which then goes idle.
    transport = wire.connection(0).transport
    writes: list[bytes] = []
    original = transport.write
    transport.write = lambda data: (writes.append(data), original(data))[1]
    success(wire.forward(client, b"POST", b"/openstack/latest/password", PROXY_HEADERS, b"pw"))
    assert wire.connections == 1
    second = wire.received[1]
    assert writes == [second.head + b"pw"]
    assert second.head.endswith(b"\r\nContent-Length: 2\r\n\r\n")


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
        b"/a?",
        b"/a;",
        b"/a?&",
        b"/%zz%",
    ],
)
def test_target_reaches_nova_byte_exact(target):
    """Path and query, percent-escapes, empty queries and parameters included, are sent
    exactly as the instance sent them (no decoding, re-quoting or normalising)."""
    wire = Wire()
    success(wire.forward(wire.client(), target=target))
    assert wire.received[0].request_line == b"GET " + target + b" HTTP/1.1"


@pytest.mark.parametrize(
    "target, sent",
    [(b"/a#frag", b"/a"), (b"/a?#", b"/a?"), (b"/a?x=1#f#g", b"/a?x=1"), (b"/#", b"/")],
)
def test_fragment_is_not_sent(target, sent):
    """A fragment never belongs on a request line: it is dropped, the rest kept exact."""
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
        b"#/a",
        b"/a b",
        b"/a\r\nX: y",
        b"/a\x00",
        b"/caf\xc3\xa9",
    ],
)
def test_target_not_in_origin_form_is_refused(target):
    """A target that is not origin form, or holds bytes no request line may, fails
    with ValueError before anything is sent or queued."""
    wire = Wire()
    client = wire.client()
    exc = failure(wire.forward(client, target=target), ValueError)
    assert "origin form" in str(exc)
    assert wire.connections == 0
    assert client.in_flight == 0 and client.queued == 0


@pytest.mark.parametrize("method", [b"GET /x HTTP/1.1\r\n", b"", b"G T", b"GET\x00"])
def test_invalid_method_is_refused_and_takes_no_slot(method):
    """A method that is not an HTTP token fails with ValueError, before taking a slot."""
    wire = Wire()
    client = wire.client(max_in_flight=1)
    exc = failure(wire.forward(client, method=method), ValueError)
    assert "method" in str(exc)
    assert (client.in_flight, wire.connections) == (0, 0)
    success(wire.forward(client))


@pytest.mark.parametrize(
    "name",
    [
        b"Host",
        b"content-length",
        b"Transfer-Encoding",
        b"Connection",
        b"KEEP-ALIVE",
        b"te",
        b"Upgrade",
        b"Trailer",
        b"Proxy-Connection",
    ],
)
def test_headers_owned_by_the_client_are_refused(name):
    """Host and framing headers come from the client; a caller supplying one gets
    ValueError rather than a duplicated or contradictory header."""
    wire = Wire()
    exc = failure(wire.forward(wire.client(), headers=PROXY_HEADERS + [(name, b"1")]), ValueError)
    assert repr(name) in str(exc)
    assert wire.connections == 0


@pytest.mark.parametrize(
    "name, value",
    [
        (b"X-Instance-ID-Signature", SIGNATURE + b"\r\nX-Injected: 1"),
        (b"X-Instance-ID-Signature", SIGNATURE + b"\n"),
        (b"X-Instance-ID-Signature", SIGNATURE + b"\x00"),
        (b"X-Instance-ID-Signature", SIGNATURE + b"\x7f"),
        (b"X Bad", b"1"),
        (b"X-Bad:", b"1"),
        (b"", b"1"),
        (b"X-Bad\r\nX-Other", b"1"),
    ],
)
def test_headers_that_would_break_the_request_are_refused(name, value):
    """A header name that is not a token, or a value with CR, LF, NUL or another
    control, fails with ValueError naming the header but never showing the value."""
    wire = Wire()
    headers = PROXY_HEADERS[:3] + [(name, value)]
    exc = failure(wire.forward(wire.client(), headers=headers), ValueError)
    assert SIGNATURE.decode() not in str(exc)
    assert wire.connections == 0


def test_header_values_may_hold_any_visible_bytes():
    """Spaces, tabs and bytes over 0x7f in a value are sent as they are."""
    wire = Wire()
    headers = [(b"X-Forwarded-For", b"10.0.0.5, \t10.0.0.6 \xff")]
    success(wire.forward(wire.client(), headers=headers))
    assert wire.received[0].headers[1] == (b"x-forwarded-for", b"10.0.0.5, \t10.0.0.6 \xff")


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"GET", b"PATCH", b"DELETE"])
def test_body_sent_byte_exact_with_content_length(method):
    """A non-empty body goes out for any method, byte-exact, framed by Content-Length
    (not chunked), after the caller's headers."""
    body = b'{"password": "x"}\r\n\x00\xff\x1f\x8b'
    wire = Wire()
    target = b"/openstack/latest/password"
    success(wire.forward(wire.client(), method=method, target=target, body=body))
    [exchange] = wire.received
    assert exchange.request_line == method + b" /openstack/latest/password HTTP/1.1"
    assert exchange.body == body
    assert exchange.headers[-1] == (b"content-length", b"%d" % len(body))
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
    "base_url, host",
    [
        ("http://127.0.0.1:8775", b"127.0.0.1:8775"),
        ("http://nova.example", b"nova.example"),
        ("http://nova.example:80/", b"nova.example"),
        ("http://nova.example:8080", b"nova.example:8080"),
        ("http://[fd00::1]:8775", b"[fd00::1]:8775"),
        ("http://NOVA.Example:8775", b"nova.example:8775"),
    ],
)
def test_host_header_on_the_wire(base_url, host):
    """Host is the configured host, lower-cased, with the port only when not the
    scheme's default, an IPv6 literal in brackets (the memory reactor resolves every
    name to 127.0.0.1)."""
    wire = Wire()
    success(wire.forward(wire.client(base_url), headers=[]))
    assert (
        wire.received[0].head == b"GET /latest/meta-data/ HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    )


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
        "http://nova/a b",
    ],
)
def test_bad_base_url(base_url):
    """A base URL that is not http(s)://host[:port][/prefix] is refused at construction."""
    with pytest.raises(ValueError):
        Wire().client(base_url)


@pytest.mark.parametrize(
    "options", [dict(timeout=0), dict(connect_timeout=-1), dict(pool_size=0), dict(max_in_flight=0)]
)
def test_bad_limits(options):
    """Timeouts must be positive, the pool and the slots at least 1."""
    with pytest.raises(ValueError):
        Wire().client(**options)


# --- HTTPS -----------------------------------------------------------------------------


@implementer(IPolicyForHTTPS)
class CountingPolicy:
    """An HTTPS policy trusting C{ca} that counts the connection creators asked of it."""

    def __init__(self, ca: trustme.CA | None = None) -> None:
        self.asked: list[tuple[bytes, int]] = []
        self._trust = Certificate.loadPEM(ca.cert_pem.bytes()) if ca else None

    def creatorForNetloc(self, hostname, port):
        self.asked.append((hostname, port))
        if self._trust is None:
            return optionsForClientTLS(hostname.decode("ascii"))
        return optionsForClientTLS(hostname.decode("ascii"), trustRoot=self._trust)


def _server_tls(ca: trustme.CA, name: str) -> CertificateOptions:
    cert = ca.issue_cert(name)
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return CertificateOptions(
        privateKey=load_pem_private_key(cert.private_key_pem.bytes(), password=None),
        certificate=x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()),
    )


def test_https_on_the_wire_creator_built_once_and_connection_reused():
    """Over HTTPS (real TLS through the in-memory pipe), requests and answers are the
    same bytes; the policy is asked for one connection creator, for the configured host
    and port; one TLS connection carries every request; Host has no default port."""
    ca = trustme.CA()
    wire = Wire(tls=_server_tls(ca, "nova.example"))
    policy = CountingPolicy(ca)
    client = wire.client("https://nova.example", tls=policy)
    for i in range(3):
        response = success(wire.forward(client, target=b"/%d" % i))
        assert (response.status, response.body) == (200, b"ok")
    assert policy.asked == [(b"nova.example", 443)]
    assert wire.connections == 1
    assert [e.head.split(b"\r\n")[:2] for e in wire.received] == [
        [b"GET /%d HTTP/1.1" % i, b"Host: nova.example"] for i in range(3)
    ]
    closed = client.close()
    wire.flush()
    success(closed)


def test_https_certificate_for_another_name_is_unreachable():
    """A trusted certificate for another name: NovaUnreachable, saying TLS and why."""
    ca = trustme.CA()
    wire = Wire(tls=_server_tls(ca, "other.example"))
    client = wire.client("https://nova.invalid:8775", tls=CountingPolicy(ca))
    exc = failure(wire.forward(client), NovaUnreachable)
    assert str(exc).startswith(f"TLS with {THERE} failed: the certificate does not match")
    assert wire.received == []
    assert client.in_flight == 0


def test_https_untrusted_certificate_is_unreachable():
    """A certificate from a CA we do not trust: NovaUnreachable, saying TLS."""
    wire = Wire(tls=_server_tls(trustme.CA(), "nova.invalid"))
    client = wire.client("https://nova.invalid:8775", tls=CountingPolicy(trustme.CA()))
    exc = failure(wire.forward(client), NovaUnreachable)
    assert str(exc).startswith(f"TLS with {THERE} failed: ")
    assert "certificate verify failed" in str(exc)
    assert SIGNATURE.decode() not in str(exc)


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
        (200, b"OK"),
        (201, b"Created"),
        (301, b"Moved Permanently"),
        (400, b"Bad Request"),
        (401, b"Unauthorized"),
        (403, b"Forbidden"),
        (404, b"Not Found"),
        (405, b"Method Not Allowed"),
        (409, b"Conflict"),
        (413, b"Payload Too Large"),
        (418, b"I'm a teapot, really"),
        (500, b"Internal Server Error"),
        (502, b"Bad Gateway"),
        (503, b"Service Unavailable"),
        (504, b"Gateway Timeout"),
        (599, b""),
    ],
)
def test_any_status_returned_as_is(status, reason):
    """Every status comes back with Nova's own reason phrase, headers and body; none is
    an error."""
    body = b"<html>%d</html>" % status
    raw = b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n\r\n%s" % (status, reason, len(body), body)
    wire = Wire(reply=lambda e: raw)
    response = success(wire.forward(wire.client()))
    assert response == NovaResponse(
        status=status, reason=reason, headers=((b"Content-Length", b"%d" % len(body)),), body=body
    )


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses(status):
    """204 and 304 come back with an empty body, and the connection is kept."""
    wire = Wire(reply=lambda e: b'HTTP/1.1 %d Whatever\r\nETag: "x"\r\n\r\n' % status)
    client = wire.client()
    response = success(wire.forward(client))
    assert (response.status, response.reason, response.body) == (status, b"Whatever", b"")
    assert response.headers == ((b"ETag", b'"x"'),)
    success(wire.forward(client))
    assert wire.connections == 1


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
        (b"Content-Length", b"%d" % len(payload)),
    )


def test_chunked_body_is_dechunked_and_trailers_dropped():
    """A chunked response comes back as the joined body; chunk extensions and trailer
    fields are not part of the answer; the connection is kept."""
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    wire = Wire(reply=lambda e: raw)
    client = wire.client()
    response = success(wire.forward(client))
    assert response.body == b"hello world"
    assert response.headers == ((b"Transfer-Encoding", b"chunked"), (b"X-A", b"1"))
    success(wire.forward(client))
    assert wire.connections == 1


def test_body_delimited_by_close_is_complete():
    """No Content-Length, not chunked: the body runs until Nova closes, and is then
    complete (legal HTTP/1.1)."""
    wire = Wire(reply=lambda e: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of")
    client = wire.client()
    d = wire.forward(client)
    no_result(d)
    wire.servers[0].transport.write(b" it")
    wire.servers[0].transport.loseConnection()
    wire.flush()
    response = success(d)
    assert response.body == b"all of it"
    assert client.in_flight == 0 and client.pool.idle == 0


def test_response_headers_raw_names_and_order_kept():
    """Headers come back exactly as Nova sent them: names as spelled, in wire order,
    repeats where they appeared, connection headers included (the relay drops them);
    values without surrounding whitespace."""
    raw = (
        b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nX-Openstack-Request-Id: req-1\r\n"
        b"Set-Cookie: b=2\r\ncontent-TYPE:text/plain  \r\nKeep-Alive: timeout=5\r\n"
        b'Connection: keep-alive\r\nContent-Length: 0\r\nETag:\t"x"\r\n\r\n'
    )
    wire = Wire(reply=lambda e: raw)
    response = success(wire.forward(wire.client()))
    assert response.headers == (
        (b"set-cookie", b"a=1"),
        (b"X-Openstack-Request-Id", b"req-1"),
        (b"Set-Cookie", b"b=2"),
        (b"content-TYPE", b"text/plain"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Connection", b"keep-alive"),
        (b"Content-Length", b"0"),
        (b"ETag", b'"x"'),
    )


def test_head_keeps_content_length_and_has_no_body():
    """The answer to HEAD keeps Content-Length (it describes the resource) and has no
    body. The connection is not reused after a HEAD (the parser stops at its head)."""
    wire = Wire(reply=lambda e: b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    client = wire.client()
    response = success(wire.forward(client, method=b"HEAD"))
    assert response == NovaResponse(200, b"OK", ((b"Content-Length", b"1234"),), b"")
    assert wire.pumps[0].clientIO.disconnected
    wire.reply = lambda e: OK
    assert success(wire.forward(client)).body == b"ok"
    assert wire.connections == 2


def test_interim_responses_are_skipped():
    """A 100 Continue before the answer is not the answer."""
    wire = Wire(reply=lambda e: b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    response = success(wire.forward(wire.client(), method=b"POST", body=b"x"))
    assert (response.status, response.body) == (200, b"ok")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        OK + b"HTTP/1.1 200 OK\r\n",  # Bytes after the answer: out of step.
    ],
)
def test_answers_that_end_the_connection(answer):
    """After Connection: close, an HTTP/1.0 answer, or bytes after the answer, the
    connection is closed, not pooled; the next request opens a new one."""
    wire = Wire(reply=lambda e: answer)
    client = wire.client()
    assert success(wire.forward(client)).body == b"ok"
    assert wire.pumps[0].clientIO.disconnected
    assert client.pool.idle == 0
    success(wire.forward(client))
    assert wire.connections == 2


def test_announced_body_over_the_cap(monkeypatch):
    """A Content-Length over MAX_BODY_BYTES fails with NovaBadResponse and the
    connection is closed, not pooled."""
    monkeypatch.setattr(nova, "MAX_BODY_BYTES", 100)
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n" + b"x" * 101
    wire = Wire(reply=lambda e: big if e.request_line.startswith(b"GET /big ") else OK)
    client = wire.client()
    exc = failure(wire.forward(client, target=b"/big"), NovaBadResponse)
    assert str(exc) == f"{HERE} announced a 101-byte body; the limit is 100 bytes"
    assert wire.pumps[0].clientIO.disconnected
    assert client.in_flight == 0
    success(wire.forward(client))
    assert wire.connections == 2


def test_body_at_the_cap_is_fine(monkeypatch):
    """A body of exactly MAX_BODY_BYTES is accepted."""
    monkeypatch.setattr(nova, "MAX_BODY_BYTES", 100)
    wire = Wire(reply=lambda e: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100)
    assert success(wire.forward(wire.client())).body == b"x" * 100


@pytest.mark.parametrize(
    "framing",
    [
        b"Transfer-Encoding: chunked\r\n\r\n40\r\n"
        + b"x" * 64
        + b"\r\n40\r\n"
        + b"y" * 64
        + b"\r\n0\r\n\r\n",
        b"Connection: close\r\n\r\n" + b"z" * 101,
    ],
)
def test_streamed_body_over_the_cap(monkeypatch, framing):
    """A body that grows past MAX_BODY_BYTES without announcing it fails the same way."""
    monkeypatch.setattr(nova, "MAX_BODY_BYTES", 100)
    wire = Wire(reply=lambda e: b"HTTP/1.1 200 OK\r\n" + framing)
    client = wire.client()
    exc = failure(wire.forward(client), NovaBadResponse)
    assert str(exc) == f"{HERE} sent a body over the limit of 100 bytes"
    assert wire.pumps[0].clientIO.disconnected
    assert client.in_flight == 0


@pytest.mark.parametrize(
    "raw, detail",
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "Expected HTTP/"),
        (b"HTTP/1.1 20 OK\r\n\r\n", "Invalid"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "Duplicate"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Content-Length",
        ),
        (b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", "CR"),
        (b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n", "header value"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n", "101"),
        (b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n", "status 099"),
    ],
)
def test_unparsable_response(raw, detail):
    """Anything that is not strict HTTP/1.1 (ambiguous framing included) is
    NovaBadResponse naming the endpoint and the problem; the connection is dropped."""
    wire = Wire(reply=lambda e: Answer(raw))
    client = wire.client()
    exc = failure(wire.forward(client), NovaBadResponse)
    assert str(exc).startswith(f"{HERE} sent an invalid response: ")
    assert detail in str(exc)
    assert wire.pumps[0].clientIO.disconnected
    assert client.in_flight == 0


def test_closed_before_responding():
    """Nova closing a new connection without a response is NovaUnreachable (no retry:
    the connection was not a reused one)."""
    wire = Wire(reply=lambda e: Answer(b"", close=True))
    exc = failure(wire.forward(wire.client()), NovaUnreachable)
    assert str(exc) == f"{HERE} closed the connection before responding"
    assert wire.connections == 1


def test_closed_in_the_middle_of_the_body():
    """A body cut short of its Content-Length is NovaUnreachable, saying so."""
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    wire = Wire(reply=lambda e: Answer(raw, close=True))
    exc = failure(wire.forward(wire.client()), NovaUnreachable)
    assert str(exc) == f"{HERE} closed the connection in the middle of the response"


def test_closed_in_the_middle_of_the_head():
    """A head cut short is NovaUnreachable too (not a parse error)."""
    wire = Wire(reply=lambda e: Answer(b"HTTP/1.1 200 OK\r\nContent-Le", close=True))
    exc = failure(wire.forward(wire.client()), NovaUnreachable)
    assert "in the middle of the response" in str(exc)


@pytest.mark.parametrize(
    "exc, started, text",
    [
        (
            SSL.Error([("SSL routines", "", "certificate verify failed")]),
            False,
            f"TLS with {HERE} failed: certificate verify failed",
        ),
        (
            SSL.Error([("SSL routines", "", "tlsv13 alert certificate required")]),
            False,
            f"TLS with {HERE} failed: tlsv13 alert certificate required",
        ),
        (
            VerificationError(errors=["mismatch"]),
            False,
            f"TLS with {HERE} failed: the certificate does not match the host",
        ),
        (error.ConnectionLost(), False, f"{HERE} closed the connection before responding"),
        (
            error.ConnectionLost(),
            True,
            f"{HERE} closed the connection in the middle of the response",
        ),
        (
            error.ConnectionDone(),
            True,
            f"{HERE} closed the connection in the middle of the response",
        ),
    ],
)
def test_connection_lost_reasons(exc, started, text):
    """However the connection ends (as Twisted's TCP or TLS layer reports it) before
    the answer is complete, the request fails with NovaUnreachable saying what and
    where, never the signature."""
    wire = Wire(reply=lambda e: b"HTTP/1.1 200 OK\r\n" if started else None)
    client = wire.client()
    d = wire.forward(client)
    no_result(d)
    wire.pumps[0].client.connectionLost(Failure(exc))
    message = str(failure(d, NovaUnreachable))
    assert message.startswith(text)
    assert SIGNATURE.decode() not in message
    assert client.in_flight == 0
    assert wire.reactor.getDelayedCalls() == []


# --- Pool, keep-alive, retries -----------------------------------------------------------


def test_pool_is_sized_and_quiet():
    """The pool keeps pool_size idle connections for CACHED_CONNECTION_TIMEOUT (4 s)
    and builds connections with a factory that does not log."""
    client = Wire().client(pool_size=17, max_in_flight=40)
    pool = client.pool
    assert pool.size == 17
    assert pool.idle_timeout == CACHED_CONNECTION_TIMEOUT == 4.0
    assert pool.factory.noisy is False
    assert pool.idle == 0


def test_connect_timeout_is_passed_to_the_connection_attempt():
    """connect_timeout bounds each TCP connection attempt."""
    wire = Wire()
    client = wire.client(connect_timeout=2.5)
    client.forward(b"GET", b"/", [], b"")
    assert wire.reactor.tcpClients[0][:2] == ("127.0.0.1", 8775)
    assert wire.reactor.tcpClients[0][3] == 2.5
    wire.flush()


def test_keep_alive_reuses_one_connection_and_close_releases_it():
    """20 sequential requests share one connection, each answered in turn; close()
    closes it and leaves nothing scheduled on the reactor."""
    wire = Wire(
        reply=lambda e: (
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
            % (len(e.request_line), e.request_line)
        )
    )
    client = wire.client()
    for i in range(20):
        response = success(wire.forward(client, target=b"/%d" % i))
        assert response.body == b"GET /%d HTTP/1.1" % i
    assert (wire.connections, len(wire.received)) == (1, 20)
    assert {e.connection for e in wire.received} == {0}
    assert client.pool.idle == 1
    assert wire.reactor.getDelayedCalls()  # The idle timer.
    closed = client.close()
    no_result(closed)
    wire.flush()
    success(closed)
    assert wire.pumps[0].clientIO.disconnected
    assert wire.reactor.getDelayedCalls() == []
    assert client.pool.idle == 0


def test_idle_connection_expires():
    """A connection idle for CACHED_CONNECTION_TIMEOUT is closed; the next request opens
    a new one."""
    wire = Wire()
    client = wire.client()
    success(wire.forward(client))
    wire.reactor.advance(CACHED_CONNECTION_TIMEOUT - 0.001)
    wire.flush()
    assert not wire.pumps[0].clientIO.disconnected
    wire.reactor.advance(0.001)
    wire.flush()
    assert wire.pumps[0].clientIO.disconnected
    assert wire.reactor.getDelayedCalls() == []
    success(wire.forward(client))
    assert wire.connections == 2


def test_each_idle_connection_expires_on_its_own_time():
    """Two connections going idle at t=0 and t=3 close at t=4 and t=7; one that is
    reused meanwhile starts its idle time again."""
    pending: list[Exchange] = []
    wire = Wire(reply=lambda e: pending.append(e))
    client = wire.client()
    first, second = wire.forward(client), wire.forward(client)
    assert wire.connections == 2
    wire.servers[0].transport.write(OK)
    wire.flush()
    success(first)
    wire.reactor.advance(3)
    wire.servers[1].transport.write(OK)
    wire.flush()
    success(second)
    wire.reactor.advance(1)
    wire.flush()
    assert wire.pumps[0].clientIO.disconnected
    assert not wire.pumps[1].clientIO.disconnected
    wire.reactor.advance(2.5)  # t=6.5: reuse connection 1, idle again from now.
    third = wire.forward(client)
    wire.servers[1].transport.write(OK)
    wire.flush()
    success(third)
    wire.reactor.advance(3.9)
    wire.flush()
    assert not wire.pumps[1].clientIO.disconnected
    wire.reactor.advance(0.1)
    wire.flush()
    assert wire.pumps[1].clientIO.disconnected
    assert wire.reactor.getDelayedCalls() == []


def test_idle_connections_kept_up_to_pool_size():
    """When more connections go idle than pool_size, the oldest idle ones are closed."""
    pending: list[Exchange] = []
    wire = Wire(reply=lambda e: pending.append(e))
    client = wire.client(pool_size=2)
    requests = [wire.forward(client) for _ in range(4)]
    assert wire.connections == 4
    for server in wire.servers:
        server.transport.write(OK)
    wire.flush()
    for d in requests:
        success(d)
    assert client.pool.idle == 2
    assert [pump.clientIO.disconnected for pump in wire.pumps] == [True, True, False, False]
    # The newest idle connection is reused first.
    d = wire.forward(client)
    assert pending[-1].connection == 3
    wire.servers[3].transport.write(OK)
    wire.flush()
    success(d)


def test_server_closed_idle_connection_is_not_reused():
    """A connection Nova closed while it was idle leaves the pool at once; the next
    request opens a new one (no failed attempt, no retry needed)."""
    wire = Wire()
    client = wire.client()
    success(wire.forward(client))
    wire.servers[0].transport.loseConnection()
    wire.flush()
    assert client.pool.idle == 0
    success(wire.forward(client))
    assert wire.connections == 2
    assert [e.connection for e in wire.received] == [0, 1]


def test_unsolicited_bytes_on_an_idle_connection_drop_it():
    """Bytes arriving on an idle connection mean it is out of step: it is dropped."""
    wire = Wire()
    client = wire.client()
    success(wire.forward(client))
    wire.servers[0].transport.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    wire.flush()
    assert wire.pumps[0].clientIO.disconnected
    assert client.pool.idle == 0
    success(wire.forward(client))
    assert wire.connections == 2


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_reused_connection_closed_before_answering_is_retried_once(method):
    """Nova closing a reused idle connection just as a GET or HEAD goes out (the race
    the idle timeout makes rare): the request is sent again, once, on a new connection."""
    seen: list[Exchange] = []

    def reply(e: Exchange):
        seen.append(e)
        return Answer(b"", close=True) if len(seen) == 2 else OK

    wire = Wire(reply=reply)
    client = wire.client()
    success(wire.forward(client))
    response = success(wire.forward(client, method=method, target=b"/again"))
    assert response.status == 200
    assert [(e.connection, e.request_line) for e in seen] == [
        (0, b"GET /latest/meta-data/ HTTP/1.1"),
        (0, method + b" /again HTTP/1.1"),
        (1, method + b" /again HTTP/1.1"),
    ]
    assert client.in_flight == 0


def test_retry_happens_only_once():
    """If the new connection closes too, the request fails."""
    seen: list[Exchange] = []

    def reply(e: Exchange):
        seen.append(e)
        return OK if len(seen) == 1 else Answer(b"", close=True)

    wire = Wire(reply=reply)
    client = wire.client()
    success(wire.forward(client))
    exc = failure(wire.forward(client), NovaUnreachable)
    assert str(exc) == f"{HERE} closed the connection before responding"
    assert [e.connection for e in seen] == [0, 0, 1]
    assert wire.connections == 2


@pytest.mark.parametrize(
    "method, body", [(b"POST", b"pw"), (b"POST", b""), (b"PUT", b"x"), (b"GET", b"with a body")]
)
def test_reused_connection_closed_before_answering_is_not_retried_for_other_requests(method, body):
    """A POST (or anything but a bodiless GET or HEAD) is never sent twice: the close
    is NovaUnreachable."""
    seen: list[Exchange] = []

    def reply(e: Exchange):
        seen.append(e)
        return Answer(b"", close=True) if len(seen) == 2 else OK

    wire = Wire(reply=reply)
    client = wire.client()
    success(wire.forward(client))
    exc = failure(wire.forward(client, method=method, body=body), NovaUnreachable)
    assert str(exc) == f"{HERE} closed the connection before responding"
    assert len(seen) == 2 and wire.connections == 1


def test_reused_connection_closed_mid_answer_is_not_retried():
    """Once any byte of the answer arrived, a GET is not retried either."""
    seen: list[Exchange] = []

    def reply(e: Exchange):
        seen.append(e)
        return Answer(b"HTTP/1.1 200 OK\r\n", close=True) if len(seen) == 2 else OK

    wire = Wire(reply=reply)
    client = wire.client()
    success(wire.forward(client))
    exc = failure(wire.forward(client), NovaUnreachable)
    assert "in the middle of the response" in str(exc)
    assert wire.connections == 1


def test_interoperates_with_twisted_web():
    """Against a real twisted.web server: it parses what we send (path, query, headers,
    body) and we parse what it answers, over one kept-alive connection."""
    seen = []

    class Meta(Resource):
        isLeaf = True

        def render(self, request):
            seen.append((request, request.content.read()))
            request.setHeader(b"Content-Type", b"application/json")
            return b'{"uuid": "x"}'

    site = Site(Meta())
    site.log = lambda request: None
    wire = Wire(site=site)
    client = wire.client()
    target = b"/openstack/latest/meta%2Fdata.json?a=1&a=2"
    for _ in range(2):
        response = success(wire.forward(client, b"POST", target, PROXY_HEADERS, b"pw"))
        assert (response.status, response.body) == (200, b'{"uuid": "x"}')
        assert (b"Content-Type", b"application/json") in response.headers
    assert wire.connections == 1
    request, body = seen[0]
    assert request.uri == target
    assert request.args == {b"a": [b"1", b"2"]}
    assert request.requestHeaders.getRawHeaders(b"X-Instance-ID-Signature") == [SIGNATURE]
    assert request.requestHeaders.getRawHeaders(b"Accept-Encoding") is None
    assert body == b"pw"
    closed = client.close()
    wire.flush()
    success(closed)


# --- Concurrency, timeouts, cancellation --------------------------------------------------


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
    assert (pending[-1].request_line, pending[-1].connection) == (b"GET /2 HTTP/1.1", 0)

    wire.servers[1].transport.write(OK)
    wire.servers[0].transport.write(OK)
    wire.flush()
    assert success(second).body == success(third).body == b"ok"
    assert (client.in_flight, client.queued) == (0, 0)
    closed = client.close()
    wire.flush()
    success(closed)


def test_queued_requests_keep_their_order():
    """Requests waiting for a slot are sent in the order they came."""
    pending: list[Exchange] = []
    wire = Wire(reply=lambda e: pending.append(e))
    client = wire.client(max_in_flight=1)
    requests = [wire.forward(client, target=b"/%d" % i) for i in range(4)]
    for i in range(4):
        assert pending[-1].request_line == b"GET /%d HTTP/1.1" % i
        wire.servers[0].transport.write(OK)
        wire.flush()
        success(requests[i])
    assert wire.connections == 1


def test_timeout_when_nova_never_answers():
    """No response within `timeout` fails with NovaTimeout exactly then; the connection
    is aborted, not pooled, and the slot freed."""
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
    assert client.in_flight == 0 and client.pool.idle == 0
    assert wire.reactor.getDelayedCalls() == []


def test_late_answer_after_timeout_is_ignored():
    """An answer arriving after the timeout (before the abort took effect) changes
    nothing."""
    wire = Wire(reply=lambda e: None)
    client = wire.client(timeout=5)
    d = wire.forward(client)
    wire.reactor.advance(5)
    wire.servers[0].transport.write(OK)
    wire.flush()
    failure(d, NovaTimeout)
    assert client.pool.idle == 0


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


def test_timeout_while_queued():
    """A request that never gets a slot times out from the queue, leaving it."""
    wire = Wire(reply=lambda e: None)
    client = wire.client(timeout=5, max_in_flight=1)
    stuck = wire.forward(client)
    wire.reactor.advance(1)
    queued = wire.forward(client)
    wire.reactor.advance(4)  # t=5: the stuck one times out; the queued one is sent.
    wire.flush()
    failure(stuck, NovaTimeout)
    assert client.queued == 0
    no_result(queued)
    wire.reactor.advance(1)
    failure(queued, NovaTimeout)
    assert (client.in_flight, client.queued) == (0, 0)


def test_caller_cancel_aborts_and_frees_the_slot():
    """Cancelling forward()'s Deferred (the instance went away) aborts the request and
    fails it with CancelledError, not a Nova error."""
    wire = Wire(reply=lambda e: None)
    client = wire.client(max_in_flight=1)
    sent = wire.forward(client)
    queued = wire.forward(client)
    queued.cancel()
    failure(queued, CancelledError)
    assert (client.in_flight, client.queued) == (1, 0)
    sent.cancel()
    wire.flush()
    failure(sent, CancelledError)
    assert wire.pumps[0].clientIO.disconnected
    assert (client.in_flight, client.queued) == (0, 0)
    assert client.pool.idle == 0
    assert wire.reactor.getDelayedCalls() == []


def test_cancel_while_connecting_stops_the_attempt():
    """Cancelling before the connection is up stops the attempt."""
    wire = Wire()
    client = wire.client()
    d = client.forward(b"GET", b"/", PROXY_HEADERS, b"")
    d.cancel()
    failure(d, CancelledError)
    assert wire.reactor.connectors[0].stoppedConnecting
    assert client.in_flight == 0
    assert wire.reactor.getDelayedCalls() == []


def test_cancel_after_the_answer_changes_nothing():
    """Cancelling a request that has its answer is a no-op; the connection stays pooled."""
    wire = Wire()
    client = wire.client()
    d = wire.forward(client)
    d.cancel()
    assert success(d).body == b"ok"
    assert client.pool.idle == 1


def test_connection_attempt_failures():
    """Refused and connect-timeout attempts fail with NovaUnreachable saying which,
    and leave nothing scheduled."""
    wire = Wire()
    client = wire.client(connect_timeout=3)
    for exc, text in [
        (error.ConnectionRefusedError(), f"{HERE} refused the connection"),
        (error.TimeoutError(), f"cannot connect to {HERE}: connect timeout after 3s"),
        (error.NoRouteError(), f"cannot connect to {HERE}: No route to host"),
        (RuntimeError("odd"), f"request to {HERE} failed: RuntimeError: odd"),
    ]:
        d = client.forward(b"GET", b"/", PROXY_HEADERS, b"")
        wire.reactor.tcpClients[-1][2].clientConnectionFailed(None, Failure(exc))
        # An IP address is connected to directly: the failure is reported at once.
        message = str(failure(d, NovaUnreachable))
        assert message.startswith(text)
        assert SIGNATURE.decode() not in message
    assert client.in_flight == 0
    assert wire.reactor.getDelayedCalls() == []


@implementer(IHostnameResolver)
class NoSuchHost:
    """A resolver that finds no address for any name."""

    def resolveHostName(
        self, receiver, hostName, portNumber=0, addressTypes=None, transportSemantics="TCP"
    ):
        from twisted.internet._resolver import HostResolution

        resolution = HostResolution(hostName)
        receiver.resolutionBegan(resolution)
        receiver.resolutionComplete()
        return resolution


def test_dns_failure():
    """A name that does not resolve is NovaUnreachable saying DNS, with the name."""
    wire = Wire()
    wire.reactor.installNameResolver(NoSuchHost())
    client = wire.client("http://nova.invalid:8775")
    exc = failure(wire.forward(client), NovaUnreachable)
    assert str(exc).startswith(f"cannot connect to {THERE}: DNS lookup failed")
    assert "nova.invalid" in str(exc)
    assert client.in_flight == 0


def test_requests_in_flight_share_one_timer_and_time_out_each_at_its_deadline():
    """Requests sent at t=0, 1 and 2 with the client's timeout are timed by one reactor
    timer, not one each; each still times out exactly at its own deadline, and one
    answered meanwhile is not timed out. A request given its own timeout (what is left of
    a deadline, on failover) times out at that."""
    wire = Wire(reply=lambda e: None)
    client = wire.client(timeout=5)
    first = wire.forward(client)
    wire.reactor.advance(1)
    second = wire.forward(client)
    wire.reactor.advance(1)
    third = wire.forward(client)
    assert len(wire.reactor.getDelayedCalls()) == 1
    own = client.forward(b"GET", b"/own", PROXY_HEADERS, b"", timeout=0.5)
    assert len(wire.reactor.getDelayedCalls()) == 2
    wire.reactor.advance(0.5)
    failure(own, NovaTimeout)
    wire.servers[1].transport.write(OK)
    wire.flush()
    success(second)
    wire.reactor.advance(2.25)  # t=4.75
    no_result(first)
    wire.reactor.advance(0.25)  # t=5
    failure(first, NovaTimeout)
    no_result(third)
    wire.reactor.advance(1.75)  # t=6.75
    no_result(third)
    wire.reactor.advance(0.25)  # t=7
    failure(third, NovaTimeout)
    wire.flush()
    assert client.in_flight == 0
    assert [c for c in wire.reactor.getDelayedCalls() if c.active()] == [
        c for c in wire.reactor.getDelayedCalls() if c.func == client.pool._expire
    ]
