"""The agent's parts as its settings describe them: the Nova endpoints and the probe's
own Nova client, the rate limiter, the state reporter, a worker's arguments.

Each builder reads L{Settings} and returns a plain object; L{metaproxy.agent.proxy.Proxy}
and L{metaproxy.agent.service.AgentService} put them together.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from metaproxy.config import Settings
from metaproxy.guard.ratelimit import RateLimiter, Window
from metaproxy.nova.breaker import Breaker
from metaproxy.nova.client import NovaClient
from metaproxy.nova.endpoints import Endpoint, NovaEndpoints
from metaproxy.nova.tls import nova_tls_policy

__all__ = [
    "nova_tls",
    "nova_client",
    "nova_endpoints",
    "nova_probe_client",
    "rate_limiter",
    "state_reporter",
    "worker_args",
    "chassis_mode",
]

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
    url: str,
    *,
    tls: Any,
    pool_size: int | None = None,
    max_in_flight: int | None = None,
    max_queued: int | None = None,
) -> NovaClient:
    """The client of the Nova endpoint at C{url}, with the settings' timeouts and, unless
    given, pool size and in-flight cap. C{tls} (L{nova_tls}) serves an https URL only."""
    return NovaClient(
        reactor,
        url,
        timeout=settings.nova_timeout,
        connect_timeout=settings.nova_connect_timeout,
        pool_size=pool_size or settings.nova_pool_size,
        max_in_flight=max_in_flight or settings.nova_max_in_flight,
        max_queued=max_queued,
        tls=tls if url.startswith("https:") else None,
    )


def nova_endpoints(reactor: Any, settings: Settings) -> NovaEndpoints:
    """Every Nova endpoint of the settings, each with its L{nova_client} (queue bounded
    by C{nova_max_queued}) and its L{Breaker}: what a serving process forwards to."""
    tls = nova_tls(settings)
    endpoints = [
        Endpoint(
            url,
            nova_client(reactor, settings, url, tls=tls, max_queued=settings.nova_max_queued),
            Breaker(
                reactor,
                failures=settings.nova_breaker_failures,
                cooldown=settings.nova_breaker_cooldown,
            ),
        )
        for url in settings.nova_urls
    ]
    return NovaEndpoints(
        reactor,
        endpoints,
        timeout=settings.nova_timeout,
        log_interval=settings.refusal_log_interval,
    )


def nova_probe_client(reactor: Any, settings: Settings) -> NovaClient:
    """The health probe's own client to the first Nova endpoint (one connection, two
    requests at most), for an agent whose workers serve the requests."""
    url = settings.nova_url
    tls = nova_tls(settings) if url.startswith("https:") else None
    return nova_client(reactor, settings, url, tls=tls, pool_size=1, max_in_flight=2)


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
    need a C{transport_url} and C{[AGENT] report_interval} > 0, as upstream's do. The OVN
    chassis mode sends none: like the OVN metadata agent, it reports its liveness in the
    Southbound's C{Chassis_Private} (L{metaproxy.chassis.registration}), and an RPC
    report would list a second, ML2/OVS-style metadata agent on the node."""
    if not settings.transport_url or settings.report_interval <= 0 or settings.ovn_chassis:
        return None
    from metaproxy.neutron.bus import NeutronRpc, rpc_timeout
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


def chassis_mode(reactor: Any, settings: Settings, listeners: Any) -> Any:
    """The L{metaproxy.chassis.mode.ChassisMode} of C{settings} ([ovs], [ovn],
    C{agent_down_time}, the deployment shape, C{external_pids}), opening its listeners
    on C{listeners}.

    @raise metaproxy.resolve.base.BackendError: a connection string or the Southbound's
        TLS files cannot be used (the configuration checks say so first).
    """
    from metaproxy.chassis.mode import ChassisMode
    from metaproxy.chassis.shapes import agent_keys
    from metaproxy.ovsdb.remote import RemoteError, parse_remotes
    from metaproxy.resolve.base import BackendError
    from metaproxy.resolve.ovn_build import probe_seconds, southbound

    try:
        ovs = parse_remotes(settings.ovs_ovsdb_connection)
    except RemoteError as e:
        raise BackendError(
            f"[ovs] ovsdb_connection: {e}. Fix: write unix:PATH or tcp:IP:PORT."
        ) from None
    sb, tls = southbound(settings)
    return ChassisMode(
        reactor,
        listeners,
        ovs_remotes=ovs,
        sb_remotes=sb,
        agent_down_time=settings.agent_down_time,
        sb_tls_options=tls,
        ovs_timeout=float(settings.ovs_ovsdb_connection_timeout),
        sb_timeout=float(settings.ovsdb_connection_timeout),
        probe_interval=probe_seconds(settings.ovsdb_probe_interval),
        retry_max_interval=float(settings.ovsdb_retry_max_interval),
        agent_keys=agent_keys(settings.ovn_agent_shape),
        external_pids=settings.external_pids,
    )
