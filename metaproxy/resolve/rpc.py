"""The RPC backend: ports from neutron-server, asked exactly as upstream's agent asks.

C{lookup_backend = rpc} (the default when C{transport_url} is set). Each lookup is one
C{get_ports} call (L{metaproxy.neutron.bus}) with upstream's filters (docs/upstream.md,
"Port lookup"):

  - a router's networks: C{{'device_id': [router], 'device_owner': [the three
    router-interface owners]}}, then the ports' C{network_id}s in order;
  - ports by address: C{{'fixed_ips': {'ip_address': [ip]}, 'network_id': [networks]}};
  - ports by MAC (IPv6 link-local callers): C{{'mac_address': [mac], 'network_id':
    [networks]}}.

oslo.messaging blocks, so calls run on a bounded thread pool the backend owns
(C{rpc_lookup_threads}; started by C{start()}, stopped by C{stop()}), and the reactor
never waits. A call has C{timeout} seconds (L{metaproxy.neutron.bus.rpc_timeout}): the RPC
itself times out then, and so does the Deferred, whatever the thread is still doing (a
bus that is down can hold a thread in reconnection). A lookup still queued for a thread
when its time is up is dropped without being sent. Every failure is
L{LookupUnavailable} naming what failed, so the instance gets 503 with Retry-After;
the transport reconnects by itself. The cache in front (L{metaproxy.resolve.cache})
makes concurrent identical lookups one call and keeps answers for the TTL.

Not on the hot path: one log line when lookups start failing and one when they work
again, not one per failed lookup (the pipeline logs each 503).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from metaproxy.resolve.base import ROUTER_INTERFACE_OWNERS, LookupUnavailable, Port

__all__ = ["router_filters", "ip_filters", "mac_filters", "port_from_dict", "RpcBackend"]

log = Logger("metaproxy.resolve.rpc")


def router_filters(router_id: str) -> dict[str, Any]:
    """Upstream's filters for a router's interface ports (the gateway port is not one)."""
    return {"device_id": [router_id], "device_owner": list(ROUTER_INTERFACE_OWNERS)}


def ip_filters(networks: Sequence[str], ip: str) -> dict[str, Any]:
    """Upstream's filters for the ports on C{networks} with fixed IP C{ip}."""
    return {"fixed_ips": {"ip_address": [ip]}, "network_id": list(networks)}


def mac_filters(networks: Sequence[str], mac: str) -> dict[str, Any]:
    """Upstream's filters for the ports on C{networks} with MAC C{mac}."""
    return {"mac_address": [mac], "network_id": list(networks)}


def _ip(value: Any) -> str | None:
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        return None


def port_from_dict(port: dict[str, Any]) -> Port:
    """A L{Port} from a port dict as neutron-server returns it (C{fixed_ips} a list of
    C{{'subnet_id', 'ip_address'}}; C{project_id}, or C{tenant_id} from older servers).

    @raise ValueError: a field the lookups need is missing or of the wrong type.
    """
    try:
        fixed = tuple(
            ip
            for ip in (_ip(f.get("ip_address")) for f in port.get("fixed_ips") or ())
            if ip is not None
        )
        return Port(
            id=str(port.get("id", "")),
            network_id=str(port["network_id"]),
            mac_address=str(port.get("mac_address", "")).lower(),
            fixed_ips=fixed,
            device_id=port.get("device_id") or "",
            project_id=port.get("project_id") or port.get("tenant_id") or "",
            device_owner=port.get("device_owner") or "",
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"not a port ({type(e).__name__}: {e})") from None


class RpcBackend:
    """A L{metaproxy.resolve.base.ManagedBackend} over neutron-server's RPC.

    @param reactor: the reactor (time and C{callFromThread}).
    @param rpc: has a blocking C{get_ports(filters) -> list[dict]} (a
        L{metaproxy.neutron.bus.NeutronRpc}, or a fake), and optionally C{timeout_errors}
        (exceptions meaning "no answer in time") and C{close()}.
    @param timeout: seconds a lookup may take, queueing for a thread included.
    @param threads: most calls in flight at once.
    @param where: names the bus in messages (never the URL: it holds a password).
    @param run_in_thread: C{f(*args) -> Deferred} running C{f} off the reactor; default
        the backend's own thread pool (tests pass a synchronous fake).
    """

    def __init__(
        self,
        reactor: Any,
        rpc: Any,
        *,
        timeout: float,
        threads: int = 8,
        where: str = "neutron-server (topic q-plugin on transport_url)",
        run_in_thread: Callable[..., Deferred[Any]] | None = None,
    ) -> None:
        self._reactor = reactor
        self._rpc = rpc
        self._timeout = timeout
        self._where = where
        self._timeout_errors = tuple(getattr(rpc, "timeout_errors", ()))
        self._pool: ThreadPool | None = None
        if run_in_thread is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=threads, name="metaproxy-rpc-lookups")
            pool = self._pool
            run_in_thread = lambda f, *a: deferToThreadPool(reactor, pool, f, *a)  # noqa: E731
        self._run = run_in_thread
        self._started = False
        self.name = f"rpc {where}"
        self.calls = 0
        self.failures = 0
        self._failing_since: int | None = None  # failures count when they began

    def start(self) -> None:
        if self._pool is not None and not self._started:
            self._pool.start()
        self._started = True

    def stop(self) -> Deferred[None] | None:
        """Stop the threads and close the transport, off the reactor (a thread may be
        stuck in a call until its timeout)."""
        if not self._started:
            return None
        self._started = False
        from twisted.internet.threads import deferToThread

        def shut() -> None:
            if self._pool is not None:
                self._pool.stop()
            close = getattr(self._rpc, "close", None)
            if close is not None:
                close()

        return deferToThread(shut).addErrback(
            lambda f: log.warn(
                "Closing the RPC transport failed: {error}", error=f.getErrorMessage()
            )
        )

    def ready(self) -> bool:
        return self._started and self._failing_since is None

    def describe(self) -> str:
        return f"rpc: get_ports from {self._where}, {self._timeout:g} s per call"

    def router_networks(self, router_id: str) -> Deferred[tuple[str, ...]]:
        d = self._call(router_filters(router_id))
        d.addCallback(lambda ports: tuple(p.network_id for p in ports))
        return d

    def ports_by_ip(self, networks: Sequence[str], ip: str) -> Deferred[list[Port]]:
        return self._call(ip_filters(networks, ip))

    def ports_by_mac(self, networks: Sequence[str], mac: str) -> Deferred[list[Port]]:
        return self._call(mac_filters(networks, mac))

    def _call(self, filters: dict[str, Any]) -> Deferred[list[Port]]:
        expired = [False]

        def in_thread() -> Any:
            if expired[0]:  # waited for a thread longer than the lookup may take
                raise DeferredTimeout("dropped before sending: no thread free in time")
            return self._rpc.get_ports(filters)

        self.calls += 1
        try:
            d = self._run(in_thread)
        except Exception:
            d = Deferred()
            d.errback(Failure())

        def on_timeout(result: Any, timeout: float) -> Any:
            expired[0] = True
            if isinstance(result, Failure) and result.check(CancelledError):
                raise DeferredTimeout(f"no answer within {timeout:g} s")
            return result

        d.addTimeout(self._timeout, self._reactor, onTimeoutCancel=on_timeout)
        d.addCallbacks(self._answered, self._failed)
        return d

    def _answered(self, answer: Any) -> list[Port]:
        if not isinstance(answer, list):
            return self._failed(
                Failure(
                    ValueError(f"get_ports answered {type(answer).__name__}, not a list of ports")
                )
            )
        try:
            ports = [port_from_dict(p) for p in answer]
        except ValueError as e:
            return self._failed(Failure(e))
        if self._failing_since is not None:
            log.info(
                "RPC lookups answered again by {where} after {count} failed",
                where=self._where,
                count=self.failures - self._failing_since,
            )
            self._failing_since = None
        return ports

    def _failed(self, failure: Failure) -> Any:
        self.failures += 1
        error = failure.value
        if isinstance(error, DeferredTimeout) or isinstance(error, self._timeout_errors):
            reason = (
                f"no answer from {self._where} within {self._timeout:g} s "
                "(rpc_response_timeout; neutron-server slow or the bus down)"
            )
        elif type(error).__name__ == "RemoteError":
            reason = (
                f"{self._where} failed get_ports: "
                f"{getattr(error, 'exc_type', '')}: {getattr(error, 'value', error)}"
            )
        else:
            reason = f"get_ports to {self._where} failed: {type(error).__name__}: {error}"
        if self._failing_since is None:
            self._failing_since = self.failures - 1
            log.warn(
                "RPC lookups failing: {reason}; instances get 503 until they work again",
                reason=reason,
            )
        raise LookupUnavailable(reason)
