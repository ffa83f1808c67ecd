"""Writing to a socket at once instead of on the reactor's next turn.

Twisted's C{transport.write} only queues: it registers the socket for writability with
epoll, and the bytes go out when the reactor next polls, after which the registration is
removed again. For a request that fits in one C{send} on an idle connection (the Nova
client's case: one small request per exchange on a pooled connection) that is two
C{epoll_ctl} calls and a reactor turn for nothing. L{write_now} sends what the socket
takes right away and leaves only the rest, if any, to C{transport.write}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.abstract import FileDescriptor

__all__ = ["write_now"]


def write_now(transport: Any, data: bytes) -> None:
    """Write C{data} to C{transport}: at once when nothing is queued before it, the rest
    (or everything, on a transport that is not a plain socket, like TLS) through
    C{transport.write}. Errors are left to the transport, which finds them on its own
    write and reports the connection lost as usual."""
    # Only a socket transport itself: a wrapper (TLS) hands unknown attributes on to the
    # socket under it, and its writeSomeData would put plaintext on the wire.
    if not isinstance(transport, FileDescriptor):
        transport.write(data)
        return
    if (
        transport.connected
        and not transport.disconnecting
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    ):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)
