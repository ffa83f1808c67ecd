"""What the Nova client accepts, checked without I/O: the Nova URL it is given, and the
request heads it writes.

L{parse_base_url} splits the configured URL (L{check_url} says why one cannot be used,
for the configuration checks). L{REQUEST_HEAD} is the shape of a whole request head as
L{metaproxy.nova.client.NovaClient.forward} builds it, checked in one match on the hot
path; L{refusal} says which part of a refused request is wrong (the slow path).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = ["REQUEST_HEAD", "refusal", "check_url", "parse_base_url"]

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"

# A request-target in origin form, made only of printable ASCII without spaces.
_ORIGIN_FORM = re.compile(rb"/[\x21-\x7e]*")

# Headers the client owns: a caller supplying one would duplicate or contradict framing.
_RESERVED_HEADERS = (
    b"host",
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"keep-alive",
    b"te",
    b"trailer",
    b"upgrade",
    b"proxy-connection",
)

#: The whole request head as built by NovaClient.forward, checked in one pass: a token
#: method, a target without spaces or controls, caller headers with token names (none of
#: the reserved ones) and values without CR, LF, NUL or other controls.
REQUEST_HEAD = re.compile(
    _TOKEN
    + rb" /[\x21-\x7e]* HTTP/1\.1\r\nHost: [\x21-\x7e]+\r\n"
    + rb"(?:(?!(?i:"
    + b"|".join(re.escape(name) for name in _RESERVED_HEADERS)
    + rb"):)"
    + _TOKEN
    + rb": [\t\x20-\x7e\x80-\xff]*\r\n)*"
    + rb"(?:Content-Length: [0-9]+\r\n)?\r\n"
)
_METHOD = re.compile(_TOKEN)
_HEADER_NAME = re.compile(_TOKEN)
_HEADER_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


def refusal(method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]]) -> str:
    """Why L{metaproxy.nova.client.NovaClient.forward} refuses to send this request
    (the slow path)."""
    if _METHOD.fullmatch(method) is None:
        return f"invalid method: {method!r}"
    if _ORIGIN_FORM.fullmatch(target) is None:
        return f"request-target must be in origin form: {target!r}"
    for name, value in headers:
        if name.lower() in _RESERVED_HEADERS:
            return f"header {name!r} is set by NovaClient"
        if _HEADER_NAME.fullmatch(name) is None:
            return f"invalid header name: {name!r}"
        if _HEADER_VALUE.fullmatch(value) is None:
            # The value may hold a secret: name the header, not the value.
            return f"invalid bytes in the value of header {name!r}"
    return "invalid request"  # Not reached: one of the above failed.


def check_url(url: str) -> str | None:
    """Why C{url} cannot be a Nova endpoint (a sentence), or C{None} if it can."""
    try:
        parse_base_url(url)
    except ValueError as e:
        return str(e)
    return None


def parse_base_url(base_url: str) -> tuple[str, str, int, str]:
    """C{(scheme, host, port, path prefix)} of the configured Nova URL."""
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"invalid Nova URL {base_url!r}: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"Nova URL must be http:// or https://, not {base_url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"Nova URL has no host: {base_url!r}")
    if parts.username is not None or parts.query or parts.fragment:
        raise ValueError(f"Nova URL must be scheme://host[:port][/prefix]: {base_url!r}")
    try:
        host.encode("ascii")
        parts.path.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"Nova URL must be ASCII (use the IDNA form): {base_url!r}") from None
    if not _ORIGIN_FORM.fullmatch(parts.path.encode("ascii") or b"/"):
        raise ValueError(f"Nova URL path must be printable ASCII: {base_url!r}")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return parts.scheme, host, port, parts.path.rstrip("/")
