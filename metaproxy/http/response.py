"""Writing answers to the namespace proxy: relayed Nova answers and the agent's own errors.

Every answer uses CRLF, carries C{Content-Length} and C{Connection: close} (haproxy's
C{http-server-close} makes one request per connection), and its body is exactly what
Nova sent unless C{gzip_decode} asks for upstream's 2025.2+ behaviour.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from collections.abc import Iterable
from http import HTTPStatus

__all__ = [
    "PASS_THROUGH_STATUSES",
    "error_response",
    "relay_response",
    "status_line",
]

#: Nova statuses relayed to the instance as they are (docs/upstream.md, "Response mapping").
PASS_THROUGH_STATUSES = frozenset({200, 400, 403, 404, 409, 500, 502, 503, 504})

# Hop-by-hop headers (RFC 9110 7.6.1) and the framing headers we set ourselves.
_DROPPED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

_STATUS_LINES = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode("ascii")) for s in HTTPStatus
}


def status_line(status: int, reason: bytes | None = None) -> bytes:
    """C{HTTP/1.1 <status> <reason>\\r\\n}; the standard phrase when C{reason} is empty."""
    if reason:
        return b"HTTP/1.1 %d %s\r\n" % (status, reason)
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % (status,)


@functools.lru_cache(maxsize=1024)
def error_response(status: int, message: str, *, retry_after: int | None = None) -> bytes:
    """The agent's own error answer, shaped like upstream's (a small HTML page served as
    C{text/plain}, as upstream does) but with CRLF and an exact length.

    The bytes of the most recent answers are kept: the same few (a 404 for an unknown
    caller in one namespace, 503 while Nova is away) come back many times in a row.
    """
    title = "%d %s" % (status, HTTPStatus(status).phrase)
    body = (
        f"<html>\r\n <head>\r\n  <title>{title}</title>\r\n </head>\r\n <body>\r\n"
        f"  <h1>{title}</h1>\r\n  {message}<br /><br />\r\n </body>\r\n</html>\r\n"
    ).encode("utf-8", "replace")
    head = [
        status_line(status),
        b"Content-Type: text/plain; charset=UTF-8\r\n",
        b"Connection: close\r\n",
    ]
    if retry_after is not None:
        head.append(b"Retry-After: %d\r\n" % (retry_after,))
    head.append(b"Content-Length: %d\r\n\r\n" % (len(body),))
    head.append(body)
    return b"".join(head)


def relay_response(
    status: int,
    reason: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
    *,
    head_only: bool = False,
    gzip_decode: bool = False,
) -> bytes:
    """Nova's answer for the instance: status, end-to-end headers, body byte-exact.

    @param head_only: the request was HEAD: keep Nova's Content-Length semantics by
        sending the length of C{body} but no body.
    @param gzip_decode: decompress a gzip body (magic C{1f 8b 08}) and drop its
        Content-Encoding, as upstream has done since 2025.2; off by default.
    """
    if gzip_decode and body[:3] == b"\x1f\x8b\x08":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError, zlib.error):
            pass  # not really gzip: relay as it is
        else:
            headers = [(n, v) for n, v in headers if n.lower() != b"content-encoding"]
    out = [status_line(status, reason)]
    length = b"%d" % (len(body),)
    for name, value in headers:
        lower = name.lower()
        if lower not in _DROPPED:
            out.append(b"%s: %s\r\n" % (name, value))
        elif head_only and lower == b"content-length" and value.isdigit():
            length = value  # a HEAD answer tells the length of the GET body
    out.append(b"Connection: close\r\nContent-Length: %s\r\n\r\n" % (length,))
    if not head_only:
        out.append(body)
    return b"".join(out)
