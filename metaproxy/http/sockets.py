# -*- test-case-name: tests.unit.http.test_listeners -*-
"""The listening sockets themselves: binding a Unix socket with the operator's mode and
backlog (a leftover file removed only when nothing answers on it), holding one for the
workers, and the reactor ports that adopt a socket bound elsewhere (here, or in the
parent process) and never shut down or unlink what they did not create.

L{metaproxy.http.listeners.Listeners} decides which sockets exist; this module only makes
and adopts them.
"""

from __future__ import annotations

import os
import socket
import stat
from typing import Any

import attrs
from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.python import log
from twisted.python.failure import Failure

from metaproxy.http.netns import ListenAddress
from metaproxy.http.transports import EagerServer, EagerUNIXServer, read_now
from metaproxy.namespace import MAX_SOCKET_PATH_BYTES, Namespace

__all__ = [
    "ListenError",
    "AddressInUse",
    "TCPBinding",
    "ListenerKey",
    "prepare_socket_path",
    "bind_unix_socket",
    "HeldSocket",
    "AdoptedUNIXPort",
    "AdoptedTCPPort",
    "ServedSocket",
]


class ListenError(Exception):
    """A socket could not be listened on; the message says why and what to do."""


class AddressInUse(ListenError):
    """The address is taken (C{EADDRINUSE}): another process listens there."""


@attrs.frozen
class TCPBinding:
    """One listening TCP socket inside a namespace: the namespace whose callers it serves
    (each the connection's peer) and where in it the socket listens."""

    namespace: Namespace
    address: ListenAddress

    def __str__(self) -> str:
        return f"tcp/{self.namespace.name}/{self.address}"

    @classmethod
    def parse(cls, text: str) -> TCPBinding:
        """The inverse of C{str()}.

        @raise ValueError: anything else.
        """
        prefix, _, rest = text.partition("/")
        name, _, address = rest.partition("/")
        if prefix != "tcp" or not address:
            raise ValueError(f"{text!r} is not tcp/<namespace name>/<address>:<port>")
        return cls(Namespace.parse(name), ListenAddress.parse(address))


#: What a listening socket serves: the shared socket (C{None}), a namespace's Unix
#: socket (its L{Namespace}), or a TCP socket inside a namespace (a L{TCPBinding}).
ListenerKey = Namespace | TCPBinding | None


def prepare_socket_path(path: str, *, make_directory: bool = True) -> None:
    """Make C{path} ready to listen on.

    The directory is created (mode 0755, as upstream) when missing. An existing socket
    file is removed only when connecting to it is refused (a stale socket left by a
    process that died); anything else at that path is left alone.

    @raise ListenError: the path is too long, is served by a live process, or is not a
        socket.
    """
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise ListenError(
            f"socket path {path} is longer than {MAX_SOCKET_PATH_BYTES} bytes, "
            "which haproxy cannot connect to; choose a shorter directory"
        )
    if make_directory:
        directory = os.path.dirname(path) or "."
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        except OSError as e:
            raise ListenError(
                f"cannot create the socket directory {directory}: {e.strerror}"
            ) from e
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ListenError(f"{path} exists and is not a socket; remove it or choose another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # stale: nobody listens
    except BlockingIOError:
        raise ListenError(
            f"{path} is in use by a live process (its backlog is full); stop that process first"
        ) from None
    except OSError as e:
        raise ListenError(f"cannot check whether {path} is in use: {e.strerror}") from e
    else:
        raise ListenError(
            f"{path} is in use by a live process; stop it first (another metadata agent?)"
        )
    finally:
        probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # removed meanwhile: just as good
    except OSError as e:
        raise ListenError(f"cannot remove the stale socket {path}: {e.strerror}") from e


def bind_unix_socket(path: str, *, mode: int, backlog: int) -> socket.socket:
    """A non-blocking Unix socket bound to C{path} (which must be free), given C{mode} and
    listening with C{backlog}.

    @raise ListenError: it could not be set up (nothing is left behind).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.bind(path)
    except OSError as e:
        sock.close()
        raise ListenError(f"cannot listen on {path}: {e.strerror}") from e
    try:
        os.chmod(path, mode)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        _unlink_quietly(path)
        raise ListenError(f"cannot listen on {path}: {e.strerror}") from e
    return sock


class HeldSocket:
    """A listening Unix socket that this process binds and keeps but never accepts on:
    the workers accept on their copies of it.

    It is bound, given C{mode}, and listens with C{backlog}. L{stopListening} unlinks the
    path and closes this process's descriptor; copies held elsewhere stay open until
    their holders close them, but nothing can connect through the path any more.
    """

    def __init__(self, path: str, *, mode: int, backlog: int) -> None:
        self.path = path
        sock = bind_unix_socket(path, mode=mode, backlog=backlog)
        self._socket: socket.socket | None = sock

    def fileno(self) -> int:
        if self._socket is None:
            raise ValueError(f"{self.path} is closed")
        return self._socket.fileno()

    def stopListening(self) -> None:
        """Unlink the path and close this descriptor (once; later calls do nothing)."""
        if self._socket is None:
            return
        _unlink_quietly(self.path)
        self._socket.close()
        self._socket = None


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class _Adopted:
    """What the adopted ports share: they accept on a socket made elsewhere, as it was
    made, without a log line, and only close their descriptor when they stop.

    Their connections are L{metaproxy.http.transports}' (written to and closed at once
    when nothing is left to wait for), and each connection's request, when it is already
    there, is read as soon as the accept loop ends (L{read_now}), not on the reactor's
    next turn.
    """

    _shouldShutdown = False
    #: the transport class of the accepted connections
    _connection_class: type = EagerServer
    #: connections accepted by the running doRead, read once it has accepted them all
    _accepted: list | None = None

    def doRead(self) -> None:
        accepted: list = []
        self._accepted = accepted
        try:
            self._accept_all()
        finally:
            self._accepted = None
        reactor = self.reactor  # type: ignore[attr-defined]
        for connection in accepted:
            read_now(reactor, connection)

    def _accept_all(self) -> None:
        """Twisted's accept loop (C{tcp.Port.doRead}) for the usual case, with less per
        connection; any error from C{accept()} but "nothing more" is left to Twisted's
        loop, which knows what each means (C{EMFILE}: the reserved descriptor, ...)."""
        listener: socket.socket = self.socket  # type: ignore[attr-defined]
        accept = listener._accept  # type: ignore[attr-defined]
        family, kind, proto = self._socket_kind
        build = self.factory.buildProtocol  # type: ignore[attr-defined]
        reactor = self.reactor  # type: ignore[attr-defined]
        limit = self.numberAccepts  # type: ignore[has-type]
        accepted = 0
        try:
            while accepted < limit:
                try:
                    fd, addr = accept()
                except BlockingIOError:
                    break
                except OSError:
                    super().doRead()  # type: ignore[misc]
                    return
                accepted += 1
                skt = socket.socket(family, kind, proto, fileno=fd)
                protocol = build(self._peer_address(addr))
                if protocol is None:
                    skt.close()
                    continue
                number = self.sessionno  # type: ignore[has-type]
                self.sessionno = number + 1
                protocol.makeConnection(self.transport(skt, protocol, addr, self, number, reactor))
        except BaseException:
            log.deferr()
        # as Twisted's loop: more at once while the queue keeps them coming
        if accepted == limit:
            self.numberAccepts = limit + 20
        else:
            self.numberAccepts = max(1, accepted)

    def _peer_address(self, addr: Any) -> Any:
        """The address C{buildProtocol} is given for a connection from C{addr}."""
        if len(addr) == 4:  # IPv6: with its scope, as Twisted gives it
            host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
            addr = (host[0], *addr[1:])
        return self._buildAddr(addr)  # type: ignore[attr-defined]

    def transport(
        self, skt: socket.socket, protocol: Any, addr: Any, port: Any, sessionno: int, reactor: Any
    ) -> Any:
        # what Twisted's accept loop calls to make each connection's transport
        connection = self._connection_class(skt, protocol, addr, port, sessionno, reactor)
        if self._accepted is not None:
            self._accepted.append(connection)
        return connection

    def startListening(self) -> None:
        skt: socket.socket | None = self._preexistingSocket  # type: ignore[attr-defined]
        if skt is None:
            raise RuntimeError(f"{type(self).__name__} only serves adopted sockets; use adopt()")
        self._preexistingSocket = None
        skt.setblocking(False)
        tcp._reservedFD.reserve()  # as tcp.Port does, for accept() at EMFILE
        self.factory.doStart()  # type: ignore[attr-defined]
        self.connected = True
        self.socket = skt
        self.fileno = skt.fileno
        # what each accepted socket is made as (plain ints: no enum per connection)
        self._socket_kind = (int(skt.family), int(skt.type), skt.proto)
        self.numberAccepts = 100
        self.startReading()  # type: ignore[attr-defined]

    def _logConnectionLostMsg(self) -> None:
        pass


class AdoptedUNIXPort(_Adopted, unix.Port):
    """A listening Unix socket bound elsewhere: by another process (the workers' case) or
    by L{bind_unix_socket} here.

    Unlike the C{unix.Port} that C{reactor.adoptStreamPort} builds, it leaves the socket
    as its owner made it: no chmod of the path, no new C{listen()} backlog, no log line
    per socket (10,000 namespaces would log 10,000 lines at start); and stopping it only
    closes its descriptor: no C{shutdown()} (which would make the kernel refuse
    connections for every holder) and no unlink of the path (the owner's job).
    """

    _connection_class = EagerUNIXServer
    #: the address of an unnamed peer (any client that did not bind: haproxy's case)
    _unnamed_peer = None

    def _peer_address(self, addr: Any) -> Any:
        if addr:
            return self._buildAddr(addr)
        peer = self._unnamed_peer
        if peer is None:
            peer = self._unnamed_peer = self._buildAddr(addr)
        return peer

    @classmethod
    def adopt(cls, reactor: Any, fd: int, factory: Factory) -> AdoptedUNIXPort:
        """Accept on the listening socket C{fd} with C{factory}. C{fd} is copied: it
        stays the caller's to close."""
        port = cls._fromListeningDescriptor(reactor, fd, factory)
        port.startListening()
        return port

    @classmethod
    def adopt_socket(cls, reactor: Any, sock: socket.socket, factory: Factory) -> AdoptedUNIXPort:
        """Accept on the listening socket C{sock}, which the port now owns (no copy)."""
        port = cls(sock.getsockname(), factory, reactor=reactor)
        port._preexistingSocket = sock
        port.startListening()
        return port

    def connectionLost(self, reason: Failure) -> None:
        # unix.Port's unlinks the path (and releases a lock file we never take)
        tcp.Port.connectionLost(self, reason)


class AdoptedTCPPort(_Adopted, tcp.Port):
    """A listening TCP socket opened elsewhere: inside a namespace by
    L{metaproxy.http.netns}, here or in the agent's process (the workers' case).

    As L{AdoptedUNIXPort}: the socket is accepted on as it was made (bound, its backlog),
    with no log line, and stopping only closes this descriptor (no C{shutdown()}, which
    would stop the socket listening for every process holding it). Each connection's
    peer is the caller (L{metaproxy.caller.identify_peer}).
    """

    @classmethod
    def adopt(cls, reactor: Any, fd: int, factory: Factory) -> AdoptedTCPPort:
        """Accept on the listening socket C{fd} with C{factory}. C{fd} is copied: it
        stays the caller's to close."""
        copy = os.dup(fd)
        try:
            sock = socket.socket(fileno=copy)  # its family read from the socket
        except BaseException:
            os.close(copy)
            raise
        return cls.adopt_socket(reactor, sock, factory)

    @classmethod
    def adopt_socket(cls, reactor: Any, sock: socket.socket, factory: Factory) -> AdoptedTCPPort:
        """Accept on the listening socket C{sock}, which the port now owns (no copy)."""
        try:
            host, port_number = sock.getsockname()[:2]
            port = cls(None, factory, 50, host, reactor)
        except BaseException:
            sock.close()
            raise
        port._realPortNumber = port_number
        port._preexistingSocket = sock
        port.startListening()
        return port


class ServedSocket:
    """A socket this process binds (L{bind_unix_socket}) and accepts on
    (L{AdoptedUNIXPort}). L{stopListening} unlinks the path first, so nothing new can
    connect, then stops accepting and closes the socket; connections already accepted
    finish their request."""

    def __init__(
        self, reactor: Any, path: str, factory: Factory, *, mode: int, backlog: int
    ) -> None:
        self.path = path
        self.port: AdoptedUNIXPort | None = AdoptedUNIXPort.adopt_socket(
            reactor, bind_unix_socket(path, mode=mode, backlog=backlog), factory
        )

    def getHost(self) -> Any:
        assert self.port is not None
        return self.port.getHost()

    def stopListening(self) -> Deferred[None] | None:
        """Unlink the path and close the socket (once; later calls do nothing)."""
        port, self.port = self.port, None
        if port is None:
            return None
        _unlink_quietly(self.path)
        return port.stopListening()
