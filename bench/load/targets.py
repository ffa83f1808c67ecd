# -*- test-case-name: tests.bench.load.test_storm -*-
"""Where a storm's requests go and what they carry.

A request is what haproxy sends to the agent (L{request_bytes}): cloud-init's headers,
C{Connection: close} (without keep-alive), then the target's headers (the namespace
header haproxy sets, and C{X-Forwarded-For} last). A L{Target} says how to open a
connection for an instance and which headers to add: L{SharedSocket} (Neutron's shared
socket) and L{NamespaceSockets} (one socket per namespace) are here;
L{bench.load.nstarget.HaproxyNamespaces} goes through a real haproxy in network
namespaces (it connects from the instance's namespace and address, and adds no header:
haproxy adds them).
"""

from __future__ import annotations

import socket
from typing import Protocol

import attrs

from bench.load.fleet import FleetInstance
from metaproxy.namespace import namespace_socket_path

__all__ = [
    "Target",
    "SharedSocket",
    "NamespaceSockets",
    "unix_connect",
    "haproxy_headers",
    "CLIENT_HEADERS",
    "request_bytes",
]


class Target(Protocol):
    """Where the storm's requests go. Must be picklable (it is sent to the workers).

    C{name} names it in results (C{shared}, C{namespaces}, ...).
    """

    name: str

    async def open(self, instance: FleetInstance) -> socket.socket:
        """A connected, non-blocking stream socket for C{instance}'s next request.

        @raise OSError: C{ConnectionRefusedError}, C{BlockingIOError} (backlog full) or
            any other; the storm counts them by kind.
        """

    def headers(self, instance: FleetInstance) -> bytes:
        """Header lines (each ending with CRLF) added after the client's, as haproxy adds
        them in front of the agent."""

    def describe(self) -> str:
        """One line for the report."""


def unix_connect(path: str) -> socket.socket:
    """Connect to the Unix socket C{path} without blocking, as haproxy does: an
    C{EAGAIN} (a full listen queue) is not waited out but raised (C{BlockingIOError})."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def haproxy_headers(instance: FleetInstance) -> bytes:
    """What Neutron's haproxy adds for an instance: its namespace's header (set on every
    kind of socket; the agent ignores it on a per-namespace socket), then
    C{X-Forwarded-For} last (C{option forwardfor})."""
    namespace = instance.namespace
    return (
        f"{namespace.kind.header_name}: {namespace.id}\r\nX-Forwarded-For: {instance.ip}\r\n"
    ).encode("latin-1")


@attrs.frozen
class SharedSocket:
    """Neutron's shared socket: the namespace is told by the header."""

    path: str
    name: str = "shared"

    async def open(self, instance: FleetInstance) -> socket.socket:
        return unix_connect(self.path)

    def headers(self, instance: FleetInstance) -> bytes:
        return haproxy_headers(instance)

    def describe(self) -> str:
        return f"shared socket {self.path}"


@attrs.frozen
class NamespaceSockets:
    """One socket per namespace: C{<directory>/<namespace name>.sock}."""

    directory: str
    name: str = "namespaces"

    async def open(self, instance: FleetInstance) -> socket.socket:
        return unix_connect(namespace_socket_path(self.directory, instance.namespace))

    def headers(self, instance: FleetInstance) -> bytes:
        return haproxy_headers(instance)

    def describe(self) -> str:
        return f"per-namespace sockets in {self.directory}"


#: What cloud-init (python-requests) sends, before haproxy's additions.
CLIENT_HEADERS = (
    b"Host: 169.254.169.254\r\nUser-Agent: Cloud-Init/24.1\r\n"
    b"Accept-Encoding: gzip, deflate\r\nAccept: */*\r\n"
)


def request_bytes(path: str, added_headers: bytes, *, keepalive: bool) -> bytes:
    """A GET as haproxy forwards it: cloud-init's headers, C{Connection: close} unless
    keep-alive (HTTP/1.1 is persistent by default), then C{added_headers}."""
    return (
        b"GET "
        + path.encode("ascii")
        + b" HTTP/1.1\r\n"
        + CLIENT_HEADERS
        + (b"" if keepalive else b"Connection: close\r\n")
        + added_headers
        + b"\r\n"
    )
