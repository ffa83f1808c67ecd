"""Answering 169.254.169.254:80 inside each metadata namespace, with no haproxy.

For every namespace provisioning makes (L{metaproxy.chassis.provision}), the reactor
listens on C{169.254.169.254:80} inside it (and on C{[fe80::a9fe:a9fe]:80} on its
veth end when the network has IPv6), on a socket opened there
(L{metaproxy.chassis.nssocket}); the connections go to the same request pipeline as the
namespace proxies' (L{metaproxy.http.server}). Before the namespace is removed, its
sockets are closed.

Nothing stands between the instance and the socket, so nothing the request says about
who sent it is believed:

  - the caller is the TCP peer: its IPv4 address, or the MAC an IPv6 link-local address
    encodes (L{metaproxy.caller});
  - the network is the namespace's;
  - a guest's own C{X-Forwarded-For} or C{X-OVN-Network-ID} (or another namespace
    header) is ignored, and counted in L{DirectCounters}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from metaproxy.chassis.nssocket import open_in_namespace
from metaproxy.chassis.plan import METADATA_V6_CIDR, NetworkPlan, namespace_for
from metaproxy.http.request import Request
from metaproxy.namespace import Namespace, NamespaceKind

__all__ = ["DirectCounters", "peer_request", "NamespaceListeners", "METADATA_PORT"]

log = Logger("metaproxy.chassis")

METADATA_PORT = 80
METADATA_V4 = "169.254.169.254"
METADATA_V6 = "fe80::a9fe:a9fe"


@attrs.define
class DirectCounters:
    """Requests on the in-namespace sockets that carried headers nobody may set."""

    guest_forwarded_for: int = 0
    guest_namespace_header: int = 0


def peer_request(request: Request, peer_host: str, counters: DirectCounters) -> Request:
    """C{request} as if a namespace proxy had forwarded it for C{peer_host}: the guest's
    C{X-Forwarded-For} and namespace headers dropped (and counted), the peer's address
    as the only C{X-Forwarded-For}."""
    host = peer_host.split("%", 1)[0]  # an IPv6 link-local peer carries its scope
    if request.forwarded_for_count:
        counters.guest_forwarded_for += 1
    if request.namespace_headers:
        counters.guest_namespace_header += 1
    return attrs.evolve(
        request,
        forwarded_for=host.encode("ascii"),
        namespace_headers=(),
        forwarded_for_count=1,
    )


class NamespaceListeners:
    """The in-namespace sockets, one set per provisioned network.

    @param factory_for: builds the protocol factory serving a namespace; it is given the
        L{Namespace} and the C{request_from_peer} function to pass to
        L{metaproxy.http.server.MetadataFactory}.
    @param opener: C{(reactor, namespace, address, port, backlog=, interface=) ->
        Deferred[socket]} (tests pass their own).
    """

    def __init__(
        self,
        reactor: Any,
        factory_for: Callable[[Namespace, Callable[[Request, Any], Request]], Any],
        *,
        port: int = METADATA_PORT,
        backlog: int = 128,
        opener: Callable[..., Deferred[Any]] = open_in_namespace,
    ) -> None:
        self._reactor = reactor
        self._factory_for = factory_for
        self._port = port
        self._backlog = backlog
        self._opener = opener
        self.counters = DirectCounters()
        self._ports: dict[str, list[Any]] = {}  # network id -> listening ports
        self._addresses: dict[str, tuple[tuple[str, str], ...]] = {}

    def _from_peer(self, request: Request, peer: Any) -> Request:
        return peer_request(request, getattr(peer, "host", ""), self.counters)

    def listening(self, network_id: str) -> tuple[tuple[str, str], ...]:
        """(address, interface) pairs listened on in the network's namespace."""
        return self._addresses.get(network_id, ())

    async def provisioned(self, plan: NetworkPlan) -> None:
        """Listen in C{plan}'s namespace (again, when its addresses changed)."""
        wanted = [(METADATA_V4, "")]
        if METADATA_V6_CIDR in plan.addresses:
            wanted.append((METADATA_V6, plan.inside))
        wanted_key = tuple(wanted)
        if self._addresses.get(plan.network_id) == wanted_key:
            return
        await self.removed(plan.network_id)
        namespace = Namespace(NamespaceKind.OVN, plan.network_id)
        factory = self._factory_for(namespace, self._from_peer)
        ports = []
        try:
            for address, interface in wanted:
                sock = await self._opener(
                    self._reactor,
                    namespace_for(plan.network_id),
                    address,
                    self._port,
                    backlog=self._backlog,
                    interface=interface,
                )
                try:
                    ports.append(self._reactor.adoptStreamPort(sock.fileno(), sock.family, factory))
                finally:
                    sock.close()  # the reactor holds its own copy
        except Exception as e:
            for port in ports:
                port.stopListening()
            log.error(
                "Cannot serve metadata in {namespace}: {why}",
                namespace=namespace.name,
                why=str(e),
            )
            raise
        self._ports[plan.network_id] = ports
        self._addresses[plan.network_id] = wanted_key
        log.info(
            "Serving metadata in {namespace} on {addresses}",
            namespace=namespace.name,
            addresses=", ".join(
                f"[{a}]:{self._port}" if ":" in a else f"{a}:{self._port}" for a, _ in wanted
            ),
        )

    def removed(self, network_id: str) -> Deferred[Any]:
        """Stop listening in the network's namespace (before it is deleted)."""
        ports = self._ports.pop(network_id, [])
        self._addresses.pop(network_id, None)
        if not ports:
            return succeed(None)
        return gatherResults([port.stopListening() or succeed(None) for port in ports])

    def stop(self) -> Deferred[Any]:
        return gatherResults([self.removed(network) for network in list(self._ports)])
