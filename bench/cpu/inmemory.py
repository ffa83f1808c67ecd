"""The agent's request path in memory, for CPU benchmarks and profiles.

Bytes go in through L{MetadataFactory} on a C{StringTransport}; the pipeline resolves the
caller from an in-memory port table (behind the same coalescing cache the agent uses) and
asks an in-memory Nova double; the answer's bytes come out. No sockets, no reactor: what
is measured is the Python work of one request in our code and Twisted's Deferreds.

    stack = InMemoryStack.build()
    answer = stack.answer(stack.requests[0])
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from bench.load.fleet import Fleet, make_fleet
from bench.load.targets import haproxy_headers, request_bytes
from metaproxy.http.server import Limits, MetadataFactory
from metaproxy.namespace import Namespace
from metaproxy.nova.client import NovaResponse
from metaproxy.pipeline import Pipeline
from metaproxy.resolve.base import Port
from metaproxy.resolve.cache import CachingBackend
from metaproxy.resolve.resolver import InstanceResolver
from metaproxy.resolve.table import PortTable, parse_table

__all__ = ["InMemoryBackend", "NovaDouble", "InMemoryStack", "SECRET"]

SECRET = b"bench-cpu-secret"

#: A meta_data.json-sized answer body (cloud-init's answers are mostly under 2 KiB).
_BODY = (
    b'{"uuid": "%s", "hostname": "vm", "name": "vm", "launch_index": 0, '
    b'"availability_zone": "nova", "project_id": "p", "devices": []}' + b" " * 600
)


class InMemoryBackend:
    """A port backend over a parsed table, like the table backend: every answer an
    already-fired Deferred, or at once through the C{*_now} methods."""

    name = "in-memory table"

    def __init__(self, table: PortTable) -> None:
        self.table = table

    def router_networks(self, router_id: str) -> Deferred[tuple[str, ...]]:
        return succeed(self.table.router_networks(router_id))

    def ports_by_ip(self, networks: Sequence[str], ip: str) -> Deferred[list[Port]]:
        return succeed(self.table.ports_by_ip(networks, ip))

    def ports_by_mac(self, networks: Sequence[str], mac: str) -> Deferred[list[Port]]:
        return succeed(self.table.ports_by_mac(networks, mac))

    # the answers without a Deferred, as the table backend gives them
    def router_networks_now(self, router_id: str) -> tuple[str, ...]:
        return self.table.router_networks(router_id)

    def ports_by_ip_now(self, networks: Sequence[str], ip: str) -> list[Port]:
        return self.table.ports_by_ip(networks, ip)

    def ports_by_mac_now(self, networks: Sequence[str], mac: str) -> list[Port]:
        return self.table.ports_by_mac(networks, mac)


class NovaDouble:
    """Nova's metadata API in memory: a 200 with a fixed body for any signed request.

    It checks that the four headers the agent must send are there (a broken pipeline
    fails loudly instead of being measured) and keeps nothing, so it can run for ever.
    """

    def __init__(self) -> None:
        self._headers = ((b"Content-Type", b"application/json"),)
        self.count = 0

    def forward(
        self, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> Deferred[NovaResponse]:
        names = [name for name, _ in headers]
        if names != [
            b"X-Forwarded-For",
            b"X-Instance-ID",
            b"X-Tenant-ID",
            b"X-Instance-ID-Signature",
        ]:
            raise AssertionError(f"unexpected headers to Nova: {names}")
        self.count += 1
        return succeed(NovaResponse(200, b"OK", self._headers, _BODY))


class InMemoryStack:
    """A pipeline and a listener's factory over an in-memory fleet."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        cache_enabled: bool = False,
        namespace: Namespace | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.fleet = fleet
        self.clock = Clock()
        self.backend = InMemoryBackend(parse_table(fleet.table))
        self.cache = CachingBackend(self.backend, self.clock, ttl=600, enabled=cache_enabled)
        self.nova = NovaDouble()
        self.pipeline = Pipeline(
            InstanceResolver(self.cache), self.nova, SECRET, refresh_on_404=cache_enabled
        )
        self.factory = MetadataFactory(self.pipeline, namespace, limits or Limits(), self.clock)
        #: one haproxy-shaped request per instance (C{meta_data.json})
        self.requests = [
            request_bytes(
                "/openstack/2018-08-27/meta_data.json", haproxy_headers(instance), keepalive=False
            )
            for instance in fleet.instances
        ]

    @classmethod
    def build(cls, instances: int = 200, routers: int = 20, **kwargs: object) -> InMemoryStack:
        return cls(make_fleet(instances, routers), **kwargs)  # type: ignore[arg-type]

    def answer(self, data: bytes, segments: int = 1) -> bytes:
        """One connection: C{data} in (in C{segments} pieces), the answer's bytes out."""
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        if segments == 1:
            protocol.dataReceived(data)
        else:
            step = -(-len(data) // segments)
            for i in range(0, len(data), step):
                protocol.dataReceived(data[i : i + step])
        protocol.connectionLost(None)
        return transport.value()
