"""Putting the agent together: lookups, Nova client, pipeline, sockets, namespace
registry, control socket, and SIGHUP reloads.

With C{metadata_workers} <= 1 everything runs on this process's reactor. With N >= 2 this
process binds the sockets, keeps the namespace registry, the control socket and SIGHUP,
and runs N worker processes (L{metaproxy.workers}) that accept on every socket and serve
the requests with their own L{Proxy}.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger

from metaproxy.config import ConfigError, Settings, load_settings
from metaproxy.control import ControlFactory
from metaproxy.listeners import ListenError, Listeners, prepare_socket_path
from metaproxy.namespace import Namespace
from metaproxy.nova import NovaClient
from metaproxy.pipeline import Pipeline
from metaproxy.registry import NamespaceRegistry
from metaproxy.resolve.backends import build_backend, describe_backend, reload_backend, \
    start_backend, stop_backend
from metaproxy.resolve.base import BackendError, PortBackend
from metaproxy.resolve.cache import CachingBackend
from metaproxy.resolve.resolver import InstanceResolver
from metaproxy.server import Limits, MetadataFactory
from metaproxy.tls import nova_tls_policy
from metaproxy.workers import WorkerPool

__all__ = ["AgentService", "Proxy"]

log = Logger("metaproxy.service")


class Proxy:
    """Everything a request needs: the lookup backend and its cache, the Nova client, the
    pipeline and the request limits. One per serving process.

    @raise BackendError: from the constructor, when the lookup backend cannot be built.
    """

    def __init__(self, reactor: Any, settings: Settings,
                 backend: PortBackend | None = None) -> None:
        self._reactor = reactor
        self.backend = backend if backend is not None else build_backend(reactor, settings)
        self.cache = CachingBackend(self.backend, reactor,
                                    ttl=settings.cache_expiration_time,
                                    enabled=settings.cache_enabled)
        tls = None
        if settings.nova_metadata_protocol == "https":
            tls = nova_tls_policy(ca_file=settings.auth_ca_cert,
                                  insecure=settings.nova_metadata_insecure,
                                  client_cert=settings.nova_client_cert or None,
                                  client_key=settings.nova_client_priv_key or None)
        self.nova = NovaClient(reactor, settings.nova_url, timeout=settings.nova_timeout,
                               connect_timeout=settings.nova_connect_timeout,
                               pool_size=settings.nova_pool_size,
                               max_in_flight=settings.nova_max_in_flight, tls=tls)
        self.pipeline = Pipeline(InstanceResolver(self.cache), self.nova,
                                 settings.metadata_proxy_shared_secret.encode("utf-8"),
                                 retry_after=settings.retry_after,
                                 gzip_decode=settings.gzip_decode,
                                 refresh_on_404=settings.cache_enabled)
        self.limits = Limits(max_header_bytes=settings.max_header_bytes,
                             max_headers=settings.max_headers,
                             max_body_bytes=settings.max_body_bytes,
                             request_timeout=settings.request_timeout)

    def factory_for(self, namespace: Namespace | None) -> MetadataFactory:
        """The protocol factory of one socket (C{None}: the shared socket)."""
        return MetadataFactory(self.pipeline, namespace, self.limits, self._reactor)

    def reload(self, config_args: tuple[list[str], list[str]]) -> None:
        """Re-read the configuration's secret and the lookup table; a bad file is
        reported and the running state kept. The cache is emptied."""
        try:
            settings = load_settings(*config_args)
        except ConfigError as e:
            log.error("Reload: configuration not reloaded, keeping the running one: {error}",
                      error=str(e))
        else:
            self.pipeline.secret = settings.metadata_proxy_shared_secret.encode("utf-8")
        try:
            reload_backend(self.backend)
        except BackendError as e:
            log.error("Reload: lookups not reloaded, keeping the running ones: {error}",
                      error=str(e))
        self.cache.clear()

    def start(self) -> None:
        """Start the lookup backend's own work (connections, threads, first sync)."""
        start_backend(self.backend)

    def close(self) -> "Deferred[Any]":
        return DeferredList([self.nova.close(), stop_backend(self.backend)],
                            consumeErrors=True)


class AgentService(MultiService):
    """The whole agent. Build it with the reactor and loaded L{Settings}.

    With C{settings.metadata_workers} >= 2 this process holds the sockets and supervises
    the workers (L{metaproxy.workers.WorkerPool}); otherwise it serves them itself.
    """

    def __init__(self, reactor: Any, settings: Settings, backend: PortBackend | None = None,
                 *, config_files: tuple[str, ...] = (), config_dirs: tuple[str, ...] = (),
                 install_signal_handlers: bool = True, use_inotify: bool = True) -> None:
        super().__init__()
        self._config_args = (list(config_files), list(config_dirs))
        self._reactor = reactor
        self.settings = settings
        self._install_signals = install_signal_handlers
        self.proxy: Proxy | None = None
        self.workers: WorkerPool | None = None
        listen_args = dict(shared_socket=settings.metadata_proxy_socket,
                           socket_dir=settings.namespace_socket_dir, mode=settings.socket_mode,
                           backlog=settings.metadata_backlog)
        if settings.metadata_workers >= 2:
            self.workers = WorkerPool(reactor, settings.metadata_workers,
                                      worker_args(config_files, config_dirs))
            self.listeners = Listeners(reactor, handoff=self.workers, **listen_args)
        else:
            self.proxy = Proxy(reactor, settings, backend)
            self.listeners = Listeners(reactor, factory_for=self.proxy.factory_for,
                                       **listen_args)
        self.registry = NamespaceRegistry(
            reactor, self.listeners, declared=settings.namespaces,
            directory=settings.namespace_dir,
            rescan_interval=settings.namespace_rescan_interval, use_inotify=use_inotify)
        self.registry.setServiceParent(self)
        if self.workers is not None:
            # started after the registry, so the first workers get every socket at spawn
            self.workers.setServiceParent(self)
        self._control_port = None
        self._previous_sighup = None
        self.state_reporter = state_reporter(reactor, settings)
        if self.state_reporter is not None:
            self.state_reporter.setServiceParent(self)

    def startService(self) -> None:
        try:
            self.listeners.start_shared()
            if self.settings.control_socket:
                prepare_socket_path(self.settings.control_socket)
                self._control_port = self._reactor.listenUNIX(
                    self.settings.control_socket, ControlFactory(self.registry),
                    backlog=16, mode=0o600, wantPID=False)
        except ListenError as e:
            log.critical("Cannot start: {error}", error=str(e))
            self._reactor.callWhenRunning(self._reactor.stop)
            return
        super().startService()
        if self.proxy is not None:
            self.proxy.start()
        if self.workers is None:
            served_by = "this process"
        else:
            served_by = f"{self.settings.metadata_workers} worker processes"
        log.info("metaproxy serving {shared} and {count} namespace socket(s) in {directory} "
                 "from {served_by}; Nova at {nova}; lookups from {backend}",
                 shared=self.settings.metadata_proxy_socket,
                 count=len(self.listeners.namespaces),
                 directory=self.settings.namespace_socket_dir, served_by=served_by,
                 nova=self.settings.nova_url,
                 backend=describe_backend(self.proxy.backend) if self.proxy is not None
                 else self.settings.lookup_backend)
        if self._install_signals:
            self._previous_sighup = signal.signal(
                signal.SIGHUP, lambda *_: self._reactor.callFromThread(self.reload))

    def reload(self) -> None:
        """SIGHUP: re-read the configuration's secret, the lookup table and the namespace
        directory. A bad file is reported and the running state kept. With workers, this
        process re-reads the namespace directory and passes SIGHUP on to every worker,
        which re-reads the secret and the table itself."""
        if self.proxy is not None:
            self.proxy.reload(self._config_args)
            self.registry.sync()
            log.info("Reloaded: secret, lookups from {backend}, namespaces ({count})",
                     backend=describe_backend(self.proxy.backend),
                     count=len(self.listeners.namespaces))
        else:
            assert self.workers is not None
            self.registry.sync()
            told = self.workers.reload()
            log.info("Reloaded: namespaces ({count}); {told} worker(s) told to reload the "
                     "secret and the lookup table", count=len(self.listeners.namespaces),
                     told=told)

    def stopService(self) -> Any:
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        stops = [maybeDeferred(super().stopService), self.listeners.stop()]
        if self.proxy is not None:
            stops.append(self.proxy.close())
        if self._control_port is not None:
            stops.append(maybeDeferred(self._control_port.stopListening))
            self._control_port = None
        return DeferredList(stops, consumeErrors=True)


def state_reporter(reactor: Any, settings: Settings) -> Any:
    """The L{metaproxy.statereport.StateReporter} for C{settings}, or None: state reports
    need a C{transport_url} and C{[AGENT] report_interval} > 0, as upstream's do."""
    if not settings.transport_url or settings.report_interval <= 0:
        return None
    from metaproxy.config import rpc_timeout
    from metaproxy.rpcbus import NeutronRpc
    from metaproxy.statereport import StateReporter, agent_state

    try:
        rpc = NeutronRpc(settings, lookup_timeout=rpc_timeout(settings),
                         report_timeout=settings.report_interval)
    except Exception as e:
        log.error("State reports to neutron-server disabled: [DEFAULT] transport_url cannot "
                  "be used ({error})", error=type(e).__name__)
        return None
    return StateReporter(reactor, rpc.report_state, agent_state(settings),
                         settings.report_interval, close=rpc.close)


def worker_args(config_files: tuple[str, ...] | list[str],
                config_dirs: tuple[str, ...] | list[str]) -> list[str]:
    """The configuration arguments a worker is started with (the agent's own)."""
    args: list[str] = []
    for path in config_files:
        args += ["--config-file", path]
    for path in config_dirs:
        args += ["--config-dir", path]
    return args
