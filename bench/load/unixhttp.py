# -*- test-case-name: tests.bench.load.test_storm -*-
"""A tiny blocking HTTP/1.1 client over a Unix socket, speaking as haproxy does.

Used by the demo and the integration tests: it sends raw request bytes (so tests control
every byte and segment) and reads the answer to EOF. L{find_head_end} and L{split_head}
are shared with the storm's incremental parser (L{bench.load.answer_parser}): both accept
a head whose lines end with a bare LF, as upstream's agent writes its own error pages.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable

import attrs

from bench.load.answer_parser import find_head_end, split_head

__all__ = ["Answer", "send_raw", "get", "parse_answer"]


@attrs.frozen
class Answer:
    """C{bare_lf}: the head's lines ended with bare LFs, not CRLFs."""

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
    """Parse a complete answer (Content-Length framed, read to EOF). The head's lines
    may end with CRLF or a bare LF (L{Answer.bare_lf})."""
    found = find_head_end(data)
    if found is None:
        raise ValueError(f"incomplete answer: {data[:200]!r}")
    raw_lines, bare_lf = split_head(data[: found[0]])
    body = data[found[1] :]
    lines = [line.decode("latin-1") for line in raw_lines]
    version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP answer: {lines[0]!r}")
    headers = tuple(
        tuple(part.strip() for part in line.split(":", 1))  # type: ignore[misc]
        for line in lines[1:]
    )
    answer = Answer(int(status), reason, headers, body, bare_lf)
    length = answer.header("content-length")
    if length is not None and int(length) != len(body):
        raise ValueError(f"Content-Length {length} but {len(body)} body bytes")
    return answer


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
