# -*- test-case-name: tests.unit.http.test_transports -*-
"""The connections the listeners accept, with fewer reactor events per request.

A request costs the agent one connection: accepted, read, answered, closed. Twisted's
server transports spend a reactor event on each step and register and unregister the
socket with epoll around the write. The transports here, used by every listener
(L{metaproxy.http.sockets.AdoptedUNIXPort}, L{metaproxy.http.sockets.AdoptedTCPPort}:
the shared socket, the namespaces' Unix sockets and the TCP listeners inside
namespaces), keep Twisted's behaviour and only skip the waiting where nothing is to be
waited for:

  - B{read at once after accept} (L{read_now}): the proxy writes its request right after
    connecting, so it is usually there by the time the connection is accepted; it is read
    in the accept loop, without another epoll round (when it is not there yet, the
    socket waits for it as usual).
  - B{write at once}: C{write} sends what the socket takes right away, and only queues
    the rest (registering for writability, as Twisted does).
  - B{close at once}: C{loseConnection} with nothing left to send closes the connection
    there and then (C{connectionLost} is called before it returns), instead of
    registering for writability to find an empty buffer on the next turn. With bytes
    still queued, it closes once they are sent, as Twisted does.
  - B{plain C{recv}} and C{send} on Unix sockets: Twisted's Unix transport reads with
    C{recvmsg} to receive descriptors, which these connections never accept (the kernel
    discards any sent, as Twisted would close them), and never sends any.
  - B{less per connection}: the log prefix and C{repr} Twisted formats for every
    connection are made only when asked for; a connection closed in order is closed
    without C{shutdown()} first (the descriptor is close-on-exec and never shared, so
    C{close()} alone ends the connection, as Twisted's own comment on it says).
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import abstract, address, main, tcp, unix
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["EagerServer", "EagerUNIXServer", "read_now"]

log = Logger("metaproxy.server")

#: How a connection closed by L{_EagerClose.loseConnection} ends (as Twisted's own).
_CLOSED = Failure(main.CONNECTION_DONE)


class _EagerClose:
    """Eager C{write} and C{loseConnection} over a C{tcp.Server}, made with less."""

    _shouldShutdown = False

    def __init__(
        self, sock: Any, protocol: Any, client: Any, server: Any, sessionno: int, reactor: Any
    ) -> None:
        # tcp.Server.__init__, without formatting its log prefix and repr
        abstract.FileDescriptor.__init__(self, reactor=reactor)  # type: ignore[arg-type]
        sock.setblocking(False)
        self.socket = sock
        self.fileno = sock.fileno
        self.protocol = protocol
        self._init_peer(client)
        self.server = server
        self.sessionno = sessionno
        self.startReading()  # type: ignore[attr-defined]
        self.connected = 1

    def _init_peer(self, client: Any) -> None:
        if len(client) != 2:
            self._addressType = address.IPv6Address
        self.client = client
        self.hostname = client[0]

    @property
    def logstr(self) -> str:
        prefix = self._getLogPrefix(self.protocol)  # type: ignore[attr-defined]
        return f"{prefix},{self.sessionno},{self.hostname}"

    @property
    def repstr(self) -> str:
        name = type(self.protocol).__name__ if hasattr(self, "protocol") else "connection"
        return f"<{name} #{self.sessionno} on {self.server._realPortNumber}>"

    def write(self, data: bytes) -> None:
        if (
            self.connected  # type: ignore[attr-defined]
            and not self.disconnecting  # type: ignore[attr-defined]
            and not self.TLS  # type: ignore[attr-defined]  # (never started here)
            and not self._tempDataLen  # type: ignore[attr-defined]
            and self.offset == len(self.dataBuffer)  # type: ignore[attr-defined]
            and data
        ):
            sent = self.writeSomeData(data)  # type: ignore[attr-defined]
            if isinstance(sent, int):
                if sent == len(data):
                    return
                data = data[sent:]
            # an error: the queued write finds it again and ends the connection as usual
        super().write(data)  # type: ignore[misc]

    def loseConnection(self) -> None:
        if (
            self.connected  # type: ignore[attr-defined]
            and not self.disconnecting  # type: ignore[attr-defined]
            and not self.TLS  # type: ignore[attr-defined]
            and self.producer is None  # type: ignore[attr-defined]
            and not self._tempDataLen  # type: ignore[attr-defined]
            and self.offset == len(self.dataBuffer)  # type: ignore[attr-defined]
        ):
            # nothing to send: what the next doWrite would do, now (connectionLost stops
            # the reading)
            self.connectionLost(_CLOSED)
            return
        super().loseConnection()  # type: ignore[misc]

    def connectionLost(self, reason: Failure) -> None:
        if reason is not _CLOSED:
            super().connectionLost(reason)  # type: ignore[misc]
            return
        # tcp.Connection.connectionLost, for the one reason this class closes with
        if not hasattr(self, "socket"):
            return
        abstract.FileDescriptor.connectionLost(self, reason)  # type: ignore[arg-type]
        self._closeSocket(True)  # type: ignore[attr-defined]
        protocol = self.protocol
        del self.protocol
        del self.socket
        del self.fileno
        protocol.connectionLost(reason)


class EagerServer(_EagerClose, tcp.Server):
    """An accepted TCP connection (a TCP listener inside a namespace)."""


class EagerUNIXServer(_EagerClose, unix.Server):
    """An accepted Unix connection (the shared socket, a namespace's socket)."""

    doRead = tcp.Connection.doRead
    writeSomeData = tcp.Connection.writeSomeData

    def _init_peer(self, client: Any) -> None:
        # unix.Server hands tcp.Server (client, None), whose host is the peer's address
        self.client = (client, None)
        self.hostname = client
        self._sendmsgQueue: list[int] = []  # what unix.Server has; no descriptor is sent


def read_now(reactor, transport: tcp.Connection) -> None:
    """Read what C{transport} (just accepted, registered for reading) has already
    received, as the reactor would on its next turn: a peer already gone or an error
    ends the connection the same way. Nothing there yet: nothing happens."""
    if not transport.connected or transport.disconnecting:
        return
    try:
        why = transport.doRead()
    except BaseException:
        why = sys.exc_info()[1]
        log.failure("Error while reading a new connection", Failure())
    if why and not transport.disconnected:
        reactor._disconnectSelectable(transport, why, True)
