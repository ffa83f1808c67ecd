"""What serves the metadata requests in one process: L{Proxy}.

One per serving process: the agent's own with C{metadata_workers} <= 1, else each
worker's (L{metaproxy.agent.workers.worker}). It holds the lookup backend and its cache,
the Nova endpoints, the request policy, the pipeline, the request limits and the
process's metrics, and builds the protocol factory of each socket it serves.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from metaproxy.agent.builders import nova_endpoints, rate_limiter
from metaproxy.config import ConfigError, Settings, load_settings
from metaproxy.config.checks import HAPROXY_TIMEOUT_SERVER
from metaproxy.guard.policy import RequestPolicy
from metaproxy.http.connlimit import ConnectionLimit
from metaproxy.http.server import Limits, MetadataFactory
from metaproxy.namespace import Namespace
from metaproxy.ops.metrics import Metrics, RequestStats
from metaproxy.pipeline import Pipeline
from metaproxy.resolve.backends import (
    backend_ready,
    build_backend,
    reload_backend,
    start_backend,
    stop_backend,
)
from metaproxy.resolve.base import BackendError, PortBackend
from metaproxy.resolve.cache import CachingBackend
from metaproxy.resolve.resolver import InstanceResolver

__all__ = ["Proxy"]

log = Logger("metaproxy.service")


class Proxy:
    """Everything a request needs: the lookup backend and its cache, the Nova endpoints,
    the request policy, the pipeline and the request limits, and what they count
    (C{stats}, C{metrics}). One per serving process.

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
        self.nova = nova_endpoints(reactor, settings)
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
        # what the policy (and its rate limiter) and the Nova endpoints count
        self.metrics.add_source(self.policy.metric_samples)
        self.metrics.add_source(self.nova.metric_samples)
        # and what the lookup backend counts itself (the OVN backend's database connection)
        backend_samples = getattr(self.backend, "metric_samples", None)
        if backend_samples is not None:
            self.metrics.add_source(backend_samples)

    def factory_for(self, namespace: Namespace | None) -> MetadataFactory:
        """The protocol factory of one socket (C{None}: the shared socket)."""
        return MetadataFactory(
            self.pipeline, namespace, self.limits, self._reactor, stats=self.stats
        )

    def peer_factory_for(self, namespace: Namespace) -> MetadataFactory:
        """The protocol factory of a namespace's TCP listener inside it: the callers are
        the connections' peers."""
        return MetadataFactory(
            self.pipeline, namespace, self.limits, self._reactor, stats=self.stats, peer=True
        )

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
