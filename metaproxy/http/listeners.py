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
from collections.abc import Callable, Sequence
from typing import Protocol

from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorUNIX
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from metaproxy.http.netns import (
    ListenAddress,
    NamespaceAddressInUse,
    NamespaceSocketError,
    NamespaceSocketOpener,
)
from metaproxy.http.sockets import (
    AddressInUse,
    AdoptedTCPPort,
    AdoptedUNIXPort,
    HeldSocket,
    ListenerKey,
    ListenError,
    ServedSocket,
    TCPBinding,
    bind_unix_socket,
    prepare_socket_path,
)
from metaproxy.namespace import Namespace, namespace_socket_path

__all__ = [
    "ListenError",
    "AddressInUse",
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
        if failure.check(NamespaceAddressInUse):
            failure = Failure(AddressInUse(str(failure.value)))
        elif failure.check(NamespaceSocketError):
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
