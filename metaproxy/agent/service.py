"""Putting the agent together: lookups, Nova client, pipeline, sockets, namespace
registry, the router namespaces it serves itself (C{router_namespaces = serve}), control
socket, and SIGHUP reloads.

With C{metadata_workers} <= 1 everything runs on this process's reactor. With N >= 2 this
process binds the sockets, keeps the namespace registry, the control socket and SIGHUP,
and runs N worker processes (L{metaproxy.agent.workers}) that accept on every socket and serve
the requests with their own L{metaproxy.agent.proxy.Proxy}.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from twisted.python.components import Componentized

from metaproxy.agent.builders import chassis_mode, nova_probe_client, state_reporter, worker_args
from metaproxy.agent.control import ControlFactory
from metaproxy.agent.drain import Drain
from metaproxy.agent.ops_listener import OpsListener
from metaproxy.agent.proxy import Proxy
from metaproxy.agent.readiness import Readiness
from metaproxy.agent.registry import NamespaceRegistry
from metaproxy.agent.router_watch import RouterWatch, twisted_inotify
from metaproxy.agent.workers.pool import WorkerPool
from metaproxy.config import ConfigError, Settings, load_settings
from metaproxy.http.listeners import ListenError, Listeners, prepare_socket_path
from metaproxy.nova.client import NovaClient
from metaproxy.ops.health import NovaProbe, nova_check
from metaproxy.ops.logs import LogSetup
from metaproxy.ops.metrics import Metrics, WorkerTotals
from metaproxy.ops.sdnotify import Notifier, watchdog_interval
from metaproxy.ops.web import OpsResource, OpsSite
from metaproxy.resolve.backends import backend_ready, describe_backend
from metaproxy.resolve.base import PortBackend

__all__ = ["AgentService"]

log = Logger("metaproxy.service")


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
        notifier: Notifier | None = None,
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
            self.listeners = Listeners(
                reactor,
                factory_for=self.proxy.factory_for,
                peer_factory_for=self.proxy.peer_factory_for,
                **listen_args,
            )
        self.registry = NamespaceRegistry(
            reactor,
            self.listeners,
            declared=settings.namespaces,
            directory=settings.namespace_dir,
            rescan_interval=settings.namespace_rescan_interval,
            use_inotify=use_inotify,
        )
        self.registry.setServiceParent(self)
        #: the listeners in every qrouter- namespace (router_namespaces = serve)
        self.routers: RouterWatch | None = None
        if settings.router_namespaces == "serve":
            self.routers = RouterWatch(
                reactor,
                self.listeners,
                id_prefix=settings.router_id_prefix,
                rescan_interval=settings.namespace_rescan_interval,
                inotify=twisted_inotify if use_inotify else None,
            )
            self.routers.setServiceParent(self)

        #: the ML2/OVN chassis's metadata agent (settings.ovn_chassis): provisions the
        #: ovnmeta- namespaces and opens their listeners on self.listeners
        self.chassis: Any = None
        if settings.ovn_chassis:
            self.chassis = chassis_mode(reactor, settings, self.listeners)
            metrics = self.proxy.metrics if self.proxy is not None else self.own_metrics
            metrics.add_source(self.chassis.metric_samples)
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
                self._probe_nova = nova_probe_client(reactor, settings)
                forward = self._probe_nova.forward
            self.probe = NovaProbe(reactor, forward, settings.health_probe_interval)
            site = OpsSite(OpsResource(self.snapshot, self.checks))
            OpsListener(reactor, settings.metrics_listen, site).setServiceParent(self)

        self.state_reporter = state_reporter(reactor, settings)
        if self.state_reporter is not None:
            self.state_reporter.setServiceParent(self)
        #: systemd's Type=notify: READY once serving with lookups ready, STOPPING on drain
        self.readiness = Readiness(
            reactor,
            notifier if notifier is not None else Notifier(),
            self._serving,
            watchdog=watchdog_interval(),
        )

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
        if self.chassis is not None:
            checks["ovn_chassis"] = self.chassis.check()
        return checks

    def _serving(self) -> tuple[bool, str]:
        """Whether every socket listens and the lookups can answer, and a status line
        saying so, or what is still awaited."""
        waiting = [text for name, (ok, text) in self.checks().items() if not ok and name != "nova"]
        if waiting:
            return False, "starting: " + "; ".join(waiting)
        routers = (
            f", {len(self.routers.serving)} router namespace(s)" if self.routers is not None else ""
        )
        chassis = "" if self.chassis is None else "; " + self.chassis.check()[1]
        return True, (
            f"serving {1 + len(self.listeners.namespaces)} socket(s){routers}; "
            f"lookups from {self._backend_text()}{chassis}"
        )

    def _backend_text(self) -> str:
        if self.proxy is not None:
            return describe_backend(self.proxy.backend)
        return self.settings.lookup_backend

    # -- drain ------------------------------------------------------------------------

    def _in_flight(self) -> int:
        return self.proxy.stats.open if self.proxy is not None else 0

    def _stop_listening(self) -> Any:
        """Close the metadata sockets (workers: done by the pool when it stops them)."""
        if self.registry.running:
            self.registry.stopService()  # no namespace added back while draining
        if self.routers is not None and self.routers.running:
            self.routers.stopService()
        if self.chassis is not None:
            self.chassis.provisioner.stop()  # no listener opened while draining
        if self._control_port is not None:
            self._control_port.stopListening()
            self._control_port = None
        if self.proxy is None:
            return None
        return self.listeners.stop()

    def _sigterm(self) -> None:
        if not self.drain.started:
            self.readiness.stopping(f"draining {self._in_flight()} request(s) in flight")
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
        if self.chassis is not None:
            self.chassis.start()
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
        if self.log_setup is not None:
            log.info("Log lines go to {destinations}", destinations=self.log_setup.description)
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
        # READY only once the reactor runs, SIGTERM's drain installed: a manager that stops
        # the service right after READY gets a drain, not the reactor's plain stop
        self._reactor.callWhenRunning(self.readiness.start)

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
            if self.routers is not None:
                self.routers.sync()
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
            if self.routers is not None:
                self.routers.sync()
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
        self.readiness.stopping("stopping")  # once: not again after the drain's
        self.readiness.stop()
        stops = [maybeDeferred(super().stopService)]
        if self.chassis is not None:
            # its listeners closed (the namespaces stay), its databases let go
            stops.append(self.chassis.stop_deferred())
        stops.append(self.listeners.stop())
        if self._probe_nova is not None:
            stops.append(self._probe_nova.close())
        if self.proxy is not None:
            stops.append(self.proxy.close())
        if self._control_port is not None:
            stops.append(maybeDeferred(self._control_port.stopListening))
            self._control_port = None
        return DeferredList(stops, consumeErrors=True)
