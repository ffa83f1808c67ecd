# -*- test-case-name: tests.bench.load.test_storm -*-
"""A tiny blocking HTTP/1.1 client over a Unix socket, speaking as haproxy does.

Used by the demo and the integration tests: it sends raw request bytes (so tests control
every byte and segment) and reads the answer to EOF. The answer is parsed by the bench's
one parser, the storm's (L{bench.load.answer_parser.AnswerParser}), fed the whole answer
at once: it accepts a head whose lines end with a bare LF, as upstream's agent writes its
own error pages.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable

import attrs

from bench.load.answer_parser import AnswerParser, BadHTTP, find_head_end

__all__ = ["Answer", "send_raw", "get", "parse_answer"]


@attrs.frozen
class Answer:
    """An answer as text: the reason phrase and the headers (names as on the wire) are
    decoded as latin-1. C{bare_lf}: the head's lines ended with bare LFs, not CRLFs."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    bare_lf: bool = False

    def header(self, name: str) -> str | None:
        name = name.lower()
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None


def parse_answer(data: bytes) -> Answer:
    """Parse a complete answer (read to EOF). The head's lines may end with CRLF or a
    bare LF (L{Answer.bare_lf}).

    @raise ValueError: the answer is cut short (its head, or its body before its
        C{Content-Length}), is not well-formed HTTP/1.x, or has bytes after its
        C{Content-Length} body.
    """
    if find_head_end(data) is None:
        raise ValueError(f"incomplete answer: {data[:200]!r}")
    parser = AnswerParser()
    try:
        parsed = parser.feed(data) or parser.eof()
    except BadHTTP as e:
        raise ValueError(str(e)) from None
    if parsed.trailing:
        length = parsed.header(b"content-length")
        if length is None:
            raise ValueError(f"{parsed.trailing} bytes after the answer")
        raise ValueError(
            f"Content-Length {length.decode('latin-1')} but "
            f"{len(parsed.body) + parsed.trailing} body bytes"
        )
    return Answer(
        parsed.status,
        parsed.reason.decode("latin-1"),
        tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in parsed.headers),
        parsed.body,
        parsed.bare_lf,
    )


def send_raw(
    path: str, segments: Iterable[bytes], *, pause: float = 0.0, timeout: float = 10.0
) -> Answer:
    """Connect to the Unix socket C{path}, send C{segments} (pausing between them, so a
    body can arrive in a later segment) and read the whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        for i, segment in enumerate(segments):
            if i and pause:
                time.sleep(pause)
            sock.sendall(segment)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return parse_answer(b"".join(chunks))


def get(
    path: str,
    target: str,
    *,
    forwarded_for: str | None,
    headers: Iterable[tuple[str, str]] = (),
    method: str = "GET",
    body: bytes = b"",
) -> Answer:
    """A request shaped like haproxy's: C{X-Forwarded-For} appended last."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 169.254.169.254"]
    lines += [f"{n}: {v}" for n, v in headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    if forwarded_for is not None:
        lines.append(f"X-Forwarded-For: {forwarded_for}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    return send_raw(path, [data])
