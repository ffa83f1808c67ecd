"""The listeners' connections: read at once after accept, written to and closed at once.

Each test drives the port and the transports by hand (the reactor's own turns never
come between the steps), so what happens "at once" is seen to happen in the same call.
"""

import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import UNIXAddress
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


@pytest_twisted.ensureDeferred
async def test_connection_describes_itself_as_twisted_does(kind, tmp_path):
    """The peer, the log prefix and the repr Twisted gives an accepted connection."""
    factory = RecorderFactory()
    port, client = make(kind, tmp_path, factory)
    try:
        port.doRead()
        (protocol,) = factory.protocols
        transport = protocol.transport
        if kind == "tcp":
            peer = transport.getPeer()
            assert (peer.type, peer.host, peer.port) == ("TCP", *client.getsockname())
            assert transport.getHost().port == client.getpeername()[1]
        else:
            assert isinstance(transport.getPeer(), UNIXAddress)
            assert transport.getHost().name == str(tmp_path / "s").encode()
        assert transport.logPrefix() == f"Recorder,0,{transport.hostname}"
        assert repr(transport).startswith("<Recorder #0 on ")
    finally:
        client.close()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_many_waiting_connections_accepted_in_one_turn(kind, tmp_path):
    """Every connection waiting is accepted (up to the port's batch), each its own
    protocol, session numbers in order; the batch grows when it was filled."""
    factory = RecorderFactory(answer=b"ok", expect=1)
    port, first = make(kind, tmp_path, factory)
    clients = [first]
    try:
        for _ in range(4):
            if kind == "unix":
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.connect(str(tmp_path / "s"))
            else:
                c = socket.create_connection(port.socket.getsockname())
            clients.append(c)
        for c in clients:
            c.sendall(b"x")
        port.numberAccepts = 3
        port.doRead()
        assert len(factory.protocols) == 3
        assert port.numberAccepts == 23
        port.doRead()
        assert len(factory.protocols) == 5
        assert port.numberAccepts == 2
        assert [p.transport.sessionno for p in factory.protocols] == [0, 1, 2, 3, 4]
        assert all(read_all(c) == b"ok" for c in clients)
    finally:
        for c in clients:
            c.close()
        await port.stopListening()


class Refusing(Factory):
    """Refuses every connection (C{buildProtocol} returns C{None})."""

    def buildProtocol(self, addr):
        self.addr = addr
        return None


@pytest_twisted.ensureDeferred
async def test_refused_connection_closed(kind, tmp_path):
    """A connection the factory refuses is closed at once; the factory was given the
    peer's address as Twisted gives it."""
    factory = Refusing()
    port, client = make(kind, tmp_path, factory)
    try:
        port.doRead()
        assert read_all(client) == b""
        if kind == "tcp":
            assert (factory.addr.host, factory.addr.port) == client.getsockname()
        else:
            assert isinstance(factory.addr, UNIXAddress)
    finally:
        client.close()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_accept_errors_left_to_twisted(tmp_path, monkeypatch):
    """An error from accept() other than "nothing more" (here EMFILE) goes to Twisted's
    accept loop, which releases its reserved descriptor and closes the connection, and
    the port keeps serving."""
    import errno

    from twisted.internet import tcp

    factory = RecorderFactory(answer=b"ok", expect=1)
    port, client = unix_port(tmp_path, factory)
    real = port.socket
    calls = []

    class Failing:
        """The listening socket, whose accept() fails once with EMFILE."""

        def _accept(self):
            calls.append("fast")
            raise OSError(errno.EMFILE, "Too many open files")

        def accept(self):
            calls.append("twisted")
            if len(calls) == 2:
                raise OSError(errno.EMFILE, "Too many open files")
            return real.accept()

        def __getattr__(self, name):
            return getattr(real, name)

    assert tcp._reservedFD.available()
    port.socket = Failing()
    try:
        port.doRead()
        assert calls[:2] == ["fast", "twisted"]
        assert factory.protocols == []
        assert read_all(client) == b""  # closed by Twisted's EMFILE recovery
        port.socket = real
        client.close()
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(tmp_path / "s"))
        client.sendall(b"x")
        port.doRead()
        assert read_all(client) == b"ok"
    finally:
        port.socket = real
        client.close()
        await port.stopListening()
