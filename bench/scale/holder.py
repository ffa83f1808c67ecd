# -*- test-case-name: tests.integration.test_scale -*-
"""Many held connections: a generator process (L{hold_main}, run as C{python -m
bench.scale _hold PATH COUNT}) opens them, sends each the start of a request
(L{PARTIAL_REQUEST}) and holds them until its parent lets go (L{ConnectionHolder})."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.scale.host import raise_nofile

__all__ = ["PARTIAL_REQUEST", "hold_main", "ConnectionHolder", "hold_connections"]

#: The directory holding the bench package, where the generator runs.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
#: What each held connection has sent: a request line and one header, no blank line.
PARTIAL_REQUEST = b"GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\n"


def hold_main(path: str, count: int) -> int:
    """The generator process: open C{count} connections to C{path}, send each
    L{PARTIAL_REQUEST}, print C{held <count> <seconds> <retries>}, hold them until
    stdin closes, then close them."""
    limit = raise_nofile(count + 64)
    if limit < count + 16:
        print(
            f"error: RLIMIT_NOFILE is {limit}; {count} connections need more "
            "(raise the hard limit)",
            flush=True,
        )
        return 1
    sockets = []
    retries = 0
    start = time.monotonic()
    while len(sockets) < count:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except BlockingIOError:  # the listen queue is full: let the agent catch up
            sock.close()
            retries += 1
            time.sleep(0.002)
            continue
        except OSError as e:
            sock.close()
            print(f"error: connection {len(sockets) + 1}: {e}", flush=True)
            return 1
        sock.send(PARTIAL_REQUEST)
        sockets.append(sock)
    print(f"held {len(sockets)} {time.monotonic() - start:.3f} {retries}", flush=True)
    sys.stdin.read()  # until the parent lets go
    for sock in sockets:
        sock.close()
    return 0


class ConnectionHolder:
    """A generator process holding C{count} partial-request connections to C{path}.

    C{with hold_connections(path, 10000) as held:} returns once all are open (the agent
    may not have accepted them all yet); leaving the block closes them.

    @ivar open_seconds: how long opening them took; C{retries}: connects that found the
        listen queue full and were tried again.
    """

    def __init__(self, path: str, count: int, timeout: float = 300.0) -> None:
        self.count = count
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.scale", "_hold", path, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(_SOURCE_ROOT),
        )
        assert self._process.stdout is not None
        line = _readline(self._process, timeout)
        if not line.startswith("held "):
            self.close()
            raise RuntimeError(f"the connection generator failed: {line.strip()}")
        _, held, seconds, retries = line.split()
        self.open_seconds = float(seconds)
        self.retries = int(retries)

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                assert self._process.stdin is not None
                self._process.stdin.close()
                self._process.wait(30)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> ConnectionHolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _readline(process: subprocess.Popen, timeout: float) -> str:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not lines:
        process.kill()
        raise RuntimeError(f"the connection generator said nothing in {timeout} s")
    return lines[0] or f"exited with {process.wait()}"


def hold_connections(path: str, count: int, timeout: float = 300.0) -> ConnectionHolder:
    return ConnectionHolder(path, count, timeout)
