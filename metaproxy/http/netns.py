"""Listening TCP sockets opened inside a named network namespace (C{/run/netns/<name>}).

metaproxy can serve inside a namespace itself, with no haproxy in between: an
C{ovnmeta-<network id>} namespace's 169.254.169.254:80 and C{[fe80::a9fe:a9fe]:80}, or a
C{qrouter-<router id>}'s metadata port. A socket belongs to the network namespace of the
thread that creates it, for the rest of its life, whichever thread or process uses it
later. So the socket is made by a thread of its own that enters the namespace, binds and
listens, and goes back; the reactor adopts the socket like any other listening socket
(L{metaproxy.http.listeners.Listeners.add_tcp}) or hands it to the workers. The reactor's
thread never changes namespace: setns(2) with C{CLONE_NEWNET} moves only the calling
thread, and only the opener's thread calls it.

Why here, in C{http/} (layer 0) beside the other listeners, and not in C{agent/}: it is
how a listening socket is made, one more kind of socket for
L{metaproxy.http.listeners}, with plain arguments (a namespace name, addresses, a
backlog) and no knowledge of processes, configuration or the agent; it needs no helper
process as long as the agent itself holds the privileges below.

Privileges (checked on Linux 6.x, as a non-root user given only these capabilities):

  - C{CAP_SYS_ADMIN}, to enter the namespace (setns(2) demands it over the namespace's
    user namespace; without it: C{EPERM}).
  - C{CAP_NET_BIND_SERVICE}, to bind a port below 1024 (80) inside it, unless that
    namespace's C{net.ipv4.ip_unprivileged_port_start} allows the port (without it:
    C{EACCES}).
  - Reading C{/run/netns/<name>}: C{ip netns add} makes it mode 0444.

No others: not C{CAP_NET_ADMIN} (C{IP_FREEBIND}, C{SO_REUSEADDR} and binding a link-local
address need none; making the namespace, its interfaces and addresses is the
provisioning's job, not this module's), not C{CAP_NET_RAW}.

Each socket is bound with C{IP_FREEBIND}, so it can be made before its address is on an
interface (the provisioning may add 169.254.169.254 after the listener) and while an
IPv6 address is still tentative (duplicate address detection): it receives as soon as
the address is there. An IPv6 link-local address (C{fe80::a9fe:a9fe}) is only meaningful
with its interface, whose index is looked up inside the namespace; that interface must
exist. IPv6 sockets are C{IPV6_V6ONLY}, so C{0.0.0.0} and C{::} can be bound side by side.
C{SO_REUSEADDR} lets a listener be opened again while connections it closed linger in
C{TIME_WAIT}.

Each socket is C{TCP_DEFER_ACCEPT} (L{DEFER_ACCEPT_SECONDS}): the kernel hands a
connection to C{accept()} only once its first data (the request) has arrived, so the
reactor wakes once per connection, for a connection whose request the read after accept
finds, instead of for a bare handshake and again for the request. A client that
connects and sends nothing is not lost: it holds no descriptor and counts against no
connection bound meanwhile (only the kernel's half-open queue, as a handshake does); the
kernel resends its SYN-ACK after about a second, and the client's answer to it then makes
the connection accepted all the same, whereupon the request timeout drops it as any
silent connection. A client that answers nothing at all is dropped by the kernel after
its SYN-ACK retries (C{net.ipv4.tcp_synack_retries}), as any half-open connection.

setns: C{os.setns} exists from Python 3.12; on 3.11 the C library's C{setns} is called
through ctypes (glibc has had it since 2.14). No new dependency (pyroute2's helpers do
the same, and more we do not need).
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import queue
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = [
    "NETNS_DIR",
    "DEFER_ACCEPT_SECONDS",
    "ListenAddress",
    "NamespaceSocketError",
    "NamespaceAddressInUse",
    "StrandedThread",
    "set_network_namespace",
    "open_in_namespace",
    "NamespaceSocketOpener",
]

log = Logger("metaproxy.listeners")

#: Where C{ip netns} keeps its named namespaces (one bind-mounted file each).
NETNS_DIR = "/run/netns"
#: This thread's network namespace (not the process's: C{/proc/self} is the main thread).
_THREAD_NAMESPACE = "/proc/thread-self/ns/net"
_CLONE_NEWNET = 0x40000000
#: Linux's C{IP_FREEBIND} (C{<linux/in.h>}); Python does not name it. It applies to IPv6
#: sockets too.
_IP_FREEBIND = 15
#: How long a connection may wait for its first data before it is accepted anyway
#: (C{TCP_DEFER_ACCEPT}, rounded by the kernel to one SYN-ACK retransmission): the least,
#: so a silent client reaches the request timeout about a second later than without it.
DEFER_ACCEPT_SECONDS = 1


class NamespaceSocketError(Exception):
    """A socket could not be opened in a namespace; the message says why and what to do."""


class NamespaceAddressInUse(NamespaceSocketError):
    """The address is taken in the namespace (C{EADDRINUSE}): another process listens
    there."""


class StrandedThread(NamespaceSocketError):
    """The thread entered a namespace and could not go back to its own: it must not be
    used again."""


@attrs.frozen
class ListenAddress:
    """Where to listen inside a namespace.

    @ivar host: an IPv4 or IPv6 address (C{0.0.0.0} and C{::} mean every address).
    @ivar port: the TCP port (0: any free one, for tests).
    @ivar interface: the interface an IPv6 link-local address belongs to (its scope),
        e.g. the metadata port's C{tap<id>1}; required for those, refused for others.
    """

    host: str = attrs.field()
    port: int = attrs.field(default=80)
    interface: str | None = attrs.field(default=None)

    @host.validator
    def _check_host(self, _attribute: object, value: str) -> None:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address to listen on") from None
        link_local = address.version == 6 and address.is_link_local
        if link_local and not self.interface:
            raise ValueError(f"{value} is an IPv6 link-local address: give the interface it is on")
        if self.interface and not link_local:
            raise ValueError(
                f"an interface ({self.interface}) is only given with an IPv6 link-local "
                f"address, not with {value}"
            )

    @port.validator
    def _check_port(self, _attribute: object, value: int) -> None:
        if not isinstance(value, int) or not 0 <= value <= 65535:
            raise ValueError(f"{value!r} is not a TCP port")

    @interface.validator
    def _check_interface(self, _attribute: object, value: str | None) -> None:
        if value is not None and (
            not value or len(value.encode()) > 15 or any(c in value for c in "/% \t\n]")
        ):
            raise ValueError(f"{value!r} is not an interface name")

    @property
    def version(self) -> int:
        return 6 if ":" in self.host else 4

    def __str__(self) -> str:
        if self.version == 4:
            return f"{self.host}:{self.port}"
        scope = f"%{self.interface}" if self.interface else ""
        return f"[{self.host}{scope}]:{self.port}"

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """The inverse of C{str()}: C{a.b.c.d:port} or C{[v6%interface]:port}.

        @raise ValueError: anything else.
        """
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"{text!r} is not an address and port")
        interface = None
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            if "%" in host:
                host, interface = host.split("%", 1)
        elif ":" in host:
            raise ValueError(f"{text!r}: an IPv6 address goes in brackets")
        return cls(host, int(port), interface)


def _libc_setns() -> Callable[[int, int], None]:
    libc = ctypes.CDLL(None, use_errno=True)
    call = libc.setns
    call.argtypes = (ctypes.c_int, ctypes.c_int)
    call.restype = ctypes.c_int

    def setns(fd: int, nstype: int) -> None:
        if call(fd, nstype) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return setns


_setns: Callable[[int, int], None] | None = getattr(os, "setns", None)


def set_network_namespace(fd: int) -> None:
    """Move the calling thread into the network namespace C{fd} refers to.

    @raise OSError: as setns(2) fails.
    """
    global _setns
    if _setns is None:
        _setns = _libc_setns()
    _setns(fd, _CLONE_NEWNET)


def open_in_namespace(
    name: str,
    addresses: Sequence[ListenAddress],
    *,
    backlog: int,
    netns_dir: str = NETNS_DIR,
    prepare: Callable[[], None] | None = None,
) -> list[socket.socket]:
    """Listening, non-blocking sockets on C{addresses} inside the namespace C{name}, in
    the same order. Blocking: call it on a thread of its own, never the reactor's; the
    thread is back in its own namespace when this returns or raises.

    @param prepare: called inside the namespace before the sockets are opened (to add
        the address they listen on, say); it raises L{NamespaceSocketError} to say why it
        could not (any other exception is reported as such, with its text).
    @raise NamespaceSocketError: one of them could not be opened, or C{prepare} failed
        (none is left open).
    @raise StrandedThread: the thread could not go back to its own namespace (the
        sockets are closed; do not use the thread again).
    """
    path = os.path.join(netns_dir, name)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NamespaceSocketError(
            f"network namespace {name} does not exist ({path} is missing)"
        ) from None
    except OSError as e:
        raise NamespaceSocketError(f"cannot open {path}: {e.strerror}") from None
    try:
        home = os.open(_THREAD_NAMESPACE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        os.close(target)
        raise NamespaceSocketError(
            f"cannot note this thread's own network namespace ({_THREAD_NAMESPACE}): {e.strerror}"
        ) from None
    try:
        try:
            set_network_namespace(target)
        except OSError as e:
            raise NamespaceSocketError(_entering(name, path, e)) from None
        finally:
            os.close(target)
        sockets: list[socket.socket] = []
        try:
            if prepare is not None:
                _prepare(name, prepare)
            for address in addresses:
                sockets.append(_listen(name, address, backlog))
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        finally:
            try:
                set_network_namespace(home)
            except OSError as e:
                for sock in sockets:
                    sock.close()
                raise StrandedThread(
                    f"the thread that opened sockets in {name} could not return to "
                    f"the agent's network namespace: {e.strerror}"
                ) from None
        return sockets
    finally:
        os.close(home)


def _prepare(name: str, prepare: Callable[[], None]) -> None:
    try:
        prepare()
    except NamespaceSocketError:
        raise
    except Exception as e:
        raise NamespaceSocketError(f"cannot prepare {name} to listen in: {e}") from None


def _entering(name: str, path: str, error: OSError) -> str:
    if error.errno == errno.EPERM:
        return (
            f"cannot enter network namespace {name}: {error.strerror} (the agent needs "
            "CAP_SYS_ADMIN to listen inside namespaces)"
        )
    if error.errno == errno.EINVAL:
        return f"cannot enter network namespace {name}: {path} is not a network namespace"
    return f"cannot enter network namespace {name}: {error.strerror}"


def _listen(name: str, address: ListenAddress, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_SECONDS)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            scope = 0
            if address.interface:
                try:
                    scope = socket.if_nametoindex(address.interface)
                except OSError:
                    raise NamespaceSocketError(
                        f"cannot listen on {address} in {name}: there is no interface "
                        f"{address.interface} in that namespace"
                    ) from None
            sock.bind((address.host, address.port, 0, scope))
        else:
            sock.bind((address.host, address.port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise NamespaceAddressInUse(_listening(name, address, e)) from None
        raise NamespaceSocketError(_listening(name, address, e)) from None
    except BaseException:
        sock.close()
        raise
    return sock


def _listening(name: str, address: ListenAddress, error: OSError) -> str:
    where = f"cannot listen on {address} in {name}: {error.strerror}"
    if error.errno == errno.EACCES and 0 < address.port < 1024:
        return f"{where} (a port below 1024 needs CAP_NET_BIND_SERVICE)"
    if error.errno == errno.EADDRINUSE:
        return f"{where} (another process listens there: is haproxy still running in it?)"
    return where


class NamespaceSocketOpener:
    """Opens listening sockets inside namespaces (L{open_in_namespace}) on one thread of
    its own, one request after another, and hands them to the reactor.

    The thread is started with the first request and stays, blocked on its queue, until
    L{stop}. A thread that could not return to its own namespace (L{StrandedThread})
    ends, and a new one takes the requests still waiting.
    """

    def __init__(self, reactor: Any, *, netns_dir: str = NETNS_DIR) -> None:
        self._reactor = reactor
        self._netns_dir = netns_dir
        self._jobs: queue.SimpleQueue[Any] | None = None

    def open(
        self,
        name: str,
        addresses: Sequence[ListenAddress],
        *,
        backlog: int,
        prepare: Callable[[], None] | None = None,
    ) -> Deferred[list[socket.socket]]:
        """Fires with the listening sockets (now the caller's), or fails with
        L{NamespaceSocketError}. Called from the reactor's thread only; C{prepare} as
        for L{open_in_namespace} (it runs on the opener's thread)."""
        d: Deferred[list[socket.socket]] = Deferred()
        self._queue().put((name, tuple(addresses), backlog, prepare, d))
        return d

    def stop(self) -> None:
        """Let the thread end once the requests already made are done."""
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None

    def _queue(self) -> queue.SimpleQueue[Any]:
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(
                target=self._run, args=(self._jobs,), name="metaproxy-netns", daemon=True
            ).start()
        return self._jobs

    def _run(self, jobs: queue.SimpleQueue[Any]) -> None:
        call = self._reactor.callFromThread
        while True:
            job = jobs.get()
            if job is None:
                return
            name, addresses, backlog, prepare, d = job
            try:
                sockets = open_in_namespace(
                    name, addresses, backlog=backlog, netns_dir=self._netns_dir, prepare=prepare
                )
            except StrandedThread:
                call(d.errback, Failure())
                call(self._stranded, jobs)
                return
            except BaseException:
                call(d.errback, Failure())
            else:
                call(d.callback, sockets)

    def _stranded(self, jobs: queue.SimpleQueue[Any]) -> None:
        log.error(
            "The thread opening sockets in namespaces could not return to the agent's "
            "own network namespace; it has ended and another one takes over"
        )
        if self._jobs is not jobs:
            return  # stopped meanwhile
        self._jobs = None
        waiting = []
        while True:
            try:
                waiting.append(jobs.get_nowait())
            except queue.Empty:
                break
        for job in waiting:
            if job is None:
                return
            self._queue().put(job)
