"""TCP listeners inside namespaces in the listener set (L{Listeners.add_tcp}): served
here with the caller taken from the peer, or held and handed to the workers; added,
asked again, removed (also while still being opened) and stopped.

The sockets come from a L{LocalOpener} that opens them in this process's own namespace,
so these run without privileges; tests/e2e/test_netns_listen.py opens them in real
namespaces.
"""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock

from metaproxy.http.listeners import ListenAddress, ListenError, Listeners, TCPBinding
from metaproxy.http.netns import NamespaceSocketError
from metaproxy.http.server import Limits, MetadataFactory
from metaproxy.namespace import Namespace

OVN = Namespace.parse("ovnmeta-n1")
ROUTER = Namespace.parse("qrouter-r1")
V4 = ListenAddress("127.0.0.1", 0)
V6 = ListenAddress("::1", 0)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class LocalOpener:
    """Opens the sockets in this namespace: at once, or when the test says (C{hold})."""

    def __init__(self, *, hold: bool = False, error: str | None = None) -> None:
        self.hold = hold
        self.error = error
        self.calls: list[tuple[str, tuple, int]] = []
        self.prepares: list[object] = []
        self.made: list[socket.socket] = []
        self.pending: list[tuple[Deferred, tuple]] = []
        self.stopped = False

    def open(self, name, addresses, *, backlog, prepare=None):
        self.calls.append((name, tuple(addresses), backlog))
        self.prepares.append(prepare)
        if self.error is not None:
            return fail(NamespaceSocketError(self.error))
        if self.hold:
            d = Deferred()
            self.pending.append((d, tuple(addresses)))
            return d
        return succeed(self.make(addresses))

    def release(self) -> None:
        for d, addresses in self.pending:
            d.callback(self.make(addresses))
        self.pending = []

    def make(self, addresses):
        sockets = []
        for address in addresses:
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.bind((address.host, address.port))
            sock.listen(8)
            sock.setblocking(False)
            sockets.append(sock)
        self.made += sockets
        return sockets

    def stop(self):
        self.stopped = True


class CallerPipeline:
    def __init__(self):
        self.callers = []

    def handle(self, request, namespace, caller=None):
        self.callers.append((namespace, caller))
        return succeed(OK)


class RecordingHandoff:
    def __init__(self):
        self.calls = []

    def add(self, key, fd):
        with socket.socket(fileno=__import__("os").dup(fd)) as sock:
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        self.calls.append(("add", key, bool(listening)))

    def remove(self, key):
        self.calls.append(("remove", key))


def served(tmp_path, reactor, opener, pipeline=None):
    pipeline = pipeline or CallerPipeline()
    limits = Limits()
    listeners = Listeners(
        reactor,
        shared_socket=None,
        socket_dir=str(tmp_path),
        mode=0o660,
        backlog=128,
        factory_for=lambda ns: MetadataFactory(pipeline, ns, limits, reactor),
        peer_factory_for=lambda ns: MetadataFactory(pipeline, ns, limits, reactor, peer=True),
        opener=opener,
    )
    return listeners, pipeline


def handed_off(tmp_path, opener):
    handoff = RecordingHandoff()
    listeners = Listeners(
        MemoryReactorClock(),
        shared_socket=None,
        socket_dir=str(tmp_path),
        mode=0o660,
        backlog=128,
        handoff=handoff,
        opener=opener,
    )
    return listeners, handoff


def exchange(address, data: bytes) -> bytes:
    with socket.create_connection(address[:2], timeout=10) as client:
        client.sendall(data)
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def refused(address) -> bool:
    try:
        socket.create_connection(address[:2], timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


SPOOF = (
    b"GET /openstack HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Forwarded-For: 10.0.0.9\r\n"
    b"X-OVN-Network-ID: other\r\n\r\n"
)


@pytest_twisted.ensureDeferred
async def test_tcp_listener_serves_its_namespace_with_the_peer_as_caller(tmp_path):
    """Both sockets (IPv4 and IPv6) serve the namespace; each caller is the peer, not
    what the request says; removing closes them and nothing answers any more."""
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    opener = LocalOpener()
    listeners, pipeline = served(tmp_path, reactor, opener)
    try:
        await listeners.add_tcp(OVN, [V4, V6])
        assert opener.calls == [("ovnmeta-n1", (V4, V6), 128)]
        assert listeners.tcp_namespaces == {OVN} and listeners.namespaces == frozenset()
        assert listeners.tcp_addresses(OVN) == (V4, V6)
        v4, v6 = (s.getsockname() for s in opener.made)
        assert (await deferToThread(exchange, v4, SPOOF)).endswith(b"ok")
        assert (await deferToThread(exchange, v6, SPOOF)).endswith(b"ok")
        callers = [
            (ns, c.ip, c.forwarded_for, c.namespace, c.from_peer) for ns, c in pipeline.callers
        ]
        assert callers == [
            (OVN, "127.0.0.1", b"127.0.0.1", OVN, True),
            (OVN, "::1", b"::1", OVN, True),
        ]
        await listeners.remove_tcp(OVN)
        assert listeners.tcp_namespaces == frozenset()
        assert all(s.fileno() == -1 for s in opener.made)
        assert await deferToThread(refused, v4) and await deferToThread(refused, v6)
        await listeners.remove_tcp(OVN)  # not there: nothing happens
    finally:
        await listeners.stop()


@pytest_twisted.ensureDeferred
async def test_asking_again_with_the_same_addresses_changes_nothing(tmp_path):
    from twisted.internet import reactor

    opener = LocalOpener(hold=True)
    listeners, _ = served(tmp_path, reactor, opener)
    try:
        first = listeners.add_tcp(OVN, [V4])
        again = listeners.add_tcp(OVN, [V4])  # while being opened
        opener.release()
        await first
        await again
        await listeners.add_tcp(OVN, [V4])  # once open
        assert len(opener.calls) == 1 and len(opener.made) == 1
        with pytest.raises(ListenError, match="already has a listener on 127.0.0.1:0; remove it"):
            await listeners.add_tcp(OVN, [V4, V6])
        assert listeners.tcp_addresses(OVN) == (V4,)
    finally:
        await listeners.stop()


@pytest_twisted.ensureDeferred
async def test_prepare_is_passed_to_the_opener(tmp_path):
    """What the caller wants done inside the namespace goes with the opening request;
    without it, none."""
    from twisted.internet import reactor

    opener = LocalOpener()
    listeners, _ = served(tmp_path, reactor, opener)

    def add_address():
        pass

    try:
        await listeners.add_tcp(ROUTER, [V4], prepare=add_address)
        await listeners.add_tcp(OVN, [V4])
        assert opener.prepares == [add_address, None]
    finally:
        await listeners.stop()


@pytest_twisted.ensureDeferred
async def test_removed_while_being_opened_the_sockets_are_closed_when_they_come(tmp_path):
    """The add fails saying so; the removal fires only once the sockets that came late
    are closed (nothing of ours keeps the namespace then)."""
    from twisted.internet import reactor

    opener = LocalOpener(hold=True)
    listeners, _ = served(tmp_path, reactor, opener)
    added = listeners.add_tcp(OVN, [V4])
    added_outcome = []
    added.addBoth(added_outcome.append)
    removed = listeners.remove_tcp(OVN)
    assert not removed.called and listeners.tcp_namespaces == frozenset()
    opener.release()
    await removed
    assert opener.made[0].fileno() == -1
    assert isinstance(added_outcome[0].value, ListenError)
    assert str(added_outcome[0].value) == "the listener of ovnmeta-n1 was removed meanwhile"
    await listeners.stop()


@pytest_twisted.ensureDeferred
async def test_a_namespace_that_cannot_be_listened_in_is_a_listen_error(tmp_path):
    """The opener's reason comes back as a ListenError; nothing is kept, so asking
    again tries again."""
    from twisted.internet import reactor

    opener = LocalOpener(error="network namespace ovnmeta-n1 does not exist")
    listeners, _ = served(tmp_path, reactor, opener)
    with pytest.raises(ListenError, match="^network namespace ovnmeta-n1 does not exist$"):
        await listeners.add_tcp(OVN, [V4])
    assert listeners.tcp_namespaces == frozenset()
    opener.error = None
    await listeners.add_tcp(OVN, [V4])
    assert listeners.tcp_namespaces == {OVN}
    await listeners.stop()


def test_bad_requests_are_refused(tmp_path):
    listeners, _ = handed_off(tmp_path, LocalOpener())
    errors = []
    listeners.add_tcp(OVN, []).addErrback(errors.append)
    listeners.add_tcp(OVN, [V4, V4]).addErrback(errors.append)
    assert [str(e.value) for e in errors] == [
        "no address given to listen on in ovnmeta-n1",
        "an address is given twice for ovnmeta-n1",
    ]
    plain = Listeners(
        MemoryReactorClock(),
        shared_socket=None,
        socket_dir=str(tmp_path),
        mode=0o660,
        backlog=8,
        factory_for=lambda ns: None,
    )
    with pytest.raises(TypeError, match="peer_factory_for"):
        plain.add_tcp(OVN, [V4])


def test_handoff_gets_each_tcp_socket_as_a_binding(tmp_path):
    """With workers each socket is handed over listening, as a TCPBinding; removing
    closes this process's copy and tells the workers; stopping closes without telling."""
    opener = LocalOpener()
    listeners, handoff = handed_off(tmp_path, opener)
    done = []
    listeners.add_tcp(OVN, [V4, V6]).addCallback(done.append)
    listeners.add_tcp(ROUTER, [V4]).addCallback(done.append)
    assert done == [None, None]
    ovn4, ovn6, router4 = TCPBinding(OVN, V4), TCPBinding(OVN, V6), TCPBinding(ROUTER, V4)
    assert handoff.calls == [("add", ovn4, True), ("add", ovn6, True), ("add", router4, True)]
    listeners.remove_tcp(OVN).addCallback(done.append)
    assert done[-1] is None
    assert handoff.calls[3:] == [("remove", ovn4), ("remove", ovn6)]
    assert [s.fileno() for s in opener.made[:2]] == [-1, -1] and opener.made[2].fileno() != -1
    listeners.stop()
    assert len(handoff.calls) == 5 and opener.made[2].fileno() == -1 and opener.stopped


def test_handoff_that_fails_leaves_nothing_half_served(tmp_path):
    """Out of descriptors while handing the second socket over: both are taken back
    and closed, and the add fails."""
    opener = LocalOpener()
    listeners, handoff = handed_off(tmp_path, opener)
    real_add = handoff.add

    def add(key, fd):
        if key.address == V6:
            raise OSError(24, "Too many open files")
        real_add(key, fd)

    handoff.add = add
    errors = []
    listeners.add_tcp(OVN, [V4, V6]).addErrback(errors.append)
    assert str(errors[0].value) == (
        "cannot serve the listener of ovnmeta-n1: [Errno 24] Too many open files"
    )
    # the one that failed is taken back too: the handoff may have registered it already
    assert handoff.calls == [
        ("add", TCPBinding(OVN, V4), True),
        ("remove", TCPBinding(OVN, V4)),
        ("remove", TCPBinding(OVN, V6)),
    ]
    assert [s.fileno() for s in opener.made] == [-1, -1]
    assert listeners.tcp_namespaces == frozenset()


def test_binding_names_read_back():
    binding = TCPBinding(OVN, ListenAddress("fe80::a9fe:a9fe", 80, "tapn1"))
    assert str(binding) == "tcp/ovnmeta-n1/[fe80::a9fe:a9fe%tapn1]:80"
    assert TCPBinding.parse(str(binding)) == binding
    for bad in ("tcp/ovnmeta-n1", "udp/ovnmeta-n1/1.2.3.4:80", "tcp/bogus/1.2.3.4:80"):
        with pytest.raises(ValueError):
            TCPBinding.parse(bad)


@pytest_twisted.ensureDeferred
async def test_unix_sockets_and_tcp_listeners_are_kept_apart(tmp_path):
    """A namespace may have both (haproxy still running while its listener opens); the
    registry's rescans and reloads (SIGHUP) only ever touch the Unix sockets."""
    from twisted.internet import reactor

    from metaproxy.agent.registry import NamespaceRegistry

    listeners, _ = served(tmp_path / "ns", reactor, LocalOpener())
    registry = NamespaceRegistry(
        reactor, listeners, declared=[], directory=str(tmp_path / "d"), use_inotify=False
    )
    try:
        await listeners.add_tcp(OVN, [V4])
        listeners.add(OVN)
        assert listeners.namespaces == {OVN} and listeners.tcp_namespaces == {OVN}
        await registry.sync()  # OVN is not declared: its Unix socket goes, not its listener
        assert listeners.namespaces == frozenset() and listeners.tcp_namespaces == {OVN}
        listeners.add(OVN)
        await listeners.remove_tcp(OVN)
        assert listeners.namespaces == {OVN} and listeners.tcp_namespaces == frozenset()
    finally:
        await listeners.stop()
