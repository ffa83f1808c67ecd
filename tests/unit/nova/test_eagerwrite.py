"""metaproxy.nova.eagerwrite: send at once when nothing is queued, else queue as Twisted does."""

import socket

import pytest
import pytest_twisted
from twisted.internet import error
from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock

from metaproxy.nova.eagerwrite import write_now


class Transport(FileDescriptor):
    """The FileDescriptor attributes write_now reads, and a scripted writeSomeData."""

    def __init__(self, sends=None, *, queued=b"", temp=0, connected=True, disconnecting=False):
        super().__init__(reactor=MemoryReactorClock())
        self.connected, self.disconnecting = connected, disconnecting
        self.dataBuffer, self.offset, self._tempDataLen = queued, 0, temp
        self.sends = list(sends or [])
        self.sent, self.written = [], []

    def writeSomeData(self, data):
        self.sent.append(bytes(data))
        return self.sends.pop(0)

    def write(self, data):
        self.written.append(bytes(data))


def test_idle_socket_takes_everything_at_once():
    t = Transport([5])
    write_now(t, b"hello")
    assert (t.sent, t.written) == ([b"hello"], [])


def test_the_rest_of_a_partial_send_is_queued():
    t = Transport([2])
    write_now(t, b"hello")
    assert (t.sent, t.written) == ([b"hello"], [b"llo"])


@pytest.mark.parametrize(
    "state",
    [dict(queued=b"earlier"), dict(temp=3), dict(disconnecting=True), dict(connected=False)],
)
def test_never_overtakes_queued_bytes_or_writes_to_a_closing_transport(state):
    t = Transport(**state)
    write_now(t, b"hello")
    assert (t.sent, t.written) == ([], [b"hello"])


def test_a_send_error_is_left_to_the_transport():
    t = Transport([error.ConnectionLost()])
    write_now(t, b"hello")
    assert t.written == [b"hello"]  # its own write finds the error and reports the loss


def test_a_wrapping_transport_is_never_bypassed():
    """TLS wraps the socket transport and hands unknown attributes on to it: writing to
    the socket under it would put plaintext on a TLS connection."""
    from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

    class Wrapper(ProtocolWrapper):
        def __init__(self):
            super().__init__(WrappingFactory(None), None)
            self.transport = Transport([5])
            self.written = []

        def write(self, data):
            self.written.append(data)

    t = Wrapper()
    assert t.writeSomeData  # handed on to the socket transport under it
    write_now(t, b"hello")
    assert t.written == [b"hello"] and t.transport.sent == []


def test_other_transports_just_write():
    class TLSLike:
        def __init__(self):
            self.written = []

        def write(self, data):
            self.written.append(data)

    t = TLSLike()
    write_now(t, b"hello")
    assert t.written == [b"hello"]


@pytest_twisted.inlineCallbacks
def test_on_a_real_connection_the_bytes_leave_before_the_reactor_turns():
    """Sent by write_now, the bytes are readable by the peer right away."""
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory

    ours, theirs = socket.socketpair()
    connected: Deferred = Deferred()

    class Got(Protocol):
        def connectionMade(self):
            connected.callback(self)

    reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, Factory.forProtocol(Got))
    ours.close()
    protocol = yield connected
    try:
        write_now(protocol.transport, b"x" * 1000)
        theirs.setblocking(False)
        assert theirs.recv(2000) == b"x" * 1000
    finally:
        protocol.transport.loseConnection()
        theirs.close()
