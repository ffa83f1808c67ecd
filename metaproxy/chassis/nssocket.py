"""Listening sockets opened inside a network namespace, for the reactor to adopt.

A socket belongs to the network namespace of the thread that created it, for its whole
life, wherever its descriptor goes afterwards. So L{open_in_namespace} starts a fresh
thread, which enters the namespace (C{setns(2)} on C{/run/netns/<name>}), creates, binds
and listens, hands the socket back, and exits: the namespace switch dies with the
thread, and the reactor's thread never leaves the host namespace.

The socket binds with C{IP_FREEBIND} / C{IPV6_FREEBIND}, so it can listen on an
address that is still being added (or, for C{fe80::a9fe:a9fe}, still in duplicate
address detection); an IPv6 link-local address is bound to its interface (the scope).

Needs C{CAP_SYS_ADMIN} (setns into a network namespace) and C{CAP_NET_BIND_SERVICE}
(port 80).
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from typing import Any

from twisted.internet.defer import Deferred

__all__ = ["NamespaceSocketError", "open_in_namespace", "open_in_namespace_now", "NETNS_DIR"]

NETNS_DIR = "/run/netns"
_CLONE_NEWNET = 0x40000000
_IP_FREEBIND = 15
_IPV6_FREEBIND = 78
_libc: Any = None


class NamespaceSocketError(OSError):
    """The socket could not be opened in the namespace; str() says which step failed."""


def _setns(path: str) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NamespaceSocketError(
            e.errno, f"setns({path}): {e.strerror} (no such network namespace?)"
        ) from None
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NamespaceSocketError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def open_in_namespace_now(
    namespace: str, address: str, port: int, *, backlog: int = 128, interface: str = ""
) -> socket.socket:
    """Enter C{namespace} on the calling thread and open the socket there (blocking).

    The calling thread stays in the namespace: call it only on a thread that ends
    afterwards (L{open_in_namespace} does).

    @raise NamespaceSocketError: no such namespace, no privilege, or bind/listen failed.
    """
    _setns(os.path.join(NETNS_DIR, namespace))
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            scope = socket.if_nametoindex(interface) if interface else 0
            sock.bind((address, port, 0, scope))
        else:
            sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
            sock.bind((address, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        where = f"[{address}]:{port}" if family == socket.AF_INET6 else f"{address}:{port}"
        raise NamespaceSocketError(
            e.errno, f"cannot listen on {where} in {namespace}: {e.strerror}"
        ) from None
    return sock


def open_in_namespace(
    reactor: Any,
    namespace: str,
    address: str,
    port: int,
    *,
    backlog: int = 128,
    interface: str = "",
) -> Deferred[socket.socket]:
    """L{open_in_namespace_now} on a thread of its own; fires on the reactor thread."""
    d: Deferred[socket.socket] = Deferred()

    def run() -> None:
        try:
            sock = open_in_namespace_now(
                namespace, address, port, backlog=backlog, interface=interface
            )
        except Exception as e:
            reactor.callFromThread(d.errback, e)
        else:
            reactor.callFromThread(d.callback, sock)

    threading.Thread(target=run, name=f"netns-{namespace}", daemon=True).start()
    return d
