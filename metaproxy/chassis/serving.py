"""Answering 169.254.169.254:80 inside each metadata namespace, with no haproxy.

For every namespace provisioning makes (L{metaproxy.chassis.provision}), the service's
listeners (L{metaproxy.http.listeners.Listeners.add_tcp}) listen on
C{169.254.169.254:80} inside it, and on C{[fe80::a9fe:a9fe]:80} on its veth end
C{tap<network[:10]>1} when the network has IPv6. Before the namespace is removed, its
listener is (L{metaproxy.http.listeners.Listeners.remove_tcp}).

Before a namespace is first listened in, the haproxy the replaced agent may have left
there is stopped (L{metaproxy.chassis.leftovers}); if the address is still taken, one
line says what holds it and how to find it, and the provisioning retries.

The listeners serve the namespace as one of the service's own: with the same request
pipeline, here or in the workers; the caller is the TCP peer
(L{metaproxy.caller.identify_peer}) and the guest's own identity headers are ignored
and counted (C{metaproxy_guest_identity_headers_total}).
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from metaproxy.chassis.plan import METADATA_V6_CIDR, NetworkPlan, veth_names
from metaproxy.http.netns import ListenAddress
from metaproxy.http.sockets import AddressInUse
from metaproxy.namespace import Namespace, NamespaceKind

__all__ = ["TCPListeners", "NamespaceServing", "METADATA_PORT", "listen_addresses"]

log = Logger("metaproxy.chassis")

METADATA_PORT = 80
METADATA_V4 = "169.254.169.254"
METADATA_V6 = "fe80::a9fe:a9fe"


class TCPListeners(Protocol):
    """What L{NamespaceServing} needs of L{metaproxy.http.listeners.Listeners}."""

    def add_tcp(self, namespace: Namespace, addresses: Any) -> Deferred[None]: ...

    def remove_tcp(self, namespace: Namespace) -> Deferred[None]: ...

    def tcp_addresses(self, namespace: Namespace) -> tuple[ListenAddress, ...]: ...


def listen_addresses(plan: NetworkPlan, port: int = METADATA_PORT) -> tuple[ListenAddress, ...]:
    """Where C{plan}'s namespace is listened on: 169.254.169.254, and
    C{fe80::a9fe:a9fe} on the namespace's veth end when the network has IPv6."""
    wanted = [ListenAddress(METADATA_V4, port)]
    if METADATA_V6_CIDR in plan.addresses:
        wanted.append(ListenAddress(METADATA_V6, port, veth_names(plan.network_id)[1]))
    return tuple(wanted)


class NamespaceServing:
    """The provisioner's C{on_provisioned} and C{on_removed}, on the service's
    listeners: one TCP listener per provisioned network.

    @param port: where the namespaces listen (80; tests may use another).
    @param leftovers: C{clear(network_id)} (awaitable), called before a namespace is
        first listened in (L{metaproxy.chassis.leftovers.HaproxyLeftovers}); None: nothing
        is stopped.
    """

    def __init__(
        self, listeners: TCPListeners, *, port: int = METADATA_PORT, leftovers: Any = None
    ) -> None:
        self._listeners = listeners
        self._port = port
        self._leftovers = leftovers
        self._networks: set[str] = set()
        #: listenings that found the address taken (another process listens there)
        self.address_in_use = 0

    @property
    def networks(self) -> frozenset[str]:
        """The networks whose namespace is served (or being opened)."""
        return frozenset(self._networks)

    def listening(self, network_id: str) -> tuple[ListenAddress, ...]:
        """Where the network's namespace is listened on (C{()}: nowhere)."""
        if network_id not in self._networks:
            return ()
        return self._listeners.tcp_addresses(Namespace(NamespaceKind.OVN, network_id))

    async def provisioned(self, plan: NetworkPlan) -> None:
        """Listen in C{plan}'s namespace (again, when its addresses changed).

        @raise metaproxy.http.listeners.ListenError: it could not be listened in (the
            provisioner logs it and tries again).
        """
        namespace = Namespace(NamespaceKind.OVN, plan.network_id)
        wanted = listen_addresses(plan, self._port)
        current = self._listeners.tcp_addresses(namespace)
        if current == wanted and plan.network_id in self._networks:
            return
        if current:
            await self._listeners.remove_tcp(namespace)
        elif self._leftovers is not None:
            await self._leftovers.clear(plan.network_id)
        self._networks.add(plan.network_id)
        try:
            await self._listeners.add_tcp(namespace, wanted)
        except AddressInUse as e:
            self._networks.discard(plan.network_id)
            self.address_in_use += 1
            log.warn(
                "Another process listens on the metadata address in {namespace} ({why}): "
                "find it with `ip netns exec {namespace} ss -ltnp` and stop it (a haproxy "
                "of the previous metadata agent, say); retrying",
                namespace=namespace.name,
                why=str(e),
            )
            raise
        except BaseException:
            self._networks.discard(plan.network_id)
            raise
        log.info(
            "Serving metadata in {namespace} on {addresses}",
            namespace=namespace.name,
            addresses=", ".join(str(a) for a in wanted),
        )

    async def removed(self, network_id: str) -> None:
        """Stop listening in the network's namespace (before it is deleted)."""
        self._networks.discard(network_id)
        await self._listeners.remove_tcp(Namespace(NamespaceKind.OVN, network_id))

    async def stop(self) -> None:
        """Close every listener this mode opened (the namespaces stay)."""
        for network_id in sorted(self._networks):
            await self.removed(network_id)
