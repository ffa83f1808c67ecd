"""Reading one HTTP/1.1 request from bytes: a strict, incremental, sans-IO parser.

The namespace proxy (haproxy) sends one request per connection. Unlike upstream's single
C{recv(4096)}, the whole request is read however it is segmented, with limits that answer
431 (header section too large or too many fields) and 413 (body too large). Framing that
could smuggle a second request past a proxy is refused with 400: Content-Length together
with Transfer-Encoding, duplicate or malformed Content-Length, a transfer coding other than
chunked, obsolete line folding, NUL or bare CR/LF in the header section (a head whose
lines end with a bare LF is refused as soon as one arrives, not at the request timeout).
"""

from __future__ import annotations

import re

import attrs

from metaproxy.namespace import NamespaceKind

__all__ = ["Request", "RequestError", "RequestParser"]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# origin-form: a path of visible ASCII, optional query; no spaces, no controls
_ORIGIN_FORM = re.compile(rb"/[\x21-\x7e]*\Z")
_ABSOLUTE_FORM = re.compile(rb"[hH][tT][tT][pP][sS]?://[^/?#\s]+((?:[/?][\x21-\x7e]*)?)\Z")
_BAD_VALUE_BYTES = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}\Z")
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]\Z")
# The header fields are read by one regular expression over the whole section (each
# field with its CRLF): a field is a token, a colon and a value of HTAB, SP, visible ASCII
# and obs-text, which is exactly what the field-by-field checks of
# RequestParser._check_fields accept. The section is well-formed when the fields found
# cover all of it; only a malformed one goes through those checks, to say what is wrong.
# A field is only looked for at the start of a line (^ in MULTILINE mode) and the
# quantifiers are possessive, so a long malformed line costs time in proportion to its
# length, not to its square.
_NAME = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]++"
_VALUE = rb"[\t\x20-\x7e\x80-\xff]*+"
_FIELDS = re.compile(rb"^(" + _NAME + rb"):(" + _VALUE + rb")\r\n", re.MULTILINE)

#: Headers the parser picks out while it reads the fields (one pass over them).
_CONTENT_LENGTH, _TRANSFER_ENCODING, _FORWARDED_FOR, _NAMESPACE = 1, 2, 3, 4
_PICKED = {
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"x-forwarded-for": _FORWARDED_FOR,
    **{kind.header: _NAMESPACE for kind in NamespaceKind},
}


def _last_forwarded_for(request: Request) -> bytes:
    last = b""
    for name, value in request.headers:
        if name == b"x-forwarded-for":
            last = value
    return last


def _forwarded_for_count(request: Request) -> int:
    return sum(1 for name, _ in request.headers if name == b"x-forwarded-for")


def _namespace_headers(request: Request) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((n, v) for n, v in request.headers if _PICKED.get(n) == _NAMESPACE)


@attrs.frozen
class Request:
    """A complete request: raw method, request-target and version, headers, whole body.

    @ivar headers: C{(name, value)} pairs in arrival order; names are lower-cased,
        values have surrounding white space removed and are otherwise raw bytes.
    @ivar forwarded_for: the value of the last C{X-Forwarded-For} header (C{b""} if
        there is none).
    @ivar namespace_headers: the C{X-Neutron-Router-ID}, C{X-Neutron-Network-ID} and
        C{X-OVN-Network-ID} headers among C{headers}, in arrival order.
    @ivar forwarded_for_count: how many C{X-Forwarded-For} header fields there are
        (haproxy appends one of its own: more than one means the guest sent one).

    The parser fills in the last three while it reads the fields; a L{Request} built by
    hand works them out from C{headers}.
    """

    method: bytes
    target: bytes
    version: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes = b""
    forwarded_for: bytes = attrs.field(default=attrs.Factory(_last_forwarded_for, takes_self=True))
    namespace_headers: tuple[tuple[bytes, bytes], ...] = attrs.field(
        default=attrs.Factory(_namespace_headers, takes_self=True)
    )
    forwarded_for_count: int = attrs.field(
        default=attrs.Factory(_forwarded_for_count, takes_self=True)
    )

    def values(self, name: bytes) -> list[bytes]:
        """Every value of header C{name} (lower case), in arrival order."""
        return [v for n, v in self.headers if n == name]


@attrs.frozen
class RequestError(Exception):
    """The request cannot be served: C{status} and a message for the client and the log."""

    status: int
    message: str


#: method, target, version, headers, forwarded_for, namespace_headers,
#: forwarded_for_count
_Head = tuple[
    bytes,
    bytes,
    bytes,
    tuple[tuple[bytes, bytes], ...],
    bytes,
    tuple[tuple[bytes, bytes], ...],
    int,
]


class RequestParser:
    """Feed bytes as they arrive; L{feed} returns the L{Request} once it is complete."""

    def __init__(
        self, max_header_bytes: int = 16384, max_headers: int = 100, max_body_bytes: int = 65536
    ) -> None:
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._max_body_bytes = max_body_bytes
        self._buffer = b""
        self._scan_from = 0
        self._head: _Head | None = None
        self._body_length = 0
        self._chunked = False
        self._body_start = 0

    @property
    def started(self) -> bool:
        """Whether any byte of a request has arrived."""
        return bool(self._buffer) or self._head is not None

    def feed(self, data: bytes) -> Request | None:
        """Add C{data}; return the request when complete, else C{None}.

        @raise RequestError: the request is malformed or over a limit.
        """
        self._buffer = self._buffer + data if self._buffer else data
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n", self._scan_from)
            if end < 0:
                # a head with bare LF line ends would never end: say so now, not at
                # the request timeout (only the bytes not scanned yet are looked at)
                if _BARE_LF.search(self._buffer, self._scan_from) is not None:
                    raise RequestError(400, "Header lines must end with CRLF, not a bare LF.")
                if len(self._buffer) > self._max_header_bytes:
                    raise RequestError(
                        431,
                        f"Request header section is larger than {self._max_header_bytes} bytes.",
                    )
                self._scan_from = max(0, len(self._buffer) - 3)
                return None
            if end + 4 > self._max_header_bytes:
                raise RequestError(
                    431, f"Request header section is larger than {self._max_header_bytes} bytes."
                )
            self._head = self._parse_head(self._buffer[:end])
            self._body_start = end + 4
        if self._chunked:
            body = self._dechunk()
            if body is None:
                return None
        else:
            stop = self._body_start + self._body_length
            if len(self._buffer) < stop:
                return None
            body = self._buffer[self._body_start : stop]
        method, target, version, headers, forwarded_for, namespace_headers, count = self._head
        return Request(
            method, target, version, headers, body, forwarded_for, namespace_headers, count
        )

    def _parse_head(self, head: bytes) -> _Head:
        """Parse the request line and the fields of C{head} (the header section up to,
        not including, its last CRLF)."""
        line_end = head.find(b"\r\n")
        if line_end < 0:
            request_line, fields = head, b""
        else:
            request_line, fields = head[:line_end], head[line_end + 2 :] + b"\r\n"
        parts = request_line.split(b" ")
        if len(parts) != 3:
            raise RequestError(400, "Malformed request line.")
        method, target, version = parts
        if not _TOKEN.match(method):
            raise RequestError(400, "Malformed request method.")
        if version != b"HTTP/1.1" and version != b"HTTP/1.0":
            if _VERSION.match(version):
                raise RequestError(505, "Only HTTP/1.0 and HTTP/1.1 are supported.")
            raise RequestError(400, "Malformed request line.")
        if not _ORIGIN_FORM.match(target):
            absolute = _ABSOLUTE_FORM.match(target)
            if absolute is None:
                raise RequestError(400, "Malformed request target.")
            target = absolute.group(1) or b"/"
            if target[:1] == b"?":
                target = b"/" + target
        found = _FIELDS.findall(fields)
        # the fields found cover the whole section only if every field is well-formed
        if sum([len(name) + len(value) + 3 for name, value in found]) != len(fields):
            lines = fields[:-2].split(b"\r\n")
            if len(lines) > self._max_headers:
                raise RequestError(431, f"Request has more than {self._max_headers} header fields.")
            self._check_fields(lines)  # raises, saying what is wrong
            raise AssertionError("a malformed header section passed the field checks")
        if len(found) > self._max_headers:
            raise RequestError(431, f"Request has more than {self._max_headers} header fields.")
        headers = []
        content_length: bytes | None = None
        transfer_encoding: bytes | None = None
        forwarded_for = b""
        forwarded_for_count = 0
        namespace_headers = []
        picked = _PICKED
        for name, value in found:
            name = name.lower()
            value = value.strip(b" \t")
            headers.append((name, value))
            what = picked.get(name)
            if what is None:
                continue
            if what == _FORWARDED_FOR:
                forwarded_for = value
                forwarded_for_count += 1
            elif what == _NAMESPACE:
                namespace_headers.append((name, value))
            elif what == _CONTENT_LENGTH:
                if content_length is not None:
                    raise RequestError(400, "Duplicate Content-Length header.")
                if not value.isdigit() or len(value) > 18:
                    raise RequestError(400, "Malformed Content-Length header.")
                content_length = value
            else:
                if transfer_encoding is not None:
                    raise RequestError(400, "Duplicate Transfer-Encoding header.")
                transfer_encoding = value
        if transfer_encoding is not None:
            if content_length is not None:
                raise RequestError(400, "Both Content-Length and Transfer-Encoding are present.")
            if transfer_encoding.lower() != b"chunked":
                raise RequestError(501, "Only the chunked transfer coding is supported.")
            if version == b"HTTP/1.0":
                raise RequestError(400, "Transfer-Encoding is not allowed in HTTP/1.0.")
            self._chunked = True
        elif content_length is not None:
            self._body_length = int(content_length)
            if self._body_length > self._max_body_bytes:
                raise RequestError(
                    413, f"Request body is larger than {self._max_body_bytes} bytes."
                )
        return (
            method,
            target,
            version,
            tuple(headers),
            forwarded_for,
            tuple(namespace_headers),
            forwarded_for_count,
        )

    @staticmethod
    def _check_fields(lines: list[bytes]) -> None:
        """Find the first malformed field among C{lines} and raise the error that says
        what is wrong with it."""
        for line in lines:
            name, colon, value = line.partition(b":")
            if not colon:
                if line[:1] in (b" ", b"\t"):
                    raise RequestError(400, "Obsolete line folding is not accepted.")
                raise RequestError(400, "Malformed header line.")
            if not _TOKEN.match(name):
                if name[:1] in (b" ", b"\t"):
                    raise RequestError(400, "Obsolete line folding is not accepted.")
                raise RequestError(400, "Malformed header name.")
            if _BAD_VALUE_BYTES.search(value) or b"\r" in line:
                raise RequestError(400, "Header value contains a control character.")

    def _dechunk(self) -> bytes | None:
        """Decode a chunked body if it has arrived entirely; re-scans from the start each
        time (bodies are small and rarely chunked)."""
        buf = self._buffer
        pos = self._body_start
        parts = []
        total = 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if len(buf) - pos > 1024:
                    raise RequestError(400, "Malformed chunk size line.")
                return None
            size_text = buf[pos:eol].split(b";", 1)[0].strip(b" \t")
            if not _HEX.match(size_text):
                raise RequestError(400, "Malformed chunk size line.")
            size = int(size_text, 16)
            pos = eol + 2
            if size == 0:
                break
            total += size
            if total > self._max_body_bytes:
                raise RequestError(
                    413, f"Request body is larger than {self._max_body_bytes} bytes."
                )
            if len(buf) < pos + size + 2:
                return None
            if buf[pos + size : pos + size + 2] != b"\r\n":
                raise RequestError(400, "Chunk data is not followed by CRLF.")
            parts.append(buf[pos : pos + size])
            pos += size + 2
        # trailer section: fields we ignore, then an empty line
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if len(buf) - pos > self._max_header_bytes:
                    raise RequestError(431, "Chunked trailer section is too large.")
                return None
            line = buf[pos:eol]
            pos = eol + 2
            if not line:
                return b"".join(parts)
            if _BAD_VALUE_BYTES.search(line) or b":" not in line:
                raise RequestError(400, "Malformed chunked trailer field.")
