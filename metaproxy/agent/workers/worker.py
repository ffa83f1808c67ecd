"""One worker process: C{python -m metaproxy.agent.workers}, started by the agent's
L{metaproxy.agent.workers.pool.WorkerPool}.

Each worker builds its own lookups, cache, Nova client and pipeline
(L{metaproxy.agent.proxy.Proxy}) and accepts on its copy of every socket; the kernel
gives each new connection to one of them. It adopts the sockets it inherited and those
its channel hands it later (L{metaproxy.agent.workers.channel}), and logs C{Worker <n>
ready: serving <k> socket(s)} once its reactor runs and it serves every socket it
inherited.

A TCP socket inside a namespace (L{metaproxy.http.listeners.TCPBinding}) is served by
an L{AdoptedTCPPort} whose factory takes each caller from the connection's peer; the
sockets of one namespace share one factory, hence one C{max_connections_per_namespace}
bound. The worker needs no privilege for them: the agent opened them in the namespace.

Adopting a listening Unix socket that other processes share has four traps, all avoided
by L{AdoptedUNIXPort}: Twisted's C{unix.Port} (what C{adoptStreamPort} builds) chmods the
path to its own mode (0666 by default) and calls C{listen(50)}, which shrinks the shared
backlog; when it stops, it C{shutdown()}s the socket, which makes the kernel refuse new
connections for every process holding it, and it unlinks the path.

Its log events go to its stdout as JSON lines, which the agent relays; its metrics go
the same way every L{METRICS_INTERVAL} seconds, as an event the agent keeps instead of
logging. On SIGTERM it stops accepting, lets the requests in flight finish for up to
L{DRAIN_SECONDS} and exits; a second SIGTERM (systemd signals the whole unit, then the
agent signals its workers) changes nothing. SIGHUP re-reads the secret and the lookup
table. Workers ignore SIGINT (a terminal's Ctrl-C reaches the whole process group): the
agent stops them.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
from collections.abc import Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import ILogObserver, Logger, globalLogBeginner, jsonFileLogObserver
from twisted.python.failure import Failure

from metaproxy.agent.gcfreeze import freeze_when_running
from metaproxy.agent.proxy import Proxy
from metaproxy.agent.workers.channel import CHANNEL_FD, ChannelProtocol, socket_name
from metaproxy.config import ConfigError, load_settings
from metaproxy.http.listeners import AdoptedTCPPort, AdoptedUNIXPort, ListenerKey, TCPBinding
from metaproxy.http.server import MetadataFactory, MetadataProtocol
from metaproxy.namespace import Namespace
from metaproxy.resolve.backends import describe_backend
from metaproxy.resolve.base import BackendError

__all__ = ["DRAIN_SECONDS", "METRICS_INTERVAL", "ConnectionTracker", "WorkerService", "main"]

log = Logger("metaproxy.workers")

#: seconds a stopping worker lets requests in flight finish (by default; the agent's
#: workers use [metaproxy] drain_timeout)
DRAIN_SECONDS = 5.0
#: seconds between two metrics reports of a worker to the agent
METRICS_INTERVAL = 5.0


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

    def __init__(
        self, *args: Any, tracker: ConnectionTracker, stats: Any = None, peer: bool = False
    ) -> None:
        super().__init__(*args, stats=stats, peer=peer)
        self.tracker = tracker

    def buildProtocol(self, addr: object) -> Protocol:
        protocol = super().buildProtocol(addr)
        if isinstance(protocol, _TrackedProtocol):  # not a refused connection
            protocol.tracker = self.tracker
            self.tracker.opened()
        return protocol


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
        self.ports: dict[ListenerKey, AdoptedUNIXPort | AdoptedTCPPort] = {}
        # a namespace's TCP sockets share one factory (and its connection bound)
        self._peer_factories: dict[Namespace, _TrackedFactory] = {}
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

    def add(self, key: ListenerKey, fd: int, inherited: bool = False) -> None:
        """Serve the listening socket C{fd} (taken: it is closed here). The worker says it
        is ready once it serves every socket it inherited."""
        try:
            old = self.ports.pop(key, None)
            if old is not None:
                old.stopListening()
            port: AdoptedUNIXPort | AdoptedTCPPort
            if isinstance(key, TCPBinding):
                port = AdoptedTCPPort.adopt(self._reactor, fd, self._peer_factory(key.namespace))
            else:
                port = AdoptedUNIXPort.adopt(self._reactor, fd, self._factory(key))
            self.ports[key] = port
        except OSError as e:
            log.error(
                "Cannot serve {name}: {error}",
                name=socket_name(key),
                error=e.strerror or str(e),
            )
        finally:
            os.close(fd)
        if inherited and self._inherited_left > 0:
            self._inherited_left -= 1
            if self._inherited_left == 0:
                self._ready()

    def _factory(self, namespace: Namespace | None, peer: bool = False) -> _TrackedFactory:
        return _TrackedFactory(
            self.proxy.pipeline,
            namespace,
            self.proxy.limits,
            self._reactor,
            tracker=self.tracker,
            stats=getattr(self.proxy, "stats", None),
            peer=peer,
        )

    def _peer_factory(self, namespace: Namespace) -> _TrackedFactory:
        factory = self._peer_factories.get(namespace)
        if factory is None:
            factory = self._peer_factories[namespace] = self._factory(namespace, peer=True)
        return factory

    def remove(self, key: ListenerKey) -> None:
        port = self.ports.pop(key, None)
        if port is not None:
            port.stopListening()
        if isinstance(key, TCPBinding) and not any(
            isinstance(k, TCPBinding) and k.namespace == key.namespace for k in self.ports
        ):
            self._peer_factories.pop(key.namespace, None)

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
        self._peer_factories.clear()
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
    freeze_when_running(reactor)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0
