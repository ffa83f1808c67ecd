"""The agent's side of its workers: L{WorkerPool} spawns them, hands them the sockets,
relays their logs, restarts them when they die and stops them.

The agent's own process (twistd's) binds every socket, the shared one and each
namespace's, with the configured mode and backlog (L{metaproxy.http.listeners.HeldSocket}),
and opens the TCP sockets inside namespaces (L{metaproxy.http.listeners.Listeners.add_tcp}:
the workers need no privilege); it never accepts on them. The pool is the
L{metaproxy.http.listeners.SocketHandoff} of its listeners: every socket held is
inherited by each worker spawned, and a socket added or removed later is passed on over
each worker's channel (L{metaproxy.agent.workers.channel}).

A worker writes its log events to its stdout as JSON, one per line; the agent logs them
as its own, tagged C{worker <n> pid <pid>}. Lines on a worker's stderr are logged as
warnings.

Supervision: a worker that exits while the agent runs is restarted, with every current
socket, after a delay that starts at L{RESTART_FIRST} seconds and doubles up to
L{RESTART_MAX} while it keeps dying within L{STABLE_AFTER} seconds of its start. The
sockets stay open in the agent meanwhile, so the other workers keep serving and no
connection is refused. On stop (SIGTERM to the agent) each worker is sent SIGTERM: it
stops accepting, lets the requests in flight finish, and exits; one still there after
L{KILL_AFTER} seconds is killed. SIGHUP to the agent is passed on: each worker re-reads
the secret and the lookup table.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure

import metaproxy
from metaproxy.agent.workers.channel import CHANNEL_FD, FIRST_SOCKET_FD, Channel, socket_name
from metaproxy.http.listeners import ListenerKey

__all__ = ["KILL_AFTER", "RESTART_FIRST", "RESTART_MAX", "STABLE_AFTER", "WorkerPool"]

log = Logger("metaproxy.workers")

#: seconds the agent waits for a stopping worker before it kills it
KILL_AFTER = 10.0
#: first restart delay, in seconds; it doubles while a worker keeps dying
RESTART_FIRST = 0.5
#: longest restart delay, in seconds
RESTART_MAX = 30.0
#: a worker that ran this many seconds before it died is restarted after RESTART_FIRST
STABLE_AFTER = 10.0


class _Worker:
    """One worker slot: the process in it now, if any, and its restart state."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: Any = None
        self.pid: int | None = None
        self.channel: Channel | None = None
        self.started = 0.0
        self.failures = 0
        self.restart: Any = None
        self.ended: Deferred[None] | None = None
        self.ready = False
        self.reload_pending = False


class _WorkerProtocol(ProcessProtocol):
    """Relays a worker's log (stdout: JSON events; stderr: text) and reports its end."""

    def __init__(self, pool: WorkerPool, worker: _Worker) -> None:
        self._pool = pool
        self._worker = worker
        self._pid: int | None = None
        self._partial: dict[int, bytes] = {}

    def connectionMade(self) -> None:
        self._pid = self.transport.pid

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._partial.pop(childFD, b"") + data).split(b"\n")
        rest = lines.pop()
        if len(rest) > 1 << 20:  # a runaway line: log what there is
            lines.append(rest)
            rest = b""
        if rest:
            self._partial[childFD] = rest
        for line in lines:
            self._relay(childFD, line)

    def _relay(self, childFD: int, line: bytes) -> None:
        if not line.strip():
            return
        system = f"worker {self._worker.index} pid {self._pid}"
        text = line.decode("utf-8", "replace")
        if childFD == 1:
            try:
                event = eventFromJSON(text)
            except ValueError:
                event = None
            if isinstance(event, dict) and "log_format" in event:
                if event.get("worker_ready") is True:
                    self._pool._ready(self._worker)
                level = getattr(event.get("log_level"), "name", "-")
                event["log_system"] = f"{event.get('log_namespace', '-')}#{level} {system}"
                self._pool.publisher(event)
                return
        log.warn("[{system}] {line}", system=system, line=text.rstrip())

    def processEnded(self, reason: Failure) -> None:
        for childFD, rest in sorted(self._partial.items()):
            self._relay(childFD, rest)
        self._partial.clear()
        self._pool._ended(self._worker, reason)


def _describe_end(reason: Failure) -> str:
    value = reason.value
    sig = getattr(value, "signal", None)
    if sig:
        try:
            return f"was killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"was killed by signal {sig}"
    return f"exited with status {getattr(value, 'exitCode', None)}"


class WorkerPool(Service):
    """The workers, as seen from the agent: spawned at start, given every socket, restarted
    when they die, signalled on reload, stopped on stop.

    It is the L{metaproxy.http.listeners.SocketHandoff} of the agent's listeners: L{add} and
    L{remove} pass a socket to every running worker, and every socket held is passed to
    each worker started later.

    @param config_args: the agent's C{--config-file} / C{--config-dir} arguments.
    """

    def __init__(
        self,
        reactor: Any,
        count: int,
        config_args: Sequence[str],
        *,
        executable: str = sys.executable,
        publisher: Callable[[dict], None] | None = None,
        kill_after: float = KILL_AFTER,
    ) -> None:
        if count < 1:
            raise ValueError("a pool needs at least one worker")
        self._reactor = reactor
        self._config_args = list(config_args)
        self._executable = executable
        self.publisher = publisher if publisher is not None else globalLogPublisher
        self._sockets: dict[str, int] = {}
        self._workers = [_Worker(i) for i in range(1, count + 1)]
        self._stopping = False
        self._kill_timer: Any = None
        self._kill_after = kill_after

    # -- the sockets (SocketHandoff) ---------------------------------------------------

    @property
    def sockets(self) -> dict[str, int]:
        """Name to the agent's descriptor, in the order the sockets were added."""
        return dict(self._sockets)

    def add(self, key: ListenerKey, fd: int) -> None:
        name = socket_name(key)
        self._sockets[name] = fd
        for worker in self._running():
            worker.channel.send(f"add {name}", fd)

    def remove(self, key: ListenerKey) -> None:
        name = socket_name(key)
        if self._sockets.pop(name, None) is None:
            return
        for worker in self._running():
            worker.channel.send(f"remove {name}")

    # -- the processes --------------------------------------------------------------

    def pids(self) -> list[int]:
        """The running workers' process ids."""
        return [w.pid for w in self._workers if w.pid is not None]

    def _running(self) -> list[_Worker]:
        return [
            w
            for w in self._workers
            if w.process is not None and w.channel is not None and not w.channel.closed
        ]

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        for worker in self._workers:
            self._spawn(worker)

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # the workers import the very metaproxy this process runs
        source = os.path.dirname(os.path.dirname(os.path.abspath(metaproxy.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            [source] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        return env

    def _spawn(self, worker: _Worker) -> None:
        worker.restart = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        devnull = os.open(os.devnull, os.O_RDONLY)
        child_fds: dict[int, Any] = {0: devnull, 1: "r", 2: "r", CHANNEL_FD: theirs.fileno()}
        lines = []
        for number, (name, fd) in enumerate(self._sockets.items(), FIRST_SOCKET_FD):
            child_fds[number] = fd
            lines.append(f"add {name} {number}")
        args = [
            self._executable,
            "-m",
            "metaproxy.agent.workers",
            "--worker",
            str(worker.index),
            "--channel-fd",
            str(CHANNEL_FD),
            "--inherited",
            str(len(lines)),
            *self._config_args,
        ]
        try:
            process = self._reactor.spawnProcess(
                _WorkerProtocol(self, worker),
                self._executable,
                args,
                env=self._environment(),
                childFDs=child_fds,
            )
        except Exception:
            ours.close()
            log.failure("Cannot start worker {index}", index=worker.index)
            self._schedule_restart(worker)
            return
        finally:
            theirs.close()
            os.close(devnull)
        worker.process = process
        worker.pid = process.pid
        worker.ready = worker.reload_pending = False
        worker.started = self._reactor.seconds()
        worker.channel = Channel(
            self._reactor, ours, lambda reason, w=worker: self._channel_broken(w, reason)
        )
        for line in lines:
            worker.channel.send(line)
        log.info(
            "Worker {index} started (pid {pid}) with {count} socket(s)",
            index=worker.index,
            pid=process.pid,
            count=len(lines),
        )

    def _channel_broken(self, worker: _Worker, reason: str) -> None:
        if self._stopping or worker.process is None:
            return
        log.error(
            "Worker {index} (pid {pid}) cannot be sent its sockets ({reason}); "
            "killing it so that it restarts",
            index=worker.index,
            pid=worker.pid,
            reason=reason,
        )
        self._signal(worker, signal.SIGKILL)

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        pid = worker.pid
        if worker.channel is not None:
            worker.channel.close()
        worker.channel = None
        worker.process = None
        worker.pid = None
        worker.ready = worker.reload_pending = False
        if worker.ended is not None:
            ended, worker.ended = worker.ended, None
            ended.callback(None)
        if self._stopping or not self.running:
            log.info(
                "Worker {index} (pid {pid}) stopped: {how}",
                index=worker.index,
                pid=pid,
                how=_describe_end(reason),
            )
            return
        lived = self._reactor.seconds() - worker.started
        if lived >= STABLE_AFTER:
            worker.failures = 0
        delay = self._schedule_restart(worker)
        log.error(
            "Worker {index} (pid {pid}) {how} after {lived:.1f} s; restarting it in "
            "{delay} s; the other workers keep serving",
            index=worker.index,
            pid=pid,
            how=_describe_end(reason),
            lived=lived,
            delay=delay,
        )

    def _schedule_restart(self, worker: _Worker) -> float:
        delay = min(RESTART_MAX, RESTART_FIRST * 2**worker.failures)
        worker.failures += 1
        worker.restart = self._reactor.callLater(delay, self._restart, worker)
        return delay

    def _restart(self, worker: _Worker) -> None:
        worker.restart = None
        if self.running and not self._stopping:
            self._spawn(worker)

    def _signal(self, worker: _Worker, signum: int) -> bool:
        if worker.process is None:
            return False
        try:
            worker.process.signalProcess(signum)
        except (ProcessExitedAlready, OSError):
            return False
        return True

    def reload(self) -> int:
        """Have every running worker re-read the secret and the lookup table (SIGHUP).

        A worker still starting up (it has not said it is ready, so it may not handle
        SIGHUP yet, and SIGHUP would kill it) is sent SIGHUP once it is ready.

        @return: how many workers will reload.
        """
        told = 0
        for worker in self._workers:
            if worker.process is None:
                continue
            if worker.ready:
                told += self._signal(worker, signal.SIGHUP)
            else:
                worker.reload_pending = True
                told += 1
        return told

    def _ready(self, worker: _Worker) -> None:
        worker.ready = True
        if worker.reload_pending:
            worker.reload_pending = False
            self._signal(worker, signal.SIGHUP)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stopping = True
        waits = []
        for worker in self._workers:
            if worker.restart is not None and worker.restart.active():
                worker.restart.cancel()
            worker.restart = None
            if worker.process is not None:
                worker.ended = Deferred()
                waits.append(worker.ended)
                self._signal(worker, signal.SIGTERM)
        if not waits:
            return succeed(None)
        self._kill_timer = self._reactor.callLater(self._kill_after, self._kill_stragglers)

        def done(result: object) -> None:
            if self._kill_timer is not None and self._kill_timer.active():
                self._kill_timer.cancel()
            self._kill_timer = None

        return gatherResults(waits).addBoth(done)

    def _kill_stragglers(self) -> None:
        self._kill_timer = None
        for worker in self._workers:
            if worker.process is not None:
                log.warn(
                    "Worker {index} (pid {pid}) still running {after} s after SIGTERM; killing it",
                    index=worker.index,
                    pid=worker.pid,
                    after=self._kill_after,
                )
                self._signal(worker, signal.SIGKILL)
