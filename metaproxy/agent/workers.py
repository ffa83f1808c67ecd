"""Worker processes: C{metadata_workers = N} (N >= 2) runs N of them, sharing every socket.

The agent's own process (twistd's) binds every socket, the shared one and each
namespace's, with the configured mode and backlog (L{metaproxy.http.listeners.HeldSocket});
it never accepts on them. It keeps the namespace registry, the control socket and SIGHUP,
and supervises the workers with a L{WorkerPool}. Each worker (C{python -m
metaproxy.agent.workers}) builds its own lookups, cache, Nova client and pipeline
(L{metaproxy.agent.service.Proxy}) and accepts on its copy of every socket; the kernel gives
each new connection to one of them.

Descriptors reach a worker two ways. At spawn, every socket that exists then is
inherited (C{childFDs}, numbers from 4 up; C{--inherited N} says how many), so a restart
with hundreds of namespaces needs no descriptor in flight. A socket added later is sent
over the worker's channel, a Unix socketpair that is the worker's fd 3, with
C{SCM_RIGHTS}. The channel carries one ASCII line per command, from the agent to the
worker only (the worker's answers are its log lines):

    add <name> <fd>   serve the listening socket inherited as descriptor <fd>
    add <name>        serve the listening socket that comes with this line (SCM_RIGHTS)
    remove <name>     stop serving <name>: close this worker's copy, leave the path alone

C{<name>} is C{shared} or a namespace's name (C{qrouter-<id>}, ...). To remove a socket
the agent unlinks its path and closes its own copy first, then sends C{remove} without
waiting for any answer: once the path is gone nothing new can connect, so the workers
only have to let go of their copies (a worker that has not read the line yet still answers
connections already queued). End of file on the channel means the agent is gone: the
worker stops. The worker logs C{Worker <n> ready: serving <k> socket(s)} once its reactor
runs and it serves every socket it inherited.

Adopting a listening Unix socket that other processes share has four traps, all avoided
by L{AdoptedUNIXPort}: Twisted's C{unix.Port} (what C{adoptStreamPort} builds) chmods the
path to its own mode (0666 by default) and calls C{listen(50)}, which shrinks the shared
backlog; when it stops, it C{shutdown()}s the socket, which makes the kernel refuse new
connections for every process holding it, and it unlinks the path.

A worker writes its log events to its stdout as JSON, one per line; the agent logs them
as its own, tagged C{worker <n> pid <pid>}. Lines on a worker's stderr are logged as
warnings.

Supervision: a worker that exits while the agent runs is restarted, with every current
socket, after a delay that starts at L{RESTART_FIRST} seconds and doubles up to
L{RESTART_MAX} while it keeps dying within L{STABLE_AFTER} seconds of its start. The
sockets stay open in the agent meanwhile, so the other workers keep serving and no
connection is refused. On stop (SIGTERM to the agent) each worker is sent SIGTERM: it
stops accepting, lets the requests in flight finish for up to L{DRAIN_SECONDS}, and
exits; one still there after L{KILL_AFTER} seconds is killed. A second SIGTERM (systemd
signals the whole unit, then the agent signals its workers) changes nothing. SIGHUP to
the agent is passed on: each worker re-reads the secret and the lookup table. Workers
ignore SIGINT (a terminal's Ctrl-C reaches the whole process group): the agent stops
them.
"""

from __future__ import annotations

import argparse
import collections
import errno
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IFileDescriptorReceiver, IReactorTime, IWriteDescriptor
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.logger import (
    ILogObserver,
    Logger,
    eventFromJSON,
    globalLogBeginner,
    globalLogPublisher,
    jsonFileLogObserver,
)
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

import metaproxy
from metaproxy.http.listeners import AdoptedUNIXPort
from metaproxy.http.server import MetadataFactory, MetadataProtocol
from metaproxy.namespace import InvalidNamespace, Namespace
from metaproxy.resolve.backends import describe_backend

__all__ = [
    "SHARED",
    "CHANNEL_FD",
    "FIRST_SOCKET_FD",
    "ProtocolError",
    "socket_name",
    "parse_name",
    "parse_command",
    "AdoptedUNIXPort",
    "Channel",
    "WorkerPool",
    "ConnectionTracker",
    "ChannelProtocol",
    "WorkerService",
    "main",
]

log = Logger("metaproxy.workers")

#: the shared socket's name on the channel
SHARED = "shared"
#: the worker's end of its channel
CHANNEL_FD = 3
#: sockets inherited at spawn are numbered from here
FIRST_SOCKET_FD = 4
#: seconds a stopping worker lets requests in flight finish (by default; the agent's
#: workers use [metaproxy] drain_timeout)
DRAIN_SECONDS = 5.0
#: seconds between two metrics reports of a worker to the agent
METRICS_INTERVAL = 5.0
#: seconds the agent waits for a stopping worker before it kills it
KILL_AFTER = 10.0
#: first restart delay, in seconds; it doubles while a worker keeps dying
RESTART_FIRST = 0.5
#: longest restart delay, in seconds
RESTART_MAX = 30.0
#: a worker that ran this many seconds before it died is restarted after RESTART_FIRST
STABLE_AFTER = 10.0
#: longest channel line (a namespace name is at most 72 characters)
MAX_LINE = 256
#: lines waiting for a worker that does not read its channel, before it is killed
MAX_PENDING = 1024


# ---- the channel's line protocol ------------------------------------------------------


class ProtocolError(ValueError):
    """A channel line that does not follow the protocol."""


def socket_name(namespace: Namespace | None) -> str:
    """A socket's name on the channel: C{shared} or the namespace's name."""
    return SHARED if namespace is None else namespace.name


def parse_name(name: str) -> Namespace | None:
    """The inverse of L{socket_name}.

    @raise ProtocolError: not C{shared} nor a valid namespace name.
    """
    if name == SHARED:
        return None
    try:
        return Namespace.parse(name)
    except InvalidNamespace as e:
        raise ProtocolError(str(e)) from None


def parse_command(line: bytes) -> tuple[str, Namespace | None, int | None]:
    """C{("add", namespace, fd or None)} or C{("remove", namespace, None)}.

    @raise ProtocolError: anything else.
    """
    try:
        words = line.decode("ascii").split()
    except UnicodeDecodeError:
        raise ProtocolError("not ASCII") from None
    if len(words) == 2 and words[0] in ("add", "remove"):
        return words[0], parse_name(words[1]), None
    if len(words) == 3 and words[0] == "add" and words[2].isdigit():
        return "add", parse_name(words[1]), int(words[2])
    raise ProtocolError("expected 'add <name> [<fd>]' or 'remove <name>'")


# ---- worker side: serving a socket another process bound -------------------------------


# ---- agent side: the channel and the pool ----------------------------------------------


@implementer(IWriteDescriptor)
class Channel:
    """The agent's end of one worker's channel: lines sent in order, each with at most
    one descriptor, without ever blocking the reactor.

    A descriptor is copied when its line is queued, so the caller may close its own at
    once; the copy is closed when the kernel has taken it. When the worker does not read
    (its socket buffer is full) lines wait for the socket to be writable; when the
    kernel refuses more descriptors in flight (ETOOMANYREFS) they are retried shortly.
    Any other error, or more than C{max_pending} lines waiting, means the worker is gone
    or stuck: the channel closes and calls C{on_broken(reason)}; its supervisor kills the
    worker, which is restarted with every socket.
    """

    def __init__(
        self,
        reactor: Any,
        sock: socket.socket,
        on_broken: Callable[[str], None] = lambda reason: None,
        *,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._reactor = reactor
        self._max_pending = max_pending
        self._socket: socket.socket | None = sock
        self._on_broken = on_broken
        sock.setblocking(False)
        self._queue: collections.deque[tuple[bytes, int | None]] = collections.deque()
        self._writing = False
        self._retry = None

    @property
    def closed(self) -> bool:
        return self._socket is None

    @property
    def pending(self) -> int:
        """Lines queued and not yet sent."""
        return len(self._queue)

    def send(self, line: str, fd: int | None = None) -> None:
        if self._socket is None:
            return
        if len(self._queue) >= self._max_pending:
            self._broken(f"{len(self._queue)} lines waiting: it does not read them")
            return
        self._queue.append((line.encode("ascii") + b"\n", os.dup(fd) if fd is not None else None))
        if not self._writing and self._retry is None:
            self._flush()

    def _flush(self) -> None:
        self._retry = None
        while self._queue and self._socket is not None:
            data, fd = self._queue[0]
            try:
                if fd is None:
                    sent = self._socket.send(data, socket.MSG_NOSIGNAL)
                else:
                    sent = socket.send_fds(self._socket, [data], [fd], socket.MSG_NOSIGNAL)
            except BlockingIOError:
                self._wait_writable(True)
                return
            except OSError as e:
                if e.errno == errno.ETOOMANYREFS:
                    self._wait_writable(False)
                    self._retry = self._reactor.callLater(0.1, self._flush)
                    return
                self._broken(e.strerror or str(e))
                return
            if fd is not None:
                os.close(fd)  # the kernel holds its own reference now
            if sent < len(data):
                self._queue[0] = (data[sent:], None)
            else:
                self._queue.popleft()
        self._wait_writable(False)

    def _wait_writable(self, wait: bool) -> None:
        if wait and not self._writing:
            self._reactor.addWriter(self)
        elif not wait and self._writing:
            self._reactor.removeWriter(self)
        self._writing = wait

    # IWriteDescriptor, while lines wait for room
    def fileno(self) -> int:
        return self._socket.fileno() if self._socket is not None else -1

    def doWrite(self) -> None:
        self._flush()

    def connectionLost(self, reason: Failure) -> None:
        self._broken(reason.getErrorMessage())

    def logPrefix(self) -> str:
        return "metaproxy-worker-channel"

    def _broken(self, reason: str) -> None:
        if self._socket is None:
            return
        self.close()
        self._on_broken(reason)

    def close(self) -> None:
        """Close the channel (the worker sees end of file) and drop what is queued."""
        self._wait_writable(False)
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        for _, fd in self._queue:
            if fd is not None:
                os.close(fd)
        self._queue.clear()
        if self._socket is not None:
            self._socket.close()
            self._socket = None


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

    def add(self, namespace: Namespace | None, fd: int) -> None:
        name = socket_name(namespace)
        self._sockets[name] = fd
        for worker in self._running():
            worker.channel.send(f"add {name}", fd)

    def remove(self, namespace: Namespace | None) -> None:
        name = socket_name(namespace)
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


# ---- worker side: the process --------------------------------------------------------


class ConnectionTracker:
    """Counts the connections being served, so a stopping worker can let them finish."""

    def __init__(self) -> None:
        self.live = 0
        self._waiting: list[Deferred[bool]] = []

    def opened(self) -> None:
        self.live += 1

    def closed(self) -> None:
        self.live -= 1
        if self.live == 0:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(True)

    def idle(self, clock: IReactorTime, timeout: float) -> Deferred[bool]:
        """Fires with C{True} once no connection is left, or C{False} after C{timeout}."""
        if self.live == 0:
            return succeed(True)
        d: Deferred[bool] = Deferred()
        self._waiting.append(d)

        def expire() -> None:
            if d in self._waiting:
                self._waiting.remove(d)
                d.callback(False)

        call = clock.callLater(timeout, expire)
        return d.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])


class _TrackedProtocol(MetadataProtocol):
    tracker: ConnectionTracker

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        try:
            super().connectionLost(reason)
        finally:
            self.tracker.closed()


class _TrackedFactory(MetadataFactory):
    """A L{MetadataFactory} whose connections a L{ConnectionTracker} counts."""

    protocol = _TrackedProtocol

    def __init__(self, *args: Any, tracker: ConnectionTracker, stats: Any = None) -> None:
        super().__init__(*args, stats=stats)
        self.tracker = tracker

    def buildProtocol(self, addr: object) -> Protocol:
        protocol = super().buildProtocol(addr)
        if isinstance(protocol, _TrackedProtocol):  # not a refused connection
            protocol.tracker = self.tracker
            self.tracker.opened()
        return protocol


@implementer(IFileDescriptorReceiver)
class ChannelProtocol(LineOnlyReceiver):
    """The worker's end of its channel: parses the lines and pairs each C{add <name>}
    with the next descriptor received (a descriptor arrives no later than the first byte
    of the line it was sent with)."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def __init__(
        self,
        on_add: Callable[[Namespace | None, int, bool], None],
        on_remove: Callable[[Namespace | None], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._on_add = on_add
        self._on_remove = on_remove
        self._on_lost = on_lost
        self._fds: collections.deque[int] = collections.deque()

    def fileDescriptorReceived(self, descriptor: int) -> None:
        self._fds.append(descriptor)

    def lineReceived(self, line: bytes) -> None:
        try:
            command, namespace, fd = parse_command(line)
        except ProtocolError as e:
            log.error("Ignoring {line!r} from the agent: {error}", line=line, error=str(e))
            return
        if command == "remove":
            self._on_remove(namespace)
            return
        if fd is not None:
            self._on_add(namespace, fd, True)
            return
        if not self._fds:
            log.error("Ignoring {line!r} from the agent: no descriptor came with it", line=line)
            return
        self._on_add(namespace, self._fds.popleft(), False)

    def lineLengthExceeded(self, line: bytes) -> None:
        log.error("Ignoring a channel line of {length} bytes", length=len(line))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        while self._fds:
            os.close(self._fds.popleft())
        self._on_lost()


class WorkerService(Service):
    """One worker: serves every socket its channel hands it with its own L{Proxy}."""

    def __init__(
        self,
        reactor: Any,
        proxy: Any,
        index: int,
        channel_fd: int,
        *,
        inherited: int = 0,
        config_args: tuple[list[str], list[str]] = ([], []),
        drain: float = DRAIN_SECONDS,
        install_signal_handlers: bool = True,
    ) -> None:
        self._reactor = reactor
        self._inherited_left = inherited
        self.proxy = proxy
        self.index = index
        self._channel_fd = channel_fd
        self._config_args = config_args
        self._drain = drain
        self._install_signals = install_signal_handlers
        self.tracker = ConnectionTracker()
        self.ports: dict[Namespace | None, AdoptedUNIXPort] = {}
        self._channel: Any = None
        self._stopping = False
        self._metrics_call: Any = None

    def startService(self) -> None:
        super().startService()
        self.proxy.start()
        factory = Factory.forProtocol(
            lambda: ChannelProtocol(self.add, self.remove, self._parent_gone)
        )
        try:
            self._channel = self._reactor.adoptStreamConnection(
                self._channel_fd, socket.AF_UNIX, factory
            )
        finally:
            os.close(self._channel_fd)  # adopted as a copy
        if self._install_signals:
            # SIGTERM may come twice (systemd signals the whole unit, then the agent
            # signals its workers): the reactor's own handler would stop it twice
            signal.signal(
                signal.SIGTERM, lambda *_: self._reactor.callFromThread(self.terminate, "SIGTERM")
            )
            signal.signal(signal.SIGHUP, lambda *_: self._reactor.callFromThread(self.reload))
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self._inherited_left == 0:
            self._ready()
        self._report_metrics()

    def _report_metrics(self) -> None:
        """Send this worker's metrics to the agent (a log event it keeps, not logs),
        every L{METRICS_INTERVAL} seconds and once more when stopping."""
        self._metrics_call = None
        snapshot = getattr(self.proxy, "metrics", None)
        if snapshot is not None:
            log.debug(
                "Worker {worker_index} metrics",
                worker_index=self.index,
                worker_pid=os.getpid(),
                worker_metrics=snapshot.snapshot(),
            )
        if not self._stopping:
            self._metrics_call = self._reactor.callLater(METRICS_INTERVAL, self._report_metrics)

    def _ready(self) -> None:
        # worker_ready: the agent holds SIGHUP back until it sees this event
        log.info(
            "Worker {index} ready: serving {count} socket(s)",
            index=self.index,
            count=len(self.ports),
            worker_ready=True,
        )

    def add(self, namespace: Namespace | None, fd: int, inherited: bool = False) -> None:
        """Serve the listening socket C{fd} (taken: it is closed here). The worker says it
        is ready once it serves every socket it inherited."""
        try:
            old = self.ports.pop(namespace, None)
            if old is not None:
                old.stopListening()
            factory = _TrackedFactory(
                self.proxy.pipeline,
                namespace,
                self.proxy.limits,
                self._reactor,
                tracker=self.tracker,
                stats=getattr(self.proxy, "stats", None),
            )
            self.ports[namespace] = AdoptedUNIXPort.adopt(self._reactor, fd, factory)
        except OSError as e:
            log.error(
                "Cannot serve {name}: {error}",
                name=socket_name(namespace),
                error=e.strerror or str(e),
            )
        finally:
            os.close(fd)
        if inherited and self._inherited_left > 0:
            self._inherited_left -= 1
            if self._inherited_left == 0:
                self._ready()

    def remove(self, namespace: Namespace | None) -> None:
        port = self.ports.pop(namespace, None)
        if port is not None:
            port.stopListening()

    def reload(self) -> None:
        self.proxy.reload(self._config_args)
        log.info(
            "Reloaded: secret, lookups from {backend}", backend=describe_backend(self.proxy.backend)
        )

    def terminate(self, why: str) -> None:
        """Stop the worker's reactor (once, whatever asks again)."""
        if self._stopping:
            return
        self._stopping = True
        log.info("Worker {index} stopping ({why})", index=self.index, why=why)
        self._reactor.stop()

    def _parent_gone(self) -> None:
        self._channel = None
        if not self._stopping:
            log.warn("The agent's process went away")
        self.terminate("no agent")

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stopping = True
        if self._channel is not None:
            self._channel.loseConnection()
        for port in self.ports.values():
            port.stopListening()
        self.ports.clear()
        d = self.tracker.idle(self._reactor, self._drain)

        def drained(finished: bool) -> Deferred[None]:
            if not finished:
                log.warn(
                    "Stopping with {count} request(s) still in flight after {drain} s",
                    count=self.tracker.live,
                    drain=self._drain,
                )
            if self._metrics_call is not None and self._metrics_call.active():
                self._metrics_call.cancel()
            self._report_metrics()
            return self.proxy.close()

        return d.addCallback(drained)


def _log_to_stdout() -> None:
    """Log events go to stdout as JSON lines, which the agent relays."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    observer: ILogObserver = jsonFileLogObserver(out, recordSeparator="")
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def main(argv: Sequence[str] | None = None) -> int:
    """C{python -m metaproxy.agent.workers}: one worker, started by the agent."""
    parser = argparse.ArgumentParser(
        prog="python -m metaproxy.agent.workers",
        description="One metaproxy worker process; the agent (twistd metaproxy with "
        "metadata_workers >= 2) starts them and hands them the sockets.",
    )
    parser.add_argument("--worker", type=int, default=0, help="this worker's number")
    parser.add_argument(
        "--channel-fd",
        type=int,
        default=CHANNEL_FD,
        help="descriptor of the channel from the agent",
    )
    parser.add_argument(
        "--inherited",
        type=int,
        default=0,
        help="how many listening sockets were inherited at spawn",
    )
    parser.add_argument("--config-file", action="append", default=[])
    parser.add_argument("--config-dir", action="append", default=[])
    args = parser.parse_args(argv)

    from twisted.internet import reactor

    from metaproxy.agent.service import Proxy
    from metaproxy.config import ConfigError, load_settings
    from metaproxy.resolve.base import BackendError

    _log_to_stdout()
    config_args = (list(args.config_file), list(args.config_dir))
    try:
        settings = load_settings(*config_args)
        proxy = Proxy(reactor, settings)
    except (ConfigError, BackendError) as e:
        log.critical("Worker {index} cannot start: {error}", index=args.worker, error=str(e))
        return 1
    service = WorkerService(
        reactor,
        proxy,
        args.worker,
        args.channel_fd,
        inherited=args.inherited,
        config_args=config_args,
        drain=settings.drain_timeout,
    )
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
