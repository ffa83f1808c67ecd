"""Unit tests for L{metaproxy.nova.response_parser.ResponseParser}, the sans-IO response parser.

Property tests (hypothesis) build valid responses of every framing (Content-Length,
chunked, until close, the head of a C{HEAD} answer, bodiless statuses, after interim
C{1xx}), cut them at arbitrary points, and check the parse is the same however the bytes
arrive; and that arbitrary or corrupted bytes never raise anything but L{ResponseError}
(which L{metaproxy.nova.client} turns into L{metaproxy.nova.client.NovaBadResponse}).
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaproxy.nova.response_parser import BodyTooLarge, NovaResponse, ResponseError, ResponseParser

LIMIT = 10_000

_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Headers whose meaning the generator controls itself (framing, persistence).
_CONTROLLED = {
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"upgrade",
    b"keep-alive",
    b"proxy-connection",
}
_VALUE_BYTES = list(range(0x21, 0x7F)) + list(range(0x80, 0x100))

names = (
    st.text(alphabet=_TOKEN_CHARS, min_size=1, max_size=24)
    .map(str.encode)
    .filter(lambda name: name.lower() not in _CONTROLLED)
)
# Field values: visible bytes (obs-text included) with inner spaces and tabs, none at
# either end (the parser trims those, as RFC 9110 says).
values = st.lists(
    st.lists(st.sampled_from(_VALUE_BYTES), min_size=1, max_size=12).map(bytes),
    max_size=4,
).flatmap(
    lambda words: st.lists(
        st.sampled_from([b" ", b"\t", b"  "]), min_size=len(words), max_size=len(words)
    ).map(lambda gaps: b"".join(w + g for w, g in zip(words, gaps, strict=False)).rstrip(b" \t"))
)
reasons = st.lists(
    st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)], min_size=1, max_size=10),
    max_size=4,
).map(lambda words: " ".join(words).encode())
bodies = st.binary(max_size=3000)


@attrs.frozen
class Case:
    """A valid response: its bytes, what the parser must make of them, and how."""

    raw: bytes
    expected: NovaResponse
    head: bool  # The request was HEAD.
    until_close: bool  # Complete only when the connection closes.
    keep_alive: bool


@st.composite
def responses(draw) -> Case:
    framing = draw(st.sampled_from(["length", "chunked", "close", "head", "bodiless"]))
    status = draw(
        st.sampled_from([204, 304])
        if framing == "bodiless"
        else st.integers(200, 599).filter(lambda s: s not in (204, 304))
    )
    reason = draw(reasons)
    headers = draw(st.lists(st.tuples(names, values), max_size=8))
    body = b"" if framing == "bodiless" else draw(bodies)
    interim = draw(st.lists(st.sampled_from([100, 102, 103]), max_size=2))

    head = b"HTTP/1.1 %d %s\r\n" % (status, reason) if reason else b"HTTP/1.1 %d \r\n" % status
    framed = list(headers)
    content = body
    if framing in ("length", "head"):
        framed.insert(draw(st.integers(0, len(framed))), (b"Content-Length", b"%d" % len(body)))
    elif framing == "chunked":
        framed.insert(draw(st.integers(0, len(framed))), (b"Transfer-Encoding", b"chunked"))
        cuts = sorted(draw(st.lists(st.integers(1, max(len(body) - 1, 1)), max_size=5)))
        pieces, start = [], 0
        for cut in [min(cut, len(body)) for cut in cuts] + [len(body)]:
            if cut > start:
                size = b"%x" % (cut - start)
                size = size.upper() if draw(st.booleans()) else size
                pieces.append(size + b"\r\n" + body[start:cut] + b"\r\n")
                start = cut
        trailers = draw(st.lists(st.tuples(names, values), max_size=2))
        content = (
            b"".join(pieces)
            + b"0\r\n"
            + b"".join(n + b": " + v + b"\r\n" for n, v in trailers)
            + b"\r\n"
        )
    elif framing == "close":
        framed.insert(draw(st.integers(0, len(framed))), (b"Connection", b"close"))
    fields = b"".join(n + b": " + v + b"\r\n" for n, v in framed)
    raw = b"".join(b"HTTP/1.1 %d Interim\r\n\r\n" % s for s in interim) + head + fields + b"\r\n"
    if framing != "head":
        raw += content
    expected = NovaResponse(status, reason, tuple(framed), b"" if framing == "head" else body)
    return Case(
        raw,
        expected,
        head=framing == "head",
        until_close=framing == "close",
        keep_alive=framing in ("length", "chunked", "bodiless"),
    )


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    """C{data} cut at C{cuts}, without empty pieces (a transport never delivers one)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def parse(parser: ResponseParser, chunks: list[bytes], until_close: bool) -> NovaResponse | None:
    """Feed C{chunks}; the response must come exactly with the last one (or at close)."""
    for i, chunk in enumerate(chunks):
        response = parser.feed(chunk)
        if response is not None:
            assert i == len(chunks) - 1, "complete before all its bytes arrived"
            return response
    return parser.eof() if until_close else None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=responses(), data=st.data())
def test_any_split_of_a_valid_response_parses_the_same(case, data):
    """However a valid response is cut into segments, the parse is the one intended:
    status, reason, raw headers in order, de-chunked body, and whether the connection
    may be reused."""
    cuts = data.draw(st.lists(st.integers(0, len(case.raw)), max_size=12))
    parser = ResponseParser()
    parser.expect(case.head, LIMIT)
    response = parse(parser, pieces(case.raw, cuts), case.until_close)
    assert response == case.expected
    assert parser.keep_alive is case.keep_alive
    assert parser.started


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=responses(), second=responses(), data=st.data())
def test_a_kept_alive_connection_parses_each_response_afresh(first, second, data):
    """One parser serves consecutive requests on a kept-alive connection: nothing of
    the first response leaks into the second."""
    parser = ResponseParser()
    parser.expect(first.head, LIMIT)
    assert parse(parser, [first.raw], first.until_close) == first.expected
    if not parser.keep_alive:
        return
    parser.expect(second.head, LIMIT)
    assert not parser.started
    cuts = data.draw(st.lists(st.integers(0, len(second.raw)), max_size=6))
    assert parse(parser, pieces(second.raw, cuts), second.until_close) == second.expected


def _check_garbage(raw: bytes, cuts: list[int], head: bool) -> None:
    parser = ResponseParser()
    parser.expect(head, LIMIT)
    for chunk in pieces(raw, cuts):
        try:
            response = parser.feed(chunk)
        except ResponseError as e:
            assert str(e)  # Something to put in the log line.
            assert parser.eof() is None
            return
        if response is not None:
            assert isinstance(response, NovaResponse) and 100 <= response.status <= 999
            return
    response = parser.eof()
    assert response is None or isinstance(response, NovaResponse)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=8), head=st.booleans()
)
def test_garbage_raises_only_response_error(raw, cuts, head):
    """Arbitrary bytes either parse, wait for more, or fail with ResponseError: never
    any other exception."""
    _check_garbage(raw, cuts, head)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=responses(), data=st.data())
def test_corrupted_responses_raise_only_response_error(case, data):
    """A valid response with bytes changed, inserted or removed: the same."""
    raw = bytearray(case.raw)
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(raw)))
        what = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = data.draw(st.sampled_from([0, 9, 10, 13, 32, 58, 48, 70, 127, 255]))
        if what == "insert" or where == len(raw):
            raw.insert(where, byte)
        elif what == "replace":
            raw[where] = byte
        else:
            del raw[where]
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=8))
    _check_garbage(bytes(raw), cuts, case.head)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=responses().filter(lambda c: len(c.expected.body) > 0), data=st.data())
def test_body_over_the_limit_is_refused_however_it_arrives(case, data):
    """A body over the limit fails with BodyTooLarge (announced or streamed, in any
    segments); a body at the limit is fine."""
    size = len(case.expected.body)
    parser = ResponseParser()
    parser.expect(case.head, size)
    assert parse(parser, [case.raw], case.until_close) == case.expected

    parser = ResponseParser()
    parser.expect(case.head, size - 1)
    cuts = data.draw(st.lists(st.integers(0, len(case.raw)), max_size=8))
    with pytest.raises(BodyTooLarge):
        parse(parser, pieces(case.raw, cuts), case.until_close)
    with pytest.raises(RuntimeError):
        parser.expect(False, LIMIT)  # Spent: the connection must not carry another.


# --- Particular cases -------------------------------------------------------------------


def _parse_one(raw: bytes, *, head: bool = False, limit: int = LIMIT) -> ResponseParser:
    parser = ResponseParser()
    parser.expect(head, limit)
    parser.feed(raw)
    return parser


def test_announced_length_over_the_limit_is_refused_before_the_body():
    """A Content-Length over the limit fails as soon as the head is complete."""
    parser = ResponseParser()
    parser.expect(False, 100)
    with pytest.raises(BodyTooLarge, match="^announced a 101-byte body; the limit is 100 bytes$"):
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n")


def test_head_answer_is_complete_at_its_head_and_ends_the_connection():
    """The answer to a HEAD has no body whatever Content-Length says; the parser cannot
    be reused after it."""
    parser = ResponseParser()
    parser.expect(True, LIMIT)
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n") is None
    response = parser.feed(b"\r\n")
    assert response == NovaResponse(200, b"OK", ((b"Content-Length", b"5"),), b"")
    assert parser.keep_alive is False
    with pytest.raises(RuntimeError):
        parser.expect(False, LIMIT)


def test_http_10_and_connection_close_end_the_connection():
    """An HTTP/1.0 answer without keep-alive, or Connection: close, is not reusable;
    HTTP/1.0 with Connection: keep-alive is."""
    ok = b"Content-Length: 1\r\n\r\nx"
    assert _parse_one(b"HTTP/1.0 200 OK\r\n" + ok).keep_alive is False
    assert _parse_one(b"HTTP/1.1 200 OK\r\nConnection: close\r\n" + ok).keep_alive is False
    assert _parse_one(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n" + ok).keep_alive is True


def test_bytes_after_the_response_end_the_connection():
    """A response followed by more bytes (valid or not) stands, but the connection is
    out of step and must not be reused."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
    for extra in (b"HTTP/1.1 200 OK\r\n", b"garbage\r\n\r\n", ok):
        parser = ResponseParser()
        parser.expect(False, LIMIT)
        assert parser.feed(ok + extra).body == b"x"
        assert parser.keep_alive is False


def test_incomplete_response_at_close():
    """At close, a response still missing bytes (head, Content-Length or chunked body)
    is not a response; nothing received is not either."""
    for raw in (
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
    ):
        parser = _parse_one(raw)
        assert parser.started
        assert parser.eof() is None
    parser = ResponseParser()
    parser.expect(False, LIMIT)
    assert not parser.started and parser.eof() is None


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
            "101 Switching Protocols",
        ),
        (b"HTTP/1.1 042 Odd\r\n\r\n", "status 042"),
        (b"ICY 200 OK\r\n\r\n", "sent an invalid response: "),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", "Duplicate"),
    ],
)
def test_responses_refused(raw, message):
    """Upgrades, statuses below 100 and ambiguous framing are ResponseErrors saying so."""
    parser = ResponseParser()
    parser.expect(False, LIMIT)
    with pytest.raises(ResponseError, match=message):
        parser.feed(raw)
    assert parser.eof() is None


@pytest.mark.parametrize(
    "host, kind",
    [
        ("192.0.2.10", "TCP4ClientEndpoint"),
        ("2001:db8::a", "TCP6ClientEndpoint"),
        ("nova.example", "HostnameEndpoint"),
    ],
)
def test_an_address_is_connected_to_directly_and_a_name_is_resolved(host, kind):
    from twisted.internet.testing import MemoryReactorClock

    from metaproxy.nova.connection import tcp_endpoint

    assert type(tcp_endpoint(MemoryReactorClock(), host, 8775, 2.0)).__name__ == kind
