# -*- test-case-name: tests.bench.fakes.test_fakenova,tests.integration.test_fakenova_process -*-
"""Process plumbing for C{python -m bench.fakes.nova --processes N}.

The parent (L{bench.fakes.nova.cli}) binds the listening socket once and serves on it;
a L{WorkerPool} then starts N-1 children, C{python -m bench.fakes.nova <same arguments>
--worker-index I}, each with these descriptors:

  - 0: a pipe from the parent. The child never reads data from it: end of file means the
    parent is gone or wants the child to stop (L{watch_parent}), so a child never outlives
    its parent, even one killed with SIGKILL;
  - 1: a pipe to the parent, on which the child writes C{ready} once it serves;
  - 2: the parent's stderr;
  - 3 (L{LISTEN_FD}): the listening socket, which the child adopts (C{adoptStreamPort});
  - 4 (L{BOARD_FD}): the shared counters (L{bench.fakes.nova.stats.SharedBoard}).

The parent prints its C{fakenova listening on ...} line only once every child is ready;
it stops the children (closes their pipe, then SIGKILL after a grace period) before it
exits, and stops with status 1 if a child exits on its own.

This module does not import the rest of the fake: the child runs the fake as
C{python -m bench.fakes.nova}.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["LISTEN_FD", "BOARD_FD", "READY", "WorkerPool", "watch_parent"]

# The pool's log lines keep the name they have always had.
_log = Logger(namespace="bench.fakenova_pool")

#: Where a child finds the listening socket and the shared board.
LISTEN_FD = 3
BOARD_FD = 4
#: What a child writes on its stdout once it serves.
READY = b"ready\n"

# The directory holding the bench package, so children import the same code.
_SOURCE_ROOT = str(Path(__file__).resolve().parents[3])


class _Child(ProcessProtocol):
    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.running = True
        self.is_ready = False
        self._output = b""

    def outReceived(self, data: bytes) -> None:
        if self.ready.called:
            return
        self._output += data
        if self._output == READY:
            self.is_ready = True
            self.ready.callback(None)
        elif not READY.startswith(self._output):
            self.ready.errback(RuntimeError(f"fakenova worker {self.index} said {self._output!r}"))

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        if not self.ready.called:
            self.ready.errback(
                RuntimeError(f"fakenova worker {self.index} exited while starting: {reason.value}")
            )
        self.ended.callback(None)
        self.pool._ended(self, reason)


class WorkerPool:
    """N children serving a listening socket the parent bound.

    @ivar failed: errbacks with C{SystemExit(1)} when a child exits while the pool is
        not stopping; never fires otherwise.
    """

    def __init__(
        self,
        reactor: Any,
        argv: Sequence[str],
        count: int,
        listen_fd: int,
        board_fd: int,
        *,
        grace: float = 5.0,
    ) -> None:
        """
        @param argv: the parent's command-line arguments (without the program); each
            child gets them followed by C{--worker-index I}, I from 1 to C{count}.
        @param grace: seconds a stopping child gets before SIGKILL.
        """
        self._reactor = reactor
        self._argv = list(argv)
        self._count = count
        self._listen_fd = listen_fd
        self._board_fd = board_fd
        self._grace = grace
        self._children: list[_Child] = []
        self._stopping = False
        self.failed: Deferred[None] = Deferred()

    @property
    def pids(self) -> list[int]:
        return [c.transport.pid for c in self._children if c.running and c.transport]

    def start(self, timeout: float = 30.0) -> Deferred[None]:
        """Spawn the children; fires once all are ready, fails if one is not within
        C{timeout} seconds or exits first."""
        env = dict(os.environ)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _SOURCE_ROOT + (os.pathsep + path if path else "")
        for index in range(1, self._count + 1):
            child = _Child(self, index)
            args = [
                sys.executable,
                "-m",
                "bench.fakes.nova",
                *self._argv,
                "--worker-index",
                str(index),
            ]
            self._children.append(child)
            self._reactor.spawnProcess(
                child,
                sys.executable,
                args,
                env=env,
                childFDs={
                    0: "w",
                    1: "r",
                    2: 2,
                    LISTEN_FD: self._listen_fd,
                    BOARD_FD: self._board_fd,
                },
            )
        all_ready = DeferredList(
            [c.ready for c in self._children], fireOnOneErrback=True, consumeErrors=True
        )
        timer = self._reactor.callLater(timeout, all_ready.cancel)

        def done(result: Any) -> Failure | None:
            if timer.active():
                timer.cancel()
            if not isinstance(result, Failure):
                return None
            # fireOnOneErrback wraps the first failure in a FirstError.
            first: Failure = getattr(result.value, "subFailure", result)
            if first.check(CancelledError):
                return Failure(RuntimeError(f"fakenova workers not ready within {timeout} s"))
            return first

        return all_ready.addBoth(done)

    def _ended(self, child: _Child, reason: Failure) -> None:
        if self._stopping or not child.is_ready:
            return  # a worker that fails to start fails start() instead
        _log.error(
            "fakenova worker {index} exited on its own ({reason}); stopping",
            index=child.index,
            reason=reason.value,
        )
        if not self.failed.called:
            self.failed.errback(SystemExit(1))

    def stop(self) -> Deferred[Any]:
        """Stop every child: close its pipe (it exits 0), SIGKILL after the grace period."""
        self._stopping = True
        waits = []
        for child in self._children:
            if not child.running:
                continue
            child.transport.closeStdin()
            kill = self._reactor.callLater(self._grace, _kill, child)
            child.ended.addBoth(_cancel_call, kill)
            waits.append(child.ended)
        return DeferredList(waits)


def _cancel_call(result: object, call: Any) -> object:
    if call.active():
        call.cancel()
    return result


def _kill(child: _Child) -> None:
    if child.running:
        _log.warn("fakenova worker {index} did not stop; killing it", index=child.index)
        child.transport.signalProcess("KILL")


class _EndOfFile:
    """An C{IReadDescriptor} firing a Deferred at the end of file (or error) of C{fd}."""

    def __init__(self, fd: int, done: Deferred[None]) -> None:
        self._fd = fd
        self._done = done
        os.set_blocking(fd, False)

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "fakenova-parent"

    def doRead(self) -> Exception | None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if data:
            return None  # the parent sends nothing; ignore anything anyway
        return ProcessDone(0)  # the reactor then removes this reader

    def connectionLost(self, reason: Failure) -> None:
        if not self._done.called:
            self._done.callback(None)


def watch_parent(reactor: Any, fd: int = 0) -> Deferred[None]:
    """Fires when the parent closes this child's pipe C{fd} or dies."""
    done: Deferred[None] = Deferred()
    reactor.addReader(_EndOfFile(fd, done))
    return done
