"""The lookup interface every backend implements, and the values it returns.

The two primitives are upstream's own (docs/upstream.md, "Port lookup"): the networks a router is
attached to (through its interface ports), and the ports on some networks that carry an
IP address or a MAC address. Deciding "exactly one port with a device id" is the
resolver's job (L{metaproxy.resolve.resolver}), not the backend's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs
from twisted.internet.defer import Deferred

__all__ = [
    "ROUTER_INTERFACE_OWNERS",
    "Port",
    "Instance",
    "LookupUnavailable",
    "BackendError",
    "PortBackend",
    "ManagedBackend",
]

#: Device owners of a router's interface ports (neutron-lib); the gateway port is not one.
ROUTER_INTERFACE_OWNERS: tuple[str, ...] = (
    "network:router_interface",
    "network:ha_router_replicated_interface",
    "network:router_interface_distributed",
)


@attrs.frozen
class Port:
    """The fields of a Neutron port that metadata lookups use.

    IPs are normalised text (``ipaddress`` compressed form); the MAC is lower case with
    colons.
    """

    id: str
    network_id: str
    mac_address: str
    fixed_ips: tuple[str, ...]
    device_id: str
    project_id: str
    device_owner: str = ""


@attrs.frozen
class Instance:
    """What Nova needs to know: the instance (the port's device id) and its project."""

    instance_id: str
    project_id: str


class LookupUnavailable(Exception):
    """The backend cannot answer now (down, slow, not synchronised yet).

    The request gets 503 with Retry-After: cloud-init retries that, and it is never a
    wrong instance.
    """


class BackendError(Exception):
    """A backend cannot be built, started or reloaded with this configuration.

    str() is one message for the operator naming the option and the fix. At start-up it
    stops the agent with that message; on reload the running backend is kept.
    """


class PortBackend(Protocol):
    """A source of ports. Every method returns a Deferred; errors are L{LookupUnavailable}."""

    def router_networks(self, router_id: str) -> Deferred[tuple[str, ...]]:
        """Network ids of the router's interface ports, in port order (duplicates kept)."""
        ...

    def ports_by_ip(self, networks: Sequence[str], ip: str) -> Deferred[list[Port]]:
        """Ports on any of C{networks} with C{ip} among their fixed IPs."""
        ...

    def ports_by_mac(self, networks: Sequence[str], mac: str) -> Deferred[list[Port]]:
        """Ports on any of C{networks} with MAC address C{mac}."""
        ...


class ManagedBackend(PortBackend, Protocol):
    """What the agent calls on a backend besides lookups, when the backend has it
    (each method is optional; L{metaproxy.resolve.backends} supplies the defaults).

    - C{start()}: begin work on the reactor (connect, start threads, first sync).
    - C{stop() -> Deferred | None}: stop; the agent waits for the Deferred at shutdown.
    - C{reload()}: SIGHUP; raise L{BackendError} to keep the running state.
    - C{ready() -> bool}: whether lookups can be answered now (health).
    - C{describe() -> str}: one line for the logs ("table /x/ports.json (12 ports)").
    """

    def start(self) -> None: ...

    def stop(self) -> Deferred[None] | None: ...

    def reload(self) -> None: ...

    def ready(self) -> bool: ...

    def describe(self) -> str: ...
