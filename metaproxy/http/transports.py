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
  - B{plain C{recv}} on Unix sockets: Twisted's Unix transport reads with C{recvmsg} to
    receive descriptors, which these connections never accept (the kernel discards any
    sent, as Twisted would close them).
"""

from __future__ import annotations

import sys

from twisted.internet import main, tcp, unix
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["EagerServer", "EagerUNIXServer", "read_now"]

log = Logger("metaproxy.server")

#: How a connection closed by L{_EagerClose.loseConnection} ends (as Twisted's own).
_CLOSED = Failure(main.CONNECTION_DONE)


class _EagerClose:
    """Eager C{write} and C{loseConnection} over a C{tcp.Connection}."""

    def write(self, data: bytes) -> None:
        if (
            self.connected  # type: ignore[attr-defined]
            and not self.disconnecting  # type: ignore[attr-defined]
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
            and self.producer is None  # type: ignore[attr-defined]
            and not self._tempDataLen  # type: ignore[attr-defined]
            and self.offset == len(self.dataBuffer)  # type: ignore[attr-defined]
        ):
            # nothing to send: what the next doWrite would do, now
            self.stopReading()  # type: ignore[attr-defined]
            self.stopWriting()  # type: ignore[attr-defined]
            self.connectionLost(_CLOSED)  # type: ignore[attr-defined]
            return
        super().loseConnection()  # type: ignore[misc]


class EagerServer(_EagerClose, tcp.Server):
    """An accepted TCP connection (a TCP listener inside a namespace)."""


class EagerUNIXServer(_EagerClose, unix.Server):
    """An accepted Unix connection (the shared socket, a namespace's socket)."""

    doRead = tcp.Connection.doRead


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
