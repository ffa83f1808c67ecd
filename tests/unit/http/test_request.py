"""The request parser: bytes in, a Request or a RequestError out."""

import httptools
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from metaproxy.http.request import Request, RequestError, RequestParser

BASIC = (
    b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n"
    b"X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: r1\r\n\r\n"
)


def parse(data, **limits):
    return RequestParser(**limits).feed(data)


def error_of(data, **limits):
    with pytest.raises(RequestError) as info:
        parser = RequestParser(**limits)
        result = parser.feed(data)
        assert result is not None, "parser wanted more data instead of refusing"
    return info.value


def test_simple_get():
    """A haproxy-style GET parses into method, target, version and lower-cased headers."""
    request = parse(BASIC)
    assert request.method == b"GET"
    assert request.target == b"/latest/meta-data/"
    assert request.version == b"HTTP/1.1"
    assert request.values(b"x-forwarded-for") == [b"10.0.0.5"]
    assert request.values(b"x-neutron-router-id") == [b"r1"]
    assert request.body == b""


def test_byte_at_a_time():
    """The request is complete only when its last byte arrives, however it is split."""
    data = (
        b"POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 5\r\n"
        b"X-Forwarded-For: 10.0.0.5\r\n\r\nhello"
    )
    parser = RequestParser()
    results = [parser.feed(data[i : i + 1]) for i in range(len(data))]
    assert all(r is None for r in results[:-1])
    assert results[-1].body == b"hello"


def test_body_in_later_segment():
    """A POST whose body arrives after the headers (upstream truncates it) is whole."""
    parser = RequestParser()
    head = b"POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 11\r\n\r\n"
    assert parser.feed(head) is None
    assert parser.feed(b"hello ") is None
    assert parser.feed(b"world").body == b"hello world"


def test_large_request_over_4k():
    """A 9 KiB request (upstream reads only 4096 bytes) is read entirely."""
    filler = b"X-Filler: " + b"a" * 9000 + b"\r\n"
    request = parse(BASIC[:-2] + filler + b"\r\n")
    assert len(request.values(b"x-filler")[0]) == 9000


def test_query_and_escapes_kept_byte_exact():
    """The request-target is kept exactly as sent: escapes and query untouched."""
    request = parse(b"GET /latest/meta-data/%7Efoo?a=1&b=%20 HTTP/1.1\r\n\r\n")
    assert request.target == b"/latest/meta-data/%7Efoo?a=1&b=%20"


def test_absolute_form_becomes_origin_form():
    """An absolute-form target is reduced to its path and query."""
    assert parse(b"GET http://169.254.169.254/openstack?x HTTP/1.1\r\n\r\n").target == (
        b"/openstack?x"
    )
    assert parse(b"GET http://169.254.169.254 HTTP/1.1\r\n\r\n").target == b"/"


def test_chunked_body_decoded():
    """A chunked body is decoded (and trailers ignored)."""
    data = (
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    )
    parser = RequestParser()
    assert parser.feed(data[:40]) is None
    assert parser.feed(data[40:]).body == b"hello world"


@pytest.mark.parametrize(
    "data, status",
    [
        (b"GET /\r\n\r\n", 400),
        (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
        (b"G(T / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / FOO/1.1\r\n\r\n", 400),
        (b"GET nopath HTTP/1.1\r\n\r\n", 400),
        (b"GET /a\x80b HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nA: b\nC: d\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", 400),
    ],
)
def test_malformed_requests_refused(data, status):
    """Malformed request lines, headers and smuggling-prone framing get a 4xx/5xx."""
    assert error_of(data).status == status


def test_header_section_limit_431():
    """A header section over the limit is refused with 431, even before it ends."""
    big = b"GET / HTTP/1.1\r\nX: " + b"a" * 3000
    assert error_of(big, max_header_bytes=2048).status == 431
    assert error_of(big + b"\r\n\r\n", max_header_bytes=2048).status == 431


def test_header_count_limit_431():
    """More header fields than allowed is 431."""
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(20)) + b"\r\n"
    assert error_of(data, max_headers=10).status == 431


def test_body_limit_413():
    """A Content-Length or chunked body over the limit is 413, before it is read."""
    assert (
        error_of(b"POST / HTTP/1.1\r\nContent-Length: 2000\r\n\r\n", max_body_bytes=1024).status
        == 413
    )
    assert (
        error_of(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n", max_body_bytes=1024
        ).status
        == 413
    )


def test_incomplete_request_waits():
    """Half a request is not an error: the parser waits for more."""
    parser = RequestParser()
    assert parser.feed(b"GET / HTTP/1.1\r\nHost") is None
    assert parser.started


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_no_input_crashes_the_parser(data):
    """Arbitrary bytes give a Request, a RequestError or a wait, never another exception."""
    parser = RequestParser(max_header_bytes=512, max_headers=20, max_body_bytes=256)
    try:
        for i in range(0, len(data), 7):
            if parser.feed(data[i : i + 7]) is not None:
                break
    except RequestError as e:
        assert 400 <= e.status < 600 and e.message


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.from_regex(rb"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True),
            st.from_regex(rb"[ -~]{0,40}", fullmatch=True),
        ),
        max_size=15,
    ),
    st.binary(max_size=100),
    st.integers(min_value=1, max_value=50),
)
def test_well_formed_requests_round_trip(headers, body, split):
    """Any well-formed request, split anywhere, parses back to what was sent."""
    headers = [
        (n, v.strip(b" \t"))
        for n, v in headers
        if n.lower() not in (b"content-length", b"transfer-encoding")
    ]
    data = (
        b"POST /x?y HTTP/1.1\r\n"
        + b"".join(b"%s: %s\r\n" % h for h in headers)
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )
    parser = RequestParser()
    result = None
    for i in range(0, len(data), split):
        result = parser.feed(data[i : i + split])
        if result is not None:
            break
    assert result is not None and result.body == body and result.target == b"/x?y"
    assert [(n.lower(), v) for n, v in headers] == [
        h for h in result.headers if h[0] != b"content-length"
    ]


def test_forwarded_for_and_namespace_headers_picked_out():
    """The parser picks out the last X-Forwarded-For and the namespace headers (in
    order, names lower-cased) while it reads the fields; a Request built by hand works
    out the same from its headers."""
    data = (
        b"GET / HTTP/1.1\r\nx-forwarded-for: 10.9.9.9\r\nX-OVN-Network-ID: n2\r\n"
        b"Host: h\r\nX-Neutron-Router-ID:  r1 \r\nX-FORWARDED-FOR: 10.0.0.5\r\n\r\n"
    )
    request = parse(data)
    assert request.forwarded_for == b"10.0.0.5"
    assert request.namespace_headers == (
        (b"x-ovn-network-id", b"n2"),
        (b"x-neutron-router-id", b"r1"),
    )
    by_hand = Request(request.method, request.target, request.version, request.headers)
    assert by_hand == request
    assert parse(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").forwarded_for == b""
    assert parse(b"GET / HTTP/1.1\r\n\r\n").namespace_headers == ()


def test_header_count_limit_comes_before_a_malformed_field():
    """Too many fields is 431 even when one of them is also malformed (as before the
    fast path: the count is checked first)."""
    data = (
        b"GET / HTTP/1.1\r\n"
        + b"".join(b"H%d: v\r\n" % i for i in range(20))
        + b"Bad Name: x\r\n\r\n"
    )
    assert error_of(data, max_headers=10).status == 431
    assert error_of(data, max_headers=50).status == 400


def _field_by_field(lines):
    """The field checks as they were before the fast path (reference for the test
    below): the error message of the first malformed line, or the parsed fields."""
    import re

    token = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
    bad = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
    fields = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon:
            if line[:1] in (b" ", b"\t"):
                return "Obsolete line folding is not accepted."
            return "Malformed header line."
        if not token.match(name):
            if name[:1] in (b" ", b"\t"):
                return "Obsolete line folding is not accepted."
            return "Malformed header name."
        value = value.strip(b" \t")
        if bad.search(value) or b"\r" in line:
            return "Header value contains a control character."
        fields.append((name.lower(), value))
    return fields


# header lines made of a name, a colon (mostly) and a value, each mostly well-formed
_NAME_PARTS = [b"a", b"Z", b"-", b"_", b"~", b"9", b"X-Forwarded-For"] * 3 + [
    b" ",
    b"\t",
    b"(",
    b"\x80",
    b"\x00",
    b"\r",
    b"\n",
]
_VALUE_PARTS = [b"a", b" ", b"\t", b":", b"~", b"\x80", b"\xff", b"10.0.0.5"] * 3 + [
    b"\r",
    b"\n",
    b"\x00",
    b"\x01",
    b"\x1f",
    b"\x7f",
]
_LINES = st.lists(
    st.tuples(
        st.lists(st.sampled_from(_NAME_PARTS), max_size=4).map(b"".join),
        st.sampled_from([b":", b":", b":", b""]),
        st.lists(st.sampled_from(_VALUE_PARTS), max_size=6).map(b"".join),
    ).map(b"".join),
    max_size=6,
)


@settings(max_examples=500, deadline=None)
@given(_LINES)
@example([b"a:\x7f"])
@example([b"a: b\x00"])
@example([b"a:\x1f"])
@example([b"a:\x08"])
@example([b"a:\tb\t"])
@example([b"a: \x80\xff "])
@example([b"a: b\rc"])
@example([b"a: b\nc: d"])
@example([b" a: b"])
@example([b"a: b", b"\tfolded"])
@example([b": b"])
@example([b"a b: c"])
@example([b"a"])
def test_fields_accepted_and_refused_as_field_by_field(lines):
    """Whatever the header lines, the parser accepts exactly those the field-by-field
    checks accept, with the same fields, and refuses the others with the same message."""
    data = b"GET / HTTP/1.1\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    head = data[: data.find(b"\r\n\r\n")]  # where the parser will see the head end
    expected = _field_by_field(head.split(b"\r\n")[1:])
    try:
        request = RequestParser().feed(data)
    except RequestError as e:
        assert e.status == 400 and e.message == expected
    else:
        assert request.headers == tuple(expected)


def test_fields_are_only_looked_for_at_line_starts():
    """The field matcher starts only at the beginning of a line: a long malformed line is
    then read once, not once per byte (which made 16 KiB of token characters without a
    colon cost seconds). Malformed long lines are refused."""
    from metaproxy.http.request import _FIELDS

    assert _FIELDS.findall(b"xx a:b\r\n") == []
    assert _FIELDS.findall(b"a:b\r\nc:d\r\n") == [(b"a", b"b"), (b"c", b"d")]
    for line in (b"a" * 16000, b"a:" + b"b" * 16000 + b"\x00", b"a" * 16000 + b" :b"):
        data = b"GET / HTTP/1.1\r\n" + line + b"\r\n\r\n"
        assert error_of(data, max_header_bytes=20000).status == 400


def test_forwarded_for_fields_are_counted():
    """haproxy appends its own X-Forwarded-For field: the count tells whether the guest
    sent one too; a hand-built Request counts them the same way."""
    from metaproxy.http.request import Request

    one = parse(b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.5\r\n\r\n")
    two = parse(b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 10.0.0.5\r\n\r\n")
    assert (one.forwarded_for_count, two.forwarded_for_count) == (1, 2)
    assert two.forwarded_for == b"10.0.0.5"
    assert Request(b"GET", b"/", b"HTTP/1.1", two.headers).forwarded_for_count == 2


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\n",
        b"GET / HTTP/1.1\r\nHost: x\n",
        b"\n",
        b"GET / HTTP/1.1\r\nA: b\r\n\n",
    ],
)
def test_bare_lf_head_refused_as_soon_as_it_arrives(data):
    """A head whose lines end with a bare LF would never end: 400 at once (fed byte by
    byte as well), not a wait for the request timeout."""
    assert error_of(data).status == 400
    parser = RequestParser()
    with pytest.raises(RequestError) as e:
        for i in range(len(data)):
            parser.feed(data[i : i + 1])
    assert e.value.status == 400


# --- differential: the same requests through httptools (llhttp) -----------------------

#: methods llhttp knows (it refuses others; ours takes any token); CONNECT is left out,
#: its request-target is an authority, not a path
_METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE", b"PATCH"]
#: framing is generated on its own; Connection/Upgrade make llhttp hand the connection
#: over to another protocol (it stops parsing), which is not a parsing difference
_NOT_GENERATED = {b"content-length", b"transfer-encoding", b"connection", b"upgrade"}
_OWS = st.sampled_from([b"", b" ", b"\t", b"  \t "])


@st.composite
def _requests(draw):
    """A well-formed HTTP/1.x request in origin-form, as bytes, and what it holds."""
    method = draw(st.sampled_from(_METHODS))
    target = draw(st.from_regex(rb"/[\x21-\x7e]{0,60}", fullmatch=True))
    names = st.from_regex(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,24}", fullmatch=True).filter(
        lambda name: name.lower() not in _NOT_GENERATED
    )
    values = st.from_regex(
        rb"([\x21-\x7e\x80-\xff]([\t \x21-\x7e\x80-\xff]{0,30}[\x21-\x7e\x80-\xff])?)?",
        fullmatch=True,
    )
    fields = draw(st.lists(st.tuples(names, _OWS, values, _OWS), max_size=12))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    version = (
        b"HTTP/1.1" if framing == "chunked" else draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    )
    lines = [b"%s %s %s" % (method, target, version)]
    lines += [name + b":" + before + value + after for name, before, value, after in fields]
    if framing == "none":
        body = wire = b""
    elif framing == "length":
        body = wire = draw(st.binary(max_size=80))
        lines.append(b"Content-Length: %d" % len(body))
    else:
        chunks = draw(st.lists(st.binary(min_size=1, max_size=30), max_size=4))
        extension = draw(st.sampled_from([b"", b";name=value", b";x"]))
        body = b"".join(chunks)
        wire = b"".join(b"%x%s\r\n%s\r\n" % (len(c), extension, c) for c in chunks) + b"0\r\n\r\n"
        lines.append(b"Transfer-Encoding: chunked")
    data = b"\r\n".join(lines) + b"\r\n\r\n" + wire
    expected = [(name, value) for name, _, value, _ in fields]
    return data, method, target, version, expected, body


class _LlhttpRequest:
    """What httptools' callbacks report for one request."""

    def __init__(self):
        self.url = b""
        self.headers = []
        self.body = b""
        self.complete = False

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_body(self, body):
        self.body += body

    def on_message_complete(self):
        self.complete = True


@settings(max_examples=300, deadline=None)
@given(_requests(), st.integers(min_value=1, max_value=64))
def test_parses_as_httptools_does(request, split):
    """Both parsers, fed the same segments, agree on method, target, version, header
    names and values, and body.

    Only what must legitimately differ is normalised: header names are compared in lower
    case (field names are case-insensitive; ours lower-cases them), and a value loses its
    trailing white space on the httptools side (optional white space around a field value
    is not part of it; llhttp drops the leading OWS and leaves the trailing to its user).
    """
    data, method, target, version, fields, body = request
    segments = [data[i : i + split] for i in range(0, len(data), split)]
    ours = RequestParser()
    results = [ours.feed(segment) for segment in segments]
    assert results[:-1] == [None] * (len(results) - 1)
    mine = results[-1]
    seen = _LlhttpRequest()
    theirs = httptools.HttpRequestParser(seen)
    for segment in segments:
        theirs.feed_data(segment)
    assert seen.complete and mine is not None
    assert mine.method == theirs.get_method() == method
    assert mine.target == seen.url == target
    assert mine.version == b"HTTP/" + theirs.get_http_version().encode() == version
    their_headers = [(name.lower(), value.rstrip(b" \t")) for name, value in seen.headers]
    assert list(mine.headers) == their_headers
    assert [(name.lower(), value) for name, value in fields] == [
        h for h in mine.headers if h[0] not in (b"content-length", b"transfer-encoding")
    ]
    assert mine.body == seen.body == body
