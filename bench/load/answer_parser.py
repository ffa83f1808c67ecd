# -*- test-case-name: tests.bench.load.test_storm -*-
"""The bench's one HTTP/1.x answer parser: incremental (L{AnswerParser}: feed bytes as
they come), for the storm's connections and, fed a whole answer at once, for the
blocking client (L{bench.load.unixhttp}).

L{find_head_end} and L{split_head} accept a head whose lines end with a bare LF, as
upstream's agent writes its own error pages.
"""

from __future__ import annotations

import attrs

__all__ = [
    "BadHTTP",
    "ClosedEarly",
    "Answer",
    "AnswerParser",
    "find_head_end",
    "split_head",
]


def find_head_end(buffer: bytes | bytearray) -> tuple[int, int] | None:
    """Where an answer's head ends: C{(end of its last line, end of the blank line)}, or
    None when no blank line has come yet. Lines may end with C{CRLF} (HTTP) or a bare
    C{LF} (upstream's agent writes its own 404, 400 and 503 pages so), so the blank line
    is the first C{LF} followed by C{LF} or C{CRLF}."""
    lf_lf = buffer.find(b"\n\n")
    lf_crlf = buffer.find(b"\n\r\n")
    if lf_lf < 0 and lf_crlf < 0:
        return None
    if lf_crlf < 0 or 0 <= lf_lf < lf_crlf:
        return lf_lf + 1, lf_lf + 2
    return lf_crlf + 1, lf_crlf + 3


def split_head(head: bytes) -> tuple[list[bytes], bool]:
    """The lines of a head (as cut by L{find_head_end}: up to and including its last
    line's end), without their line ends, and whether any ended with a bare C{LF}."""
    lines = head.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    bare_lf = False
    stripped = []
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        else:
            bare_lf = True
        stripped.append(line)
    return stripped, bare_lf


class BadHTTP(Exception):
    """The answer is not well-formed HTTP/1.x, or ended before its framing said."""


class ClosedEarly(Exception):
    """The connection ended before the first byte of an answer."""


@attrs.frozen
class Answer:
    """A parsed answer. C{headers}: C{(name, value)} pairs in order, names as on the
    wire (L{header} finds one whatever its case). C{close}: the connection cannot carry
    another request. C{reason}: the status line's reason phrase.

    Two departures from HTTP/1.1's framing are accepted (upstream's agent makes both) and
    recorded, so a report can count them: C{bare_lf}, the head's lines end with a bare
    C{LF} instead of C{CRLF} (upstream's own 404, 400 and 503 pages); C{trailing}, how
    many bytes came after the answer's end in the same read (a server that appends
    C{CRLF CRLF} after a body).
    """

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    close: bool
    bare_lf: bool = False
    trailing: int = 0
    reason: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        """The first value of header C{name} (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class AnswerParser:
    """Incremental HTTP/1.x answer parser: C{feed} bytes as they come, C{eof} when the
    peer closes. Framing: C{Transfer-Encoding: chunked}, else C{Content-Length}, else
    the body runs to EOF. Interim 1xx answers are skipped. Bytes after a complete
    answer mark it C{close} (nothing is pipelined) and are counted in its C{trailing}.
    A head whose lines end with bare C{LF}s is accepted and marked C{bare_lf}."""

    def __init__(self, max_head: int = 65536) -> None:
        self._buffer = bytearray()
        self._max_head = max_head
        self._status = 0
        self._reason = b""
        self._headers: tuple[tuple[bytes, bytes], ...] = ()
        self._close = False
        self._mode = ""  # "", "length", "chunked", "eof"
        self._length = 0
        self._body = bytearray()
        self._chunk_left = -1  # chunked: bytes left in this chunk, -1 reading a size line
        self._trailers = False
        self._received = False
        self._bare_lf = False
        self.done: Answer | None = None

    def feed(self, data: bytes) -> Answer | None:
        """Add bytes; the answer once complete (and on every later call), else None.

        @raise BadHTTP: the bytes cannot be an HTTP answer.
        """
        if self.done is not None:
            if data:
                self.done = attrs.evolve(
                    self.done, close=True, trailing=self.done.trailing + len(data)
                )
            return self.done
        if data:
            self._received = True
        self._buffer += data
        while not self._mode:
            found = find_head_end(self._buffer)
            if found is None:
                if len(self._buffer) > self._max_head:
                    raise BadHTTP(f"no end of head within {self._max_head} bytes")
                if not b"HTTP/1.".startswith(bytes(self._buffer[:7])):
                    raise BadHTTP(f"not an HTTP answer: {bytes(self._buffer[:40])!r}")
                return None
            end, after = found
            head = bytes(self._buffer[:end])
            del self._buffer[:after]
            self._head(head)
        return self._body_bytes()

    def eof(self) -> Answer:
        """The peer closed: the answer, if it is complete now.

        @raise ClosedEarly: not one byte came.
        @raise BadHTTP: the answer is incomplete.
        """
        if self.done is not None:
            return self.done
        if not self._received:
            raise ClosedEarly("closed before answering")
        if self._mode == "eof":
            return self._finish(bytes(self._body) + bytes(self._buffer), close=True)
        if not self._mode:
            raise BadHTTP("closed within the answer's head")
        if self._mode == "length":
            raise BadHTTP(
                f"closed after {len(self._body)} of {self._length} body bytes "
                f"(Content-Length {self._length})"
            )
        raise BadHTTP("closed within a chunked body")

    def _head(self, head: bytes) -> None:
        lines, bare_lf = split_head(head)
        if not lines:
            raise BadHTTP("an empty head")
        parts = lines[0].split(b" ", 2)
        if (
            len(parts) < 2
            or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0")
            or len(parts[1]) != 3
            or not parts[1].isdigit()
        ):
            raise BadHTTP(f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        headers = []  # (name as on the wire, value)
        lowered = []  # (lower-case name, value), for the framing
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip() or b" " in name:
                raise BadHTTP(f"bad header line {line[:80]!r}")
            value = value.strip(b" \t")
            headers.append((name, value))
            lowered.append((name.lower(), value))
        if 100 <= status < 200:
            if status == 101:
                raise BadHTTP("101 Switching Protocols to a GET")
            return  # interim answer: the real one follows
        self._bare_lf = bare_lf
        self._status = status
        self._reason = parts[2] if len(parts) > 2 else b""
        self._headers = tuple(headers)
        connection = {
            token.strip().lower()
            for key, value in lowered
            if key == b"connection"
            for token in value.split(b",")
        }
        self._close = b"close" in connection or (
            parts[0] == b"HTTP/1.0" and b"keep-alive" not in connection
        )
        encodings = [value for key, value in lowered if key == b"transfer-encoding"]
        lengths = {value for key, value in lowered if key == b"content-length"}
        if encodings:
            if encodings[-1].split(b",")[-1].strip().lower() != b"chunked":
                raise BadHTTP("Transfer-Encoding without chunked last")
            self._mode = "chunked"
        elif status in (204, 304):
            self._mode, self._length = "length", 0
        elif lengths:
            if len(lengths) > 1:
                raise BadHTTP("several different Content-Length values")
            value = lengths.pop()
            if not value.isdigit():
                raise BadHTTP(f"bad Content-Length {value[:20]!r}")
            self._mode, self._length = "length", int(value)
        else:
            self._mode = "eof"

    def _body_bytes(self) -> Answer | None:
        if self._mode == "length":
            need = self._length - len(self._body)
            self._body += self._buffer[:need]
            extra = len(self._buffer) > need
            del self._buffer[:need]
            if len(self._body) == self._length:
                trailing = len(self._buffer)
                self._buffer.clear()
                return self._finish(
                    bytes(self._body), close=self._close or extra, trailing=trailing
                )
            return None
        if self._mode == "eof":
            self._body += self._buffer
            self._buffer.clear()
            return None
        return self._chunked()

    def _chunked(self) -> Answer | None:
        buffer = self._buffer
        while True:
            if self._trailers:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return None
                line = bytes(buffer[:end])
                del buffer[: end + 2]
                if not line:
                    trailing = len(buffer)
                    buffer.clear()
                    return self._finish(
                        bytes(self._body), close=self._close or bool(trailing), trailing=trailing
                    )
                continue
            if self._chunk_left < 0:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > 1024:
                        raise BadHTTP("chunk size line too long")
                    return None
                size = bytes(buffer[:end]).split(b";", 1)[0].strip()
                del buffer[: end + 2]
                try:
                    self._chunk_left = int(size, 16)
                except ValueError:
                    raise BadHTTP(f"bad chunk size {size[:20]!r}") from None
                if self._chunk_left == 0:
                    self._trailers = True
                continue
            if len(buffer) < self._chunk_left + 2:
                return None
            if buffer[self._chunk_left : self._chunk_left + 2] != b"\r\n":
                raise BadHTTP("chunk not followed by CRLF")
            self._body += buffer[: self._chunk_left]
            del buffer[: self._chunk_left + 2]
            self._chunk_left = -1

    def _finish(self, body: bytes, *, close: bool, trailing: int = 0) -> Answer:
        self.done = Answer(
            self._status, self._headers, body, close, self._bare_lf, trailing, self._reason
        )
        return self.done
