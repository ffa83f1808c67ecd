"""Choosing and running the lookup backend named by C{[metaproxy] lookup_backend}.

Each backend has a builder C{build(reactor, settings) -> PortBackend} in L{BUILDERS};
a backend module adds itself there. The lifecycle calls of L{ManagedBackend} are
optional on a backend: L{start_backend}, L{stop_backend}, L{reload_backend},
L{backend_ready} and L{describe_backend} supply what it lacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed

from metaproxy.config import Settings
from metaproxy.resolve.base import BackendError, PortBackend
from metaproxy.resolve.table import TableBackend, TableError

__all__ = [
    "BUILDERS",
    "build_backend",
    "start_backend",
    "stop_backend",
    "reload_backend",
    "backend_ready",
    "describe_backend",
]


def _table(reactor: Any, settings: Settings) -> PortBackend:
    try:
        return TableBackend(settings.lookup_table)
    except TableError as e:
        raise BackendError(
            f"[metaproxy] lookup_table: {e}. Fix the table file or point "
            "lookup_table at a valid one."
        ) from None


def _neutron_api(reactor: Any, settings: Settings) -> PortBackend:
    from metaproxy.resolve.neutron_api import build_neutron_api  # treq only when used

    return build_neutron_api(reactor, settings)


def _ovn(reactor: Any, settings: Settings) -> PortBackend:
    from metaproxy.resolve.ovn_build import build_ovn_backend

    return build_ovn_backend(reactor, settings)


def _rpc(reactor: Any, settings: Settings) -> PortBackend:
    from metaproxy.neutron.bus import NeutronRpc, rpc_timeout
    from metaproxy.resolve.rpc import RpcBackend

    if not settings.transport_url:
        raise BackendError(
            "[metaproxy] lookup_backend = rpc needs [DEFAULT] transport_url. "
            "Fix: set it (it is usually in neutron.conf), or use "
            "lookup_backend = table."
        )
    timeout = rpc_timeout(settings)
    try:
        rpc = NeutronRpc(
            settings,
            lookup_timeout=timeout,
            report_timeout=settings.report_interval or timeout,
            reactor=reactor,
        )
    except Exception as e:  # oslo.messaging: a bad URL, an unknown driver
        raise BackendError(
            f"[DEFAULT] transport_url: cannot use it for RPC lookups "
            f"({type(e).__name__}: {_no_url(str(e), settings)}). Fix: give "
            "neutron-server's transport_url, e.g. "
            "rabbit://user:password@host:5672/."
        ) from None
    # the exchange is named: a server on another one never answers, and only times out
    return RpcBackend(
        reactor,
        rpc,
        timeout=timeout,
        threads=settings.rpc_lookup_threads,
        where=f"neutron-server (topic q-plugin, exchange {rpc.exchange}, on transport_url)",
        limit=_rpc_limit(settings, timeout),
    )


def _rpc_limit(settings: Settings, timeout: float) -> str:
    """The option that set an RPC lookup's C{timeout} (L{metaproxy.neutron.bus.rpc_timeout}),
    for messages that say which limit applied."""
    for name in ("nova_timeout", "rpc_response_timeout", "rpc_response_max_timeout"):
        if float(getattr(settings, name)) == timeout:
            return f"{name} = {timeout:g}"
    return f"the {timeout:g} s minimum"


def _no_url(text: str, settings: Settings) -> str:
    """C{text} without the transport URL (it holds the bus password)."""
    return text.replace(settings.transport_url or "\0", "<transport_url>")


#: C{lookup_backend} value -> C{build(reactor, settings)}.
BUILDERS: dict[str, Callable[[Any, Settings], PortBackend]] = {
    "table": _table,
    "neutron_api": _neutron_api,
    "ovn": _ovn,
    "rpc": _rpc,
}


def build_backend(reactor: Any, settings: Settings) -> PortBackend:
    """The backend C{settings.lookup_backend} names, built but not started.

    @raise BackendError: it cannot be built with this configuration.
    """
    try:
        build = BUILDERS[settings.lookup_backend]
    except KeyError:
        raise BackendError(
            f"[metaproxy] lookup_backend = {settings.lookup_backend}: no such "
            f"backend. Fix: use one of {', '.join(sorted(BUILDERS))}."
        ) from None
    return build(reactor, settings)


def start_backend(backend: PortBackend) -> None:
    start = getattr(backend, "start", None)
    if start is not None:
        start()


def stop_backend(backend: PortBackend) -> Deferred[Any]:
    stop = getattr(backend, "stop", None)
    return maybeDeferred(stop) if stop is not None else succeed(None)


def reload_backend(backend: PortBackend) -> None:
    """SIGHUP. @raise BackendError: not reloaded; the running state is kept."""
    reload = getattr(backend, "reload", None)
    if reload is not None:
        reload()


def backend_ready(backend: PortBackend) -> bool:
    ready = getattr(backend, "ready", None)
    return True if ready is None else bool(ready())


def describe_backend(backend: PortBackend) -> str:
    describe = getattr(backend, "describe", None)
    return describe() if describe is not None else type(backend).__name__
