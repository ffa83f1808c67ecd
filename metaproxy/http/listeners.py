"""The listening sockets: Neutron's shared socket, one Unix socket per namespace, and TCP
sockets inside namespaces.

A namespace's socket can be added or removed at any time without touching the others.
With one process the listeners live on its reactor. With workers (C{metadata_workers} >=
2) this process only binds each socket (L{HeldSocket}) and hands it to a L{SocketHandoff}
(L{metaproxy.agent.workers.WorkerPool}), which passes the descriptor to every worker; the
workers accept, this process never does. Removing a namespace unlinks its path here first,
then tells the workers to close their copies. Before listening, a leftover socket file is removed
only if nothing answers on it: a path that belongs to a live process is never stolen.
The mode (C{metadata_proxy_socket_mode}) and the backlog (C{metadata_backlog}) are the
operator's, and really applied (upstream applies neither).

A namespace can also be served from inside itself, with no haproxy: L{Listeners.add_tcp}
opens TCP sockets in it (on a thread that enters it: L{metaproxy.http.netns}) and serves
them like the Unix sockets, here or in the workers (each socket a L{TCPBinding}). There
the caller is the connection's peer (L{metaproxy.caller.identify_peer}), whatever the
request's headers say. The provisioning that builds such namespaces opens and closes
their listeners with L{Listeners.add_tcp} and L{Listeners.remove_tcp}.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs
from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorUNIX
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from metaproxy.http.netns import ListenAddress, NamespaceSocketError, NamespaceSocketOpener
from metaproxy.namespace import MAX_SOCKET_PATH_BYTES, Namespace, namespace_socket_path

__all__ = [
    "ListenError",
    "ListenAddress",
    "TCPBinding",
    "ListenerKey",
    "prepare_socket_path",
    "bind_unix_socket",
    "HeldSocket",
    "AdoptedUNIXPort",
    "AdoptedTCPPort",
    "ServedSocket",
    "SocketHandoff",
    "Listeners",
]


class ListenError(Exception):
    """A socket could not be listened on; the message says why and what to do."""


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
    made, without a log line, and only close their descriptor when they stop."""

    _shouldShutdown = False

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


class SocketHandoff(Protocol):
    """Where L{Listeners} hands the sockets it holds (L{metaproxy.agent.workers.WorkerPool}).

    Each socket is named by its L{ListenerKey}: C{None} for the shared socket.
    """

    def add(self, key: ListenerKey, fd: int) -> None:
        """Start serving the listening socket C{fd} (borrowed: copy it to keep it)."""

    def remove(self, key: ListenerKey) -> None:
        """Stop serving it; a Unix socket's path is already unlinked, and this process's
        own descriptor closed."""


class _TCPListener:
    """A namespace's TCP sockets in L{Listeners}: being opened, then served here
    (C{ports}) or held and handed off (C{held})."""

    def __init__(self, namespace: Namespace, addresses: tuple[ListenAddress, ...]) -> None:
        self.namespace = namespace
        self.addresses = addresses
        self.ports: list[AdoptedTCPPort] = []
        self.held: list[tuple[TCPBinding, socket.socket]] = []
        self.opening = True
        self._waiting: list[tuple[Deferred[None], bool]] = []

    def describe(self) -> str:
        return ", ".join(str(a) for a in self.addresses)

    def when_open(self) -> Deferred[None]:
        """Fires once it listens (at once if it does)."""
        return self._wait(False)

    def when_settled(self) -> Deferred[None]:
        """Fires (with C{None}) once the opening has ended, whatever its outcome."""
        return self._wait(True)

    def _wait(self, settled: bool) -> Deferred[None]:
        if not self.opening:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append((d, settled))
        return d

    def settle(self, failure: Failure | None) -> None:
        self.opening = False
        waiting, self._waiting = self._waiting, []
        for d, settled in waiting:
            if failure is None or settled:
                d.callback(None)
            else:
                d.errback(failure)

    def close(self, handoff: SocketHandoff | None) -> Deferred[object]:
        """Stop listening: this process's descriptors closed, the workers told."""
        stops = [maybeDeferred(port.stopListening) for port in self.ports]
        self.ports = []
        held, self.held = self.held, []
        for key, sock in held:
            sock.close()
            if handoff is not None:
                handoff.remove(key)
        return DeferredList(stops, consumeErrors=True)


class Listeners:
    """The set of listening sockets, changed one namespace at a time.

    Either C{factory_for} or C{handoff} is given:

    @param factory_for: builds the protocol factory for a namespace, or for the shared
        socket when given C{None}; the sockets are served on C{reactor}.
    @param peer_factory_for: with C{factory_for}, builds the factory of a namespace's TCP
        listener, whose callers are the connections' peers (needed by L{add_tcp}).
    @param handoff: each socket is bound here (L{HeldSocket}) and handed to it; the
        socket is served wherever the handoff passes it (the workers).
    @param opener: opens the TCP sockets inside namespaces; by default a
        L{NamespaceSocketOpener} on C{reactor}, made at the first L{add_tcp}.
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
        peer_factory_for: Callable[[Namespace], Factory] | None = None,
        handoff: SocketHandoff | None = None,
        opener: NamespaceSocketOpener | None = None,
    ) -> None:
        if (factory_for is None) == (handoff is None):
            raise TypeError("give either factory_for or handoff")
        self._reactor = reactor
        self._shared_socket = shared_socket
        self._socket_dir = socket_dir
        self._mode = mode
        self._backlog = backlog
        self._factory_for = factory_for
        self._peer_factory_for = peer_factory_for
        self._handoff = handoff
        self._opener = opener
        self._shared_port: ServedSocket | HeldSocket | None = None
        self._ports: dict[Namespace, ServedSocket | HeldSocket] = {}
        self._tcp: dict[Namespace, _TCPListener] = {}
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
        """The namespaces whose Unix socket is listened on now."""
        return frozenset(self._ports)

    @property
    def tcp_namespaces(self) -> frozenset[Namespace]:
        """The namespaces with a TCP listener inside them, open or being opened."""
        return frozenset(self._tcp)

    def tcp_addresses(self, namespace: Namespace) -> tuple[ListenAddress, ...]:
        """Where C{namespace}'s TCP listener listens (or will): C{()} if it has none."""
        listener = self._tcp.get(namespace)
        return listener.addresses if listener is not None else ()

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

    # -- TCP listeners inside namespaces ----------------------------------------------

    def add_tcp(
        self,
        namespace: Namespace,
        addresses: Sequence[ListenAddress],
        *,
        prepare: Callable[[], None] | None = None,
    ) -> Deferred[None]:
        """Listen inside the network namespace named C{namespace.name}
        (C{/run/netns/<name>}) on C{addresses}, serving C{namespace}'s callers: each one
        is the connection's peer, whatever its request says.

        C{prepare}, if given, is called inside the namespace, on the opener's thread,
        before the sockets are opened (L{metaproxy.http.netns.open_in_namespace}): the
        router watcher adds the metadata address there.

        The sockets are opened on a thread that enters the namespace
        (L{metaproxy.http.netns}); the namespace must exist, its addresses need not be
        there yet, the interface of a link-local address must. Asking again with the
        same addresses changes nothing; with others, while a listener is there, fails:
        remove it first.

        @return: fires once every socket listens, or fails with L{ListenError} saying why
            (none is left open); the caller logs it.
        """
        addresses = tuple(addresses)
        if self._handoff is None and self._peer_factory_for is None:
            raise TypeError("add_tcp needs peer_factory_for (or a handoff)")
        if not addresses:
            return fail(ListenError(f"no address given to listen on in {namespace.name}"))
        if len(set(addresses)) != len(addresses):
            return fail(ListenError(f"an address is given twice for {namespace.name}"))
        current = self._tcp.get(namespace)
        if current is not None:
            if current.addresses == addresses:
                return current.when_open()
            return fail(
                ListenError(
                    f"{namespace.name} already has a listener on {current.describe()}; "
                    "remove it before listening on " + ", ".join(str(a) for a in addresses)
                )
            )
        listener = self._tcp[namespace] = _TCPListener(namespace, addresses)
        ready = listener.when_open()  # before the opener answers, which it may do at once
        if self._opener is None:
            self._opener = NamespaceSocketOpener(self._reactor)
        d = self._opener.open(namespace.name, addresses, backlog=self._backlog, prepare=prepare)
        d.addCallbacks(
            self._tcp_opened,
            self._tcp_failed,
            callbackArgs=(listener,),
            errbackArgs=(listener,),
        )
        return ready

    def _tcp_opened(self, sockets: list[socket.socket], listener: _TCPListener) -> None:
        namespace = listener.namespace
        if self._tcp.get(namespace) is not listener:  # removed (or stopped) meanwhile
            for sock in sockets:
                sock.close()
            listener.settle(
                Failure(ListenError(f"the listener of {namespace.name} was removed meanwhile"))
            )
            return
        taken = 0
        try:
            if self._handoff is not None:
                for address, sock in zip(listener.addresses, sockets, strict=True):
                    key = TCPBinding(namespace, address)
                    listener.held.append((key, sock))  # so that close() takes it back
                    taken += 1
                    self._handoff.add(key, sock.fileno())
            else:
                assert self._peer_factory_for is not None
                factory = self._peer_factory_for(namespace)
                for sock in sockets:
                    listener.ports.append(AdoptedTCPPort.adopt_socket(self._reactor, sock, factory))
                    taken += 1
        except OSError as e:  # out of descriptors, say: nothing is left half served
            del self._tcp[namespace]
            listener.close(self._handoff)
            for sock in sockets[taken:]:
                sock.close()
            listener.settle(
                Failure(ListenError(f"cannot serve the listener of {namespace.name}: {e}"))
            )
            return
        listener.settle(None)

    def _tcp_failed(self, failure: Failure, listener: _TCPListener) -> None:
        if self._tcp.get(listener.namespace) is listener:
            del self._tcp[listener.namespace]
        if failure.check(NamespaceSocketError):
            failure = Failure(ListenError(str(failure.value)))
        listener.settle(failure)

    def remove_tcp(self, namespace: Namespace) -> Deferred[None]:
        """Stop listening inside C{namespace} and close the sockets; nothing happens if
        it has no listener. Connections already accepted finish their request.

        @return: fires once this process holds none of its sockets (a listener still
            being opened: once it has been, and closed); with workers, each closes its
            copies as soon as it reads that it must. Nothing of metaproxy's then keeps
            the network namespace alive.
        """
        listener = self._tcp.pop(namespace, None)
        if listener is None:
            return succeed(None)
        if listener.opening:
            return listener.when_settled()  # closed by _tcp_opened when it comes
        return listener.close(self._handoff).addCallback(lambda _: None)

    def stop(self) -> Deferred[object]:
        """Stop every listener (service shutdown). A handoff is not told: its workers are
        stopped with the service."""
        ports = list(self._ports.values())
        self._ports.clear()
        if self._shared_port is not None:
            ports.append(self._shared_port)
            self._shared_port = None
        stops = [maybeDeferred(p.stopListening) for p in ports]
        tcp_listeners = list(self._tcp.values())
        self._tcp.clear()
        for listener in tcp_listeners:
            if listener.opening:
                stops.append(listener.when_settled())
            else:
                stops.append(listener.close(None))
        if self._opener is not None:
            self._opener.stop()
        return DeferredList(stops, consumeErrors=True)
