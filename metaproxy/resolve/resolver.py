"""From a caller (namespace and address) to the instance behind it, as upstream does it.

The caller is the pipeline's L{metaproxy.caller.Identity}, as L{metaproxy.caller.identify}
made it: the lookup uses its C{namespace}, its normalised C{ip} and, for an IPv6
link-local caller, its C{mac}.

Upstream's rules (docs/upstream.md, "Port lookup"): a router namespace looks in the
networks of the router's interface ports, a network (DHCP) or OVN namespace in its one
network. Then the ports on those networks with the caller's IP address (or, for an IPv6
link-local caller, its MAC) are looked up. Exactly one port, with a device id, identifies
the instance: its device id and project. No port, several ports, or one port without a
device id is L{NotFound} (upstream answers 404 for all three).

Caching is not the resolver's business: put a L{metaproxy.resolve.cache.CachingBackend}
between the resolver and the backend. C{resolve(caller, fresh=True)} passes C{fresh=True}
on to every lookup when the backend declares C{accepts_fresh = True} (the caching
backend does); a backend without a store of answers is always fresh and gets no keyword.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.python.failure import Failure

from metaproxy.caller import Identity
from metaproxy.namespace import NamespaceKind
from metaproxy.resolve.base import Instance, LookupUnavailable, Port, PortBackend

__all__ = ["NotFound", "InstanceResolver"]


@attrs.frozen
class NotFound:
    """No instance for the caller; says why, for the log line.

    @ivar reason: C{"no port"}, C{"<n> ports"}, C{"port has no device_id"}, or
        C{"router has no interface ports"}.
    @ivar networks: the networks searched (empty when the router has none).
    @ivar port_ids: the ports found (several, or the one without a device id).
    """

    reason: str
    networks: tuple[str, ...] = ()
    port_ids: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.port_ids:
            return f"{self.reason}: {', '.join(self.port_ids)}"
        if self.networks:
            return f"{self.reason} on network {', '.join(self.networks)}"
        return self.reason


_NO_NETWORKS = NotFound("router has no interface ports")


class InstanceResolver:
    """Resolves callers through one L{PortBackend} (often a caching one).

    @param backend: where ports come from. Its C{name} attribute, if any, names it in
        error messages (otherwise its class name).
    """

    def __init__(self, backend: PortBackend) -> None:
        self._backend = backend
        self._accepts_fresh = bool(getattr(backend, "accepts_fresh", False))
        # the same backend, typed loosely: its methods take the extra C{fresh} keyword
        self._fresh_backend: Any = backend
        self.backend_name: str = getattr(backend, "name", None) or type(backend).__name__
        if not hasattr(backend, "router_networks_now"):
            self.resolve_now = _cannot_now  # type: ignore[method-assign]

    @property
    def backend(self) -> PortBackend:
        return self._backend

    def resolve_now(self, caller: Identity) -> Instance | NotFound | None:
        """The answer for C{caller} when the backend has every lookup it needs at hand
        (C{*_now} methods: see L{metaproxy.resolve.cache}), without a Deferred; C{None}
        when it has not: then use L{resolve}. Never raises: a backend error means
        C{None}, and L{resolve} reports it."""
        backend: Any = self._backend
        namespace = caller.namespace
        try:
            if namespace.kind is NamespaceKind.ROUTER:
                networks = backend.router_networks_now(namespace.id)
                if networks is None:
                    return None
                if not networks:
                    return _NO_NETWORKS
            else:
                networks = (namespace.id,)
            mac = caller.mac
            if mac:
                ports = backend.ports_by_mac_now(networks, mac)
            else:
                ports = backend.ports_by_ip_now(networks, caller.ip)
        except Exception:
            return None
        if ports is None:
            return None
        return _choose(ports, networks)

    def resolve(self, caller: Identity, fresh: bool = False) -> Deferred[Instance | NotFound]:
        """Find the instance behind C{caller}.

        @param fresh: ignore cached answers (after Nova answered 404 for the cached one);
            passed on to a backend that accepts it.
        @return: fires with an L{Instance} or a L{NotFound}; fails with
            L{LookupUnavailable} when the backend cannot answer (any other error from the
            backend is turned into one), or with C{CancelledError} if cancelled.
        """
        namespace = caller.namespace
        fresh = fresh and self._accepts_fresh
        if namespace.kind is NamespaceKind.ROUTER:
            try:
                if fresh:
                    d = self._fresh_backend.router_networks(namespace.id, fresh=True)
                else:
                    d = self._backend.router_networks(namespace.id)
            except Exception:
                d = fail()
            d.addCallback(self._router_ports, caller, fresh)
        else:
            d = self._find_ports((namespace.id,), caller, fresh)
        d.addErrback(self._unavailable)
        return d

    def _router_ports(
        self, networks: tuple[str, ...], caller: Identity, fresh: bool
    ) -> Deferred[Instance | NotFound] | NotFound:
        if not networks:
            return _NO_NETWORKS
        return self._find_ports(networks, caller, fresh)

    def _find_ports(
        self, networks: tuple[str, ...], caller: Identity, fresh: bool
    ) -> Deferred[Instance | NotFound]:
        backend = self._backend
        mac = caller.mac
        try:
            if mac:
                if fresh:
                    d = self._fresh_backend.ports_by_mac(networks, mac, fresh=True)
                else:
                    d = backend.ports_by_mac(networks, mac)
            elif fresh:
                d = self._fresh_backend.ports_by_ip(networks, caller.ip, fresh=True)
            else:
                d = backend.ports_by_ip(networks, caller.ip)
        except Exception:
            return fail()
        d.addCallback(_choose, networks)
        return d

    def _unavailable(self, failure: Failure) -> Failure:
        if failure.check(LookupUnavailable, CancelledError):
            return failure
        error = failure.value
        raise LookupUnavailable(
            f"port lookup in {self.backend_name} failed: {type(error).__name__}: {error}"
        ) from error


def _cannot_now(caller: Identity) -> None:
    return None


def _choose(ports: Sequence[Port], networks: tuple[str, ...]) -> Instance | NotFound:
    if len(ports) == 1:
        port = ports[0]
        if port.device_id:
            return Instance(port.device_id, port.project_id)
        return NotFound("port has no device_id", networks, (port.id,))
    if not ports:
        return NotFound("no port", networks)
    return NotFound(f"{len(ports)} ports", networks, tuple(port.id for port in ports))
