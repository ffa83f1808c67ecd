"""The Unix sockets: Neutron's shared socket and one socket per namespace.

A namespace's socket can be added or removed at any time without touching the others.
With one process the listeners live on its reactor. With workers (C{metadata_workers} >=
2) this process only binds each socket (L{HeldSocket}) and hands it to a L{SocketHandoff}
(L{metaproxy.agent.workers.WorkerPool}), which passes the descriptor to every worker; the
workers accept, this process never does. Removing a namespace unlinks its path here first,
then tells the workers to close their copies. Before listening, a leftover socket file is removed
only if nothing answers on it: a path that belongs to a live process is never stolen.
The mode (C{metadata_proxy_socket_mode}) and the backlog (C{metadata_backlog}) are the
operator's, and really applied (upstream applies neither).
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorUNIX
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from metaproxy.namespace import MAX_SOCKET_PATH_BYTES, Namespace, namespace_socket_path

__all__ = [
    "ListenError",
    "prepare_socket_path",
    "bind_unix_socket",
    "HeldSocket",
    "AdoptedUNIXPort",
    "ServedSocket",
    "SocketHandoff",
    "Listeners",
]


class ListenError(Exception):
    """A socket could not be listened on; the message says why and what to do."""


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


class AdoptedUNIXPort(unix.Port):
    """A listening Unix socket bound elsewhere: by another process (the workers' case) or
    by L{bind_unix_socket} here.

    Unlike the C{unix.Port} that C{reactor.adoptStreamPort} builds, it leaves the socket
    as its owner made it: no chmod of the path, no new C{listen()} backlog, no log line
    per socket (10,000 namespaces would log 10,000 lines at start); and stopping it only
    closes its descriptor: no C{shutdown()} (which would make the kernel refuse
    connections for every holder) and no unlink of the path (the owner's job).
    """

    _shouldShutdown = False

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

    def startListening(self) -> None:
        skt = self._preexistingSocket
        if skt is None:
            raise RuntimeError("AdoptedUNIXPort only serves adopted sockets; use adopt()")
        self._preexistingSocket = None
        skt.setblocking(False)
        tcp._reservedFD.reserve()  # as tcp.Port does, for accept() at EMFILE
        self.factory.doStart()
        self.connected = True
        self.socket = skt
        self.fileno = skt.fileno
        self.numberAccepts = 100
        self.startReading()

    def connectionLost(self, reason: Failure) -> None:
        # unix.Port's unlinks the path (and releases a lock file we never take)
        tcp.Port.connectionLost(self, reason)

    def _logConnectionLostMsg(self) -> None:
        pass


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


class SocketHandoff(Protocol):
    """Where L{Listeners} hands the sockets it holds (L{metaproxy.agent.workers.WorkerPool}).

    C{None} stands for the shared socket.
    """

    def add(self, namespace: Namespace | None, fd: int) -> None:
        """Start serving the listening socket C{fd} (borrowed: copy it to keep it)."""

    def remove(self, namespace: Namespace | None) -> None:
        """Stop serving it; its path is already unlinked."""


class Listeners:
    """The set of listening sockets, changed one namespace at a time.

    Either C{factory_for} or C{handoff} is given:

    @param factory_for: builds the protocol factory for a namespace, or for the shared
        socket when given C{None}; the sockets are served on C{reactor}.
    @param handoff: each socket is bound here (L{HeldSocket}) and handed to it; the
        socket is served wherever the handoff passes it (the workers).
    """

    def __init__(
        self,
        reactor: IReactorUNIX,
        *,
        shared_socket: str | None,
        socket_dir: str,
        mode: int,
        backlog: int,
        factory_for: Callable[[Namespace | None], Factory] | None = None,
        handoff: SocketHandoff | None = None,
    ) -> None:
        if (factory_for is None) == (handoff is None):
            raise TypeError("give either factory_for or handoff")
        self._reactor = reactor
        self._shared_socket = shared_socket
        self._socket_dir = socket_dir
        self._mode = mode
        self._backlog = backlog
        self._factory_for = factory_for
        self._handoff = handoff
        self._shared_port: ServedSocket | HeldSocket | None = None
        self._ports: dict[Namespace, ServedSocket | HeldSocket] = {}
        self._directories: set[str] = set()  # socket directories known to exist

    def _listen(self, path: str, namespace: Namespace | None) -> ServedSocket | HeldSocket:
        directory = os.path.dirname(path)
        prepare_socket_path(path, make_directory=directory not in self._directories)
        self._directories.add(directory)
        try:
            if self._handoff is not None:
                held = HeldSocket(path, mode=self._mode, backlog=self._backlog)
                self._handoff.add(namespace, held.fileno())
                return held
            assert self._factory_for is not None
            return ServedSocket(
                self._reactor,
                path,
                self._factory_for(namespace),
                mode=self._mode,
                backlog=self._backlog,
            )
        except ListenError:
            if not os.path.isdir(directory):  # removed behind our back: make it again
                self._directories.discard(directory)
            raise

    def start_shared(self) -> None:
        """Listen on the Neutron-compatible shared socket (if one is configured)."""
        if self._shared_socket and self._shared_port is None:
            self._shared_port = self._listen(self._shared_socket, None)

    def socket_path(self, namespace: Namespace) -> str:
        return namespace_socket_path(self._socket_dir, namespace)

    @property
    def namespaces(self) -> frozenset[Namespace]:
        """The namespaces listened for now."""
        return frozenset(self._ports)

    def add(self, namespace: Namespace) -> None:
        """Listen on C{namespace}'s socket; nothing happens if it is already there.

        @raise ListenError: the socket could not be set up (nothing changed).
        """
        if namespace in self._ports:
            return
        self._ports[namespace] = self._listen(self.socket_path(namespace), namespace)

    def remove(self, namespace: Namespace) -> Deferred[None]:
        """Stop listening on C{namespace}'s socket and remove its file.

        Connections already accepted finish their request.
        """
        port = self._ports.pop(namespace, None)
        if port is None:
            return succeed(None)
        d = maybeDeferred(port.stopListening).addCallback(lambda _: None)
        if self._handoff is not None:
            self._handoff.remove(namespace)  # after the unlink: nothing new can connect
        return d

    def stop(self) -> Deferred[object]:
        """Stop every listener (service shutdown). A handoff is not told: its workers are
        stopped with the service."""
        ports = list(self._ports.values())
        self._ports.clear()
        if self._shared_port is not None:
            ports.append(self._shared_port)
            self._shared_port = None
        return DeferredList([maybeDeferred(p.stopListening) for p in ports], consumeErrors=True)
