"""The listeners' connections: read at once after accept, written to and closed at once.

Each test drives the port and the transports by hand (the reactor's own turns never
come between the steps), so what happens "at once" is seen to happen in the same call.
"""

import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol

from metaproxy.http.sockets import AdoptedTCPPort, AdoptedUNIXPort, bind_unix_socket
from metaproxy.http.transports import EagerServer, EagerUNIXServer


class Recorder(Protocol):
    """Records what it receives; answers C{answer} and closes once C{expect} bytes came."""

    def __init__(self, answer: bytes | None = None, expect: int = 1) -> None:
        self.received = b""
        self.lost = None
        self.answer = answer
        self.expect = expect

    def dataReceived(self, data):
        self.received += data
        if self.answer is not None and len(self.received) >= self.expect:
            self.transport.write(self.answer)
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.lost = reason


class RecorderFactory(Factory):
    noisy = False

    def __init__(self, answer=None, expect=1):
        self.answer = answer
        self.expect = expect
        self.protocols = []

    def buildProtocol(self, addr):
        p = Recorder(self.answer, self.expect)
        self.protocols.append(p)
        return p


def unix_port(tmp_path, factory):
    path = str(tmp_path / "s")
    port = AdoptedUNIXPort.adopt_socket(
        reactor, bind_unix_socket(path, mode=0o666, backlog=16), factory
    )
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    return port, client


def tcp_port(factory):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    port = AdoptedTCPPort.adopt_socket(reactor, sock, factory)
    client = socket.create_connection(sock.getsockname())
    return port, client


def read_all(client: socket.socket) -> bytes:
    client.settimeout(5)
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    return data


@pytest.fixture(params=["unix", "tcp"])
def kind(request):
    return request.param


def make(kind, tmp_path, factory):
    return unix_port(tmp_path, factory) if kind == "unix" else tcp_port(factory)


@pytest_twisted.ensureDeferred
async def test_request_already_sent_is_answered_within_the_accept(kind, tmp_path):
    """A request sent before the connection is accepted is read, answered and the
    connection closed in the accept's own call: no reactor turn in between, and
    nothing left registered with the reactor."""
    factory = RecorderFactory(answer=b"HTTP/1.1 200 OK\r\n\r\nhello", expect=3)
    port, client = make(kind, tmp_path, factory)
    try:
        client.sendall(b"GET")
        port.doRead()
        (protocol,) = factory.protocols
        assert protocol.received == b"GET"
        assert protocol.lost is not None and protocol.lost.check(ConnectionDone)
        assert read_all(client) == b"HTTP/1.1 200 OK\r\n\r\nhello"
        connections = [s for s in reactor.getReaders() + reactor.getWriters() if s is not port]
        assert not [c for c in connections if isinstance(c, (EagerServer, EagerUNIXServer))]
    finally:
        client.close()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_request_not_there_yet_waits_for_the_reactor(kind, tmp_path):
    """A connection with nothing to read yet stays registered for reading, and its
    request is read when it comes."""
    factory = RecorderFactory(answer=b"answer", expect=3)
    port, client = make(kind, tmp_path, factory)
    try:
        port.doRead()
        (protocol,) = factory.protocols
        assert protocol.received == b""
        assert protocol.lost is None
        transport = protocol.transport
        assert transport in reactor.getReaders()
        client.sendall(b"GET")
        assert transport.doRead() is None
        assert protocol.received == b"GET"
        assert read_all(client) == b"answer"
        assert protocol.lost.check(ConnectionDone)
        assert transport not in reactor.getReaders()
    finally:
        client.close()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_peer_gone_before_accept_ends_the_connection(kind, tmp_path):
    """A peer that connected and closed without a word: its connection ends at once."""
    factory = RecorderFactory()
    port, client = make(kind, tmp_path, factory)
    try:
        client.close()
        port.doRead()
        (protocol,) = factory.protocols
        assert protocol.received == b""
        assert protocol.lost is not None and protocol.lost.check(ConnectionDone)
        assert protocol.transport not in reactor.getReaders()
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_answer_larger_than_the_socket_takes_is_queued_then_closed(kind, tmp_path):
    """An answer the socket does not take at once is queued (the transport registered
    for writing); the connection closes only once all of it is sent."""
    answer = bytes(range(256)) * 40000  # 10 MB: more than any socket buffer
    factory = RecorderFactory(answer=answer, expect=3)
    port, client = make(kind, tmp_path, factory)
    try:
        client.sendall(b"GET")
        port.doRead()
        (protocol,) = factory.protocols
        transport = protocol.transport
        assert protocol.lost is None
        assert transport in reactor.getWriters()
        client.setblocking(False)
        received = b""
        while protocol.lost is None:
            try:
                received += client.recv(1 << 20)
            except BlockingIOError:
                pass
            why = transport.doWrite()
            if why:
                reactor._disconnectSelectable(transport, why, False)
        received += read_all(client)
        assert received == answer
        assert protocol.lost.check(ConnectionDone)
        assert transport not in reactor.getWriters()
    finally:
        client.close()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_write_to_a_closed_peer_ends_the_connection(kind, tmp_path):
    """Writing to a peer that went away: the error is found and the connection ends as
    Twisted would end it, not silently kept."""
    factory = RecorderFactory()
    port, client = make(kind, tmp_path, factory)
    try:
        port.doRead()
        (protocol,) = factory.protocols
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()
        transport = protocol.transport
        transport.write(b"x" * 100)
        transport.write(b"y" * 100)
        transport.loseConnection()
        for _ in range(10):
            if protocol.lost is not None:
                break
            why = transport.doWrite() or transport.doRead()
            if why:
                reactor._disconnectSelectable(transport, why, False)
        assert protocol.lost is not None
    finally:
        await port.stopListening()
