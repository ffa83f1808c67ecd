"""Putting the agent together: lookups, Nova client, pipeline, sockets, namespace
registry, control socket, and SIGHUP reloads.

With C{metadata_workers} <= 1 everything runs on this process's reactor. With N >= 2 this
process binds the sockets, keeps the namespace registry, the control socket and SIGHUP,
and runs N worker processes (L{metaproxy.agent.workers}) that accept on every socket and serve
the requests with their own L{Proxy}.
"""

from __future__ import annotations

import signal
import weakref
from collections.abc import Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from twisted.python.components import Componentized

from metaproxy.agent.control import ControlFactory
from metaproxy.agent.drain import Drain
from metaproxy.agent.registry import NamespaceRegistry
from metaproxy.agent.workers import WorkerPool
from metaproxy.config import HAPROXY_TIMEOUT_SERVER, ConfigError, Settings, load_settings
from metaproxy.guard.policy import RequestPolicy
from metaproxy.guard.ratelimit import RateLimiter, Window
from metaproxy.http.connlimit import ConnectionLimit
from metaproxy.http.listeners import ListenError, Listeners, prepare_socket_path
from metaproxy.http.server import Limits, MetadataFactory
from metaproxy.namespace import Namespace
from metaproxy.nova.client import NovaClient
from metaproxy.nova.endpoints import NovaEndpoints
from metaproxy.nova.tls import nova_tls_policy
from metaproxy.ops.health import NovaProbe, nova_check
from metaproxy.ops.logs import LogSetup
from metaproxy.ops.metrics import Metrics, RequestStats, WorkerTotals
from metaproxy.ops.protection_metrics import protection_samples
from metaproxy.ops.web import OpsListener, OpsResource, OpsSite
from metaproxy.pipeline import Pipeline
from metaproxy.resolve.backends import (
    backend_ready,
    build_backend,
    describe_backend,
    reload_backend,
    start_backend,
    stop_backend,
)
from metaproxy.resolve.base import BackendError, PortBackend
from metaproxy.resolve.cache import CachingBackend
from metaproxy.resolve.resolver import InstanceResolver

__all__ = ["AgentService", "Proxy"]

log = Logger("metaproxy.service")


def nova_tls(settings: Settings) -> Any:
    """The TLS policy of the https Nova endpoints (built once; None without any)."""
    if not any(url.startswith("https:") for url in settings.nova_urls):
        return None
    return nova_tls_policy(
        ca_file=settings.auth_ca_cert,
        insecure=settings.nova_metadata_insecure,
        client_cert=settings.nova_client_cert or None,
        client_key=settings.nova_client_priv_key or None,
    )


def nova_client(
    reactor: Any,
    settings: Settings,
    *,
    pool_size: int | None = None,
    max_in_flight: int | None = None,
) -> NovaClient:
    """The Nova client the settings describe (TLS included)."""
    tls = nova_tls(settings) if settings.nova_url.startswith("https:") else None
    return NovaClient(
        reactor,
        settings.nova_url,
        timeout=settings.nova_timeout,
        connect_timeout=settings.nova_connect_timeout,
        pool_size=pool_size or settings.nova_pool_size,
        max_in_flight=max_in_flight or settings.nova_max_in_flight,
        tls=tls,
    )


class Proxy:
    """Everything a request needs: the lookup backend and its cache, the Nova client, the
    pipeline and the request limits. One per serving process.

    @raise BackendError: from the constructor, when the lookup backend cannot be built.
    """

    def __init__(
        self, reactor: Any, settings: Settings, backend: PortBackend | None = None
    ) -> None:
        self._reactor = reactor
        self.backend = backend if backend is not None else build_backend(reactor, settings)
        # a backend answering from a replica the server keeps current (OVN) gains
        # nothing from kept answers, only staleness: only in-flight lookups are shared
        in_memory = bool(getattr(self.backend, "answers_from_memory", False))
        self.cache = CachingBackend(
            self.backend,
            reactor,
            ttl=settings.cache_expiration_time,
            enabled=settings.cache_enabled and not in_memory,
        )
        tls = nova_tls(settings)
        self.nova = NovaEndpoints.build(
            reactor,
            settings.nova_urls,
            timeout=settings.nova_timeout,
            connect_timeout=settings.nova_connect_timeout,
            pool_size=settings.nova_pool_size,
            max_in_flight=settings.nova_max_in_flight,
            max_queued=settings.nova_max_queued,
            tls=tls,
            failures=settings.nova_breaker_failures,
            cooldown=settings.nova_breaker_cooldown,
            log_interval=settings.refusal_log_interval,
        )
        self.policy = RequestPolicy(
            reactor,
            forwarded_for=settings.guest_forwarded_for,
            limiter=rate_limiter(reactor, settings),
            log_interval=settings.refusal_log_interval,
        )
        self.pipeline = Pipeline(
            InstanceResolver(self.cache),
            self.nova,
            settings.metadata_proxy_shared_secret.encode("utf-8"),
            retry_after=settings.retry_after,
            gzip_decode=settings.gzip_decode,
            refresh_on_404=settings.cache_enabled,
            policy=self.policy,
            clock=reactor,
            answer_within=HAPROXY_TIMEOUT_SERVER - 1,
            nova_timeout=settings.nova_timeout,
        )
        self.limits = Limits(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            max_body_bytes=settings.max_body_bytes,
            request_timeout=settings.request_timeout,
            max_connections_per_namespace=settings.max_connections_per_namespace,
            connections=ConnectionLimit(settings.max_connections),
            refusal_log_interval=settings.refusal_log_interval,
            retry_after=max(1, settings.retry_after),
        )
        #: what the server counts (metaproxy.ops.metrics), shared by every socket's factory
        self.stats = RequestStats()
        self.metrics = Metrics(
            self.stats, cache=self.cache, nova=self.nova, ready=lambda: backend_ready(self.backend)
        )
        self._factories: weakref.WeakSet[MetadataFactory] = weakref.WeakSet()
        self.metrics.add_source(
            protection_samples(
                self.policy,
                self.limits,
                lambda: sum(f.connections.refused for f in list(self._factories)),
                self.nova,
            )
        )

    def factory_for(self, namespace: Namespace | None) -> MetadataFactory:
        """The protocol factory of one socket (C{None}: the shared socket)."""
        factory = MetadataFactory(
            self.pipeline, namespace, self.limits, self._reactor, stats=self.stats
        )
        self._factories.add(factory)
        return factory

    def reload(self, config_args: tuple[list[str], list[str]]) -> Settings | None:
        """Re-read the configuration's secret and the lookup table; a bad file is
        reported and the running state kept. The cache is emptied.

        @return: the settings read, or None when the configuration could not be read.
        """
        settings: Settings | None = None
        ok = True
        try:
            settings = load_settings(*config_args)
        except ConfigError as e:
            ok = False
            log.error(
                "Reload: configuration not reloaded, keeping the running one: {error}", error=str(e)
            )
        else:
            self.pipeline.secret = settings.metadata_proxy_shared_secret.encode("utf-8")
        try:
            reload_backend(self.backend)
        except BackendError as e:
            ok = False
            log.error(
                "Reload: lookups not reloaded, keeping the running ones: {error}", error=str(e)
            )
        self.cache.clear()
        self.metrics.reloaded("ok" if ok else "failed")
        return settings

    def start(self) -> None:
        """Start the lookup backend's own work (connections, threads, first sync)."""
        start_backend(self.backend)

    def close(self) -> Deferred[Any]:
        return DeferredList([self.nova.close(), stop_backend(self.backend)], consumeErrors=True)


class AgentService(MultiService):
    """The whole agent. Build it with the reactor and loaded L{Settings}.

    With C{settings.metadata_workers} >= 2 this process holds the sockets and supervises
    the workers (L{metaproxy.agent.workers.WorkerPool}); otherwise it serves them itself.
    """

    def __init__(
        self,
        reactor: Any,
        settings: Settings,
        backend: PortBackend | None = None,
        *,
        config_files: tuple[str, ...] = (),
        config_dirs: tuple[str, ...] = (),
        install_signal_handlers: bool = True,
        use_inotify: bool = True,
        log_setup: LogSetup | None = None,
    ) -> None:
        super().__init__()
        self.log_setup = log_setup
        self._config_args = (list(config_files), list(config_dirs))
        self._reactor = reactor
        self.settings = settings
        self._install_signals = install_signal_handlers
        self.proxy: Proxy | None = None
        self.workers: WorkerPool | None = None
        listen_args = dict(
            shared_socket=settings.metadata_proxy_socket,
            socket_dir=settings.namespace_socket_dir,
            mode=settings.socket_mode,
            backlog=settings.metadata_backlog,
        )
        #: the workers' metrics, added up (metadata_workers >= 2)
        self.worker_totals = WorkerTotals()
        #: this process's own metrics when workers serve (reloads)
        self.own_metrics = Metrics()
        if settings.metadata_workers >= 2:
            self.workers = WorkerPool(
                reactor,
                settings.metadata_workers,
                worker_args(config_files, config_dirs),
                publisher=self._from_worker,
                kill_after=settings.drain_timeout + 5,
            )
            self.listeners = Listeners(reactor, handoff=self.workers, **listen_args)
        else:
            self.proxy = Proxy(reactor, settings, backend)
            self.listeners = Listeners(reactor, factory_for=self.proxy.factory_for, **listen_args)
        self.registry = NamespaceRegistry(
            reactor,
            self.listeners,
            declared=settings.namespaces,
            directory=settings.namespace_dir,
            rescan_interval=settings.namespace_rescan_interval,
            use_inotify=use_inotify,
        )
        self.registry.setServiceParent(self)
        if self.workers is not None:
            # started after the registry, so the first workers get every socket at spawn
            self.workers.setServiceParent(self)
        self._control_port = None
        self._previous_sighup = None
        self._previous_sigterm = None
        self._previous_sigusr1 = None
        self.drain = Drain(
            reactor,
            stop_listening=self._stop_listening,
            in_flight=self._in_flight,
            timeout=settings.drain_timeout,
            stop=reactor.stop,
        )
        self.probe: NovaProbe | None = None
        self._probe_nova: NovaClient | None = None
        if settings.metrics_listen:
            if self.proxy is not None:
                forward = self.proxy.nova.forward
            else:
                self._probe_nova = nova_client(reactor, settings, pool_size=1, max_in_flight=2)
                forward = self._probe_nova.forward
            self.probe = NovaProbe(reactor, forward, settings.health_probe_interval)
            site = OpsSite(OpsResource(self.snapshot, self.checks))
            OpsListener(reactor, settings.metrics_listen, site).setServiceParent(self)

        self.state_reporter = state_reporter(reactor, settings)
        if self.state_reporter is not None:
            self.state_reporter.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> Any:
        # twistd hands its application here before it starts logging, and logs to the
        # application's ILogObserver when it has one (metaproxy.ops.logs)
        if self.log_setup is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.log_setup.observer)
        return super().setServiceParent(parent)

    # -- metrics and health ----------------------------------------------------------

    def _from_worker(self, event: dict) -> None:
        """A worker's log event: its metrics are kept, everything else is logged."""
        snap = event.get("worker_metrics")
        if isinstance(snap, dict):
            self.worker_totals.report(
                int(event.get("worker_index", 0)), int(event.get("worker_pid", 0)), snap
            )
            return
        globalLogPublisher(event)

    def snapshot(self) -> dict:
        """Every metric, this process's or its workers' added up."""
        if self.proxy is not None:
            return self.proxy.metrics.snapshot()
        return self.worker_totals.snapshot(self.own_metrics.snapshot())

    def checks(self) -> Mapping[str, tuple[bool, str]]:
        """The /healthz checks."""
        checks: dict[str, tuple[bool, str]] = {}
        if self.probe is not None:
            checks["nova"] = nova_check(self.probe)
        if self.drain.started:
            checks["serving"] = (False, "stopping (SIGTERM)")
        if self.proxy is not None:
            ready = backend_ready(self.proxy.backend)
            checks["lookups"] = (
                ready,
                describe_backend(self.proxy.backend) + ("" if ready else ": not ready"),
            )
        else:
            assert self.workers is not None
            reports = self.worker_totals.reporting()
            running = len(self.workers.pids())
            ready = sum(snap.get("ready", [0, 0])[0] for snap in reports.values())
            want = self.settings.metadata_workers
            checks["workers"] = (running == want, f"{running} of {want} running")
            checks["lookups"] = (
                ready == want and running == want,
                f"{ready} of {want} workers report their lookups ready",
            )
        return checks

    # -- drain ------------------------------------------------------------------------

    def _in_flight(self) -> int:
        return self.proxy.stats.open if self.proxy is not None else 0

    def _stop_listening(self) -> Any:
        """Close the metadata sockets (workers: done by the pool when it stops them)."""
        if self.registry.running:
            self.registry.stopService()  # no namespace added back while draining
        if self._control_port is not None:
            self._control_port.stopListening()
            self._control_port = None
        if self.proxy is None:
            return None
        return self.listeners.stop()

    def _sigterm(self) -> None:
        self.drain.start("SIGTERM")

    def _install_sigterm(self) -> None:
        if self.running and self._previous_sigterm is None:
            self._previous_sigterm = signal.signal(
                signal.SIGTERM, lambda *_: self._reactor.callFromThread(self._sigterm)
            )

    def startService(self) -> None:
        try:
            self.listeners.start_shared()
            if self.settings.control_socket:
                prepare_socket_path(self.settings.control_socket)
                self._control_port = self._reactor.listenUNIX(
                    self.settings.control_socket,
                    ControlFactory(self.registry),
                    backlog=16,
                    mode=0o600,
                    wantPID=False,
                )
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
        log.info(
            "metaproxy serving {shared} and {count} namespace socket(s) in {directory} "
            "from {served_by}; Nova at {nova}; lookups from {backend}",
            shared=self.settings.metadata_proxy_socket,
            count=len(self.listeners.namespaces),
            directory=self.settings.namespace_socket_dir,
            served_by=served_by,
            nova=self.settings.nova_url,
            backend=describe_backend(self.proxy.backend)
            if self.proxy is not None
            else self.settings.lookup_backend,
        )
        if self.probe is not None:
            self.probe.start()
        if self._install_signals:
            self._previous_sighup = signal.signal(
                signal.SIGHUP, lambda *_: self._reactor.callFromThread(self.reload)
            )
            # our SIGTERM drains, then stops the reactor: twistd exits 0 (metaproxy.agent.drain);
            # installed once the reactor runs, after the reactor's own handler
            self._reactor.callWhenRunning(self._install_sigterm)
            if self.log_setup is not None:
                self._previous_sigusr1 = signal.signal(
                    signal.SIGUSR1, lambda *_: self._reactor.callFromThread(self.log_setup.reopen)
                )

    def reload(self) -> None:
        """SIGHUP: re-read the configuration's secret, the lookup table and the namespace
        directory. A bad file is reported and the running state kept. With workers, this
        process re-reads the namespace directory and passes SIGHUP on to every worker,
        which re-reads the secret and the table itself."""
        if self.log_setup is not None:
            self.log_setup.reopen()
        if self.proxy is not None:
            settings = self.proxy.reload(self._config_args)
            self._apply_log_settings(settings)
            self.registry.sync()
            log.info(
                "Reloaded: secret, lookups from {backend}, namespaces ({count})",
                backend=describe_backend(self.proxy.backend),
                count=len(self.listeners.namespaces),
            )
        else:
            assert self.workers is not None
            try:
                settings = load_settings(*self._config_args)
            except ConfigError:
                settings = None  # each worker says what is wrong
            self.own_metrics.reloaded("ok" if settings is not None else "failed")
            self._apply_log_settings(settings)
            self.registry.sync()
            told = self.workers.reload()
            log.info(
                "Reloaded: namespaces ({count}); {told} worker(s) told to reload the "
                "secret and the lookup table",
                count=len(self.listeners.namespaces),
                told=told,
            )

    def _apply_log_settings(self, settings: Settings | None) -> None:
        if settings is not None and self.log_setup is not None:
            self.log_setup.apply(settings)
            log.debug("Log level now debug: [DEFAULT] debug = true")

    def stopService(self) -> Any:
        for signum, attr in (
            (signal.SIGHUP, "_previous_sighup"),
            (signal.SIGTERM, "_previous_sigterm"),
            (signal.SIGUSR1, "_previous_sigusr1"),
        ):
            previous = getattr(self, attr)
            if previous is not None:
                signal.signal(signum, previous)
                setattr(self, attr, None)
        if self.probe is not None:
            self.probe.stop()
        stops = [maybeDeferred(super().stopService), self.listeners.stop()]
        if self._probe_nova is not None:
            stops.append(self._probe_nova.close())
        if self.proxy is not None:
            stops.append(self.proxy.close())
        if self._control_port is not None:
            stops.append(maybeDeferred(self._control_port.stopListening))
            self._control_port = None
        return DeferredList(stops, consumeErrors=True)


def rate_limiter(clock: Any, settings: Settings) -> RateLimiter | None:
    """The rate limiter of C{[metadata_rate_limiting]}, or C{None} when it is off."""
    if not settings.rate_limit_enabled:
        return None
    return RateLimiter(
        clock,
        Window(settings.base_window_duration, settings.base_query_rate_limit),
        Window(settings.burst_window_duration, settings.burst_query_rate_limit),
        ip_versions=settings.ip_versions,
        max_sources=settings.rate_limit_max_sources,
    )


def state_reporter(reactor: Any, settings: Settings) -> Any:
    """The L{metaproxy.neutron.statereport.StateReporter} for C{settings}, or None: state reports
    need a C{transport_url} and C{[AGENT] report_interval} > 0, as upstream's do."""
    if not settings.transport_url or settings.report_interval <= 0:
        return None
    from metaproxy.config import rpc_timeout
    from metaproxy.neutron.bus import NeutronRpc
    from metaproxy.neutron.statereport import StateReporter, agent_state

    try:
        rpc = NeutronRpc(
            settings,
            lookup_timeout=rpc_timeout(settings),
            report_timeout=settings.report_interval,
            reactor=reactor,
        )
    except Exception as e:
        log.error(
            "State reports to neutron-server disabled: [DEFAULT] transport_url cannot "
            "be used ({error})",
            error=type(e).__name__,
        )
        return None
    return StateReporter(
        reactor, rpc.report_state, agent_state(settings), settings.report_interval, close=rpc.close
    )


def worker_args(
    config_files: tuple[str, ...] | list[str], config_dirs: tuple[str, ...] | list[str]
) -> list[str]:
    """The configuration arguments a worker is started with (the agent's own)."""
    args: list[str] = []
    for path in config_files:
        args += ["--config-file", path]
    for path in config_dirs:
        args += ["--config-dir", path]
    return args
