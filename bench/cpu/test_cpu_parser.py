"""CPU per request of the request parser (L{metaproxy.http.request.RequestParser}).

    make bench-cpu                     # or: .venv/bin/python -m pytest bench/cpu --benchmark-only
    make bench-cpu ARGS='--benchmark-autosave'       # keep this run in .benchmarks/
    make bench-cpu ARGS='--benchmark-compare'        # against the last one kept

Each benchmark parses one whole request from a fresh parser, as each connection does,
and checks what came out, so a parser that got faster by getting wrong fails here.
"""

from __future__ import annotations

from bench.load.fleet import make_fleet
from bench.load.targets import haproxy_headers, request_bytes
from metaproxy.http.request import RequestParser

_INSTANCE = make_fleet(2, 1).instances[0]

#: What haproxy forwards for cloud-init: its headers, Connection: close, the namespace
#: header and X-Forwarded-For last.
TYPICAL = request_bytes(
    "/openstack/2018-08-27/meta_data.json", haproxy_headers(_INSTANCE), keepalive=False
)

#: The same with a 9 KiB header (upstream reads only the first 4 KiB).
LARGE = TYPICAL[:-2] + b"X-Filler: " + b"f" * 9216 + b"\r\n\r\n"

#: A password POST with a chunked body, as a client without Content-Length sends it.
_PASSWORD = b"p" * 128
CHUNKED = (
    b"POST /openstack/latest/password HTTP/1.1\r\nHost: 169.254.169.254\r\n"
    b"Transfer-Encoding: chunked\r\n"
    + haproxy_headers(_INSTANCE)
    + b"\r\n"
    + b"40\r\n"
    + _PASSWORD[:64]
    + b"\r\n40;ext=1\r\n"
    + _PASSWORD[64:]
    + b"\r\n"
    + b"0\r\n\r\n"
)


def _parse(data: bytes):
    return RequestParser().feed(data)


def _check(request, target: bytes) -> None:
    assert request is not None and request.target == target
    assert request.forwarded_for == _INSTANCE.ip.encode()
    assert request.namespace_headers == (
        (_INSTANCE.namespace.kind.header, _INSTANCE.namespace.id.encode()),
    )


def test_parse_typical_haproxy_request(benchmark):
    request = benchmark(_parse, TYPICAL)
    _check(request, b"/openstack/2018-08-27/meta_data.json")
    assert len(request.headers) == 7


def test_parse_typical_request_in_three_segments(benchmark):
    cuts = (0, 40, 150, len(TYPICAL))
    segments = [TYPICAL[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]

    def parse_segments():
        parser = RequestParser()
        for segment in segments:
            request = parser.feed(segment)
        return request

    _check(benchmark(parse_segments), b"/openstack/2018-08-27/meta_data.json")


def test_parse_9k_request(benchmark):
    request = benchmark(_parse, LARGE)
    _check(request, b"/openstack/2018-08-27/meta_data.json")
    assert request.values(b"x-filler") == [b"f" * 9216]


def test_parse_chunked_request(benchmark):
    request = benchmark(_parse, CHUNKED)
    _check(request, b"/openstack/latest/password")
    assert request.body == _PASSWORD
