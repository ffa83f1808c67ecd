"""Sockets opened inside a network namespace: addresses, errors an operator can act on,
and the opener's thread (which enters namespaces so that the reactor's thread never does).

Entering a namespace needs CAP_SYS_ADMIN: the tests that enter one enter this process's
own (C{/proc/self/ns/net}) and are skipped when not root. Real namespaces are in
tests/e2e/test_netns_listen.py.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time

import pytest
import pytest_twisted

from metaproxy.http import netns
from metaproxy.http.netns import (
    ListenAddress,
    NamespaceSocketError,
    NamespaceSocketOpener,
    StrandedThread,
    open_in_namespace,
)

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="entering a namespace needs CAP_SYS_ADMIN")
LOOPBACK = ListenAddress("127.0.0.1", 0)


def thread_namespace() -> str:
    return os.readlink("/proc/thread-self/ns/net")


def on_a_thread(function, *args, **kwargs):
    """Run C{function} on a thread of its own: its result or exception, and the
    thread's namespace before and after."""
    outcome = {}

    def run():
        outcome["before"] = thread_namespace()
        try:
            outcome["result"] = function(*args, **kwargs)
        except BaseException as e:
            outcome["error"] = e
        outcome["after"] = thread_namespace()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    return outcome


# ---- addresses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, text",
    [
        (ListenAddress("169.254.169.254"), "169.254.169.254:80"),
        (ListenAddress("0.0.0.0", 9697), "0.0.0.0:9697"),
        (
            ListenAddress("fe80::a9fe:a9fe", 80, "tap0123456789"),
            "[fe80::a9fe:a9fe%tap0123456789]:80",
        ),
        (ListenAddress("::", 9697), "[::]:9697"),
    ],
)
def test_addresses_written_and_read_back(address, text):
    assert str(address) == text and ListenAddress.parse(text) == address


@pytest.mark.parametrize(
    "args, words",
    [
        (("169.254.169.254.1",), "not an IP address"),
        (("fe80::a9fe:a9fe",), "give the interface"),
        (("169.254.169.254", 80, "eth0"), "only given with an IPv6 link-local"),
        (("169.254.169.254", 70000), "not a TCP port"),
        (("fe80::1", 80, "a-name-longer-than-15"), "not an interface name"),
        (("fe80::1", 80, "tap/1"), "not an interface name"),
    ],
)
def test_bad_addresses_say_what_is_wrong(args, words):
    with pytest.raises(ValueError, match=words):
        ListenAddress(*args)


@pytest.mark.parametrize("text", ["169.254.169.254", "fe80::1:80", "[fe80::1]:http", ""])
def test_bad_address_texts_refused(text):
    with pytest.raises(ValueError):
        ListenAddress.parse(text)


# ---- opening ---------------------------------------------------------------------------


def test_missing_namespace_is_named(tmp_path):
    outcome = on_a_thread(
        open_in_namespace, "ovnmeta-gone", [LOOPBACK], backlog=8, netns_dir=str(tmp_path)
    )
    error = outcome["error"]
    assert isinstance(error, NamespaceSocketError) and not isinstance(error, StrandedThread)
    assert str(error) == (
        f"network namespace ovnmeta-gone does not exist ({tmp_path}/ovnmeta-gone is missing)"
    )
    assert outcome["after"] == outcome["before"]


def test_a_file_that_is_not_a_namespace_is_refused(tmp_path):
    (tmp_path / "qrouter-r1").write_text("")
    outcome = on_a_thread(
        open_in_namespace, "qrouter-r1", [LOOPBACK], backlog=8, netns_dir=str(tmp_path)
    )
    assert str(outcome["error"]) == (
        f"cannot enter network namespace qrouter-r1: {tmp_path}/qrouter-r1 is not a "
        "network namespace"
    )


@pytest.mark.skipif(ROOT, reason="root may enter any namespace")
def test_entering_without_the_privilege_names_it():
    outcome = on_a_thread(
        open_in_namespace, "net", [LOOPBACK], backlog=8, netns_dir="/proc/self/ns"
    )
    assert "CAP_SYS_ADMIN" in str(outcome["error"])


@needs_root
def test_sockets_listen_and_the_thread_comes_back():
    """Entered, bound, listening (non-blocking), and the thread is back home."""
    addresses = [ListenAddress("127.0.0.1", 0), ListenAddress("::1", 0)]
    outcome = on_a_thread(open_in_namespace, "net", addresses, backlog=8, netns_dir="/proc/self/ns")
    sockets = outcome["result"]
    try:
        assert [s.family for s in sockets] == [socket.AF_INET, socket.AF_INET6]
        for sock in sockets:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
            assert not sock.getblocking()
            assert sock.getsockopt(socket.IPPROTO_IP, 15) == 1  # IP_FREEBIND
        assert sockets[1].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        with socket.create_connection(sockets[0].getsockname()[:2], timeout=5):
            pass
    finally:
        for sock in sockets:
            sock.close()
    assert outcome["after"] == outcome["before"]


@needs_root
def test_a_connection_is_accepted_with_its_request_and_a_silent_one_a_second_later():
    """TCP_DEFER_ACCEPT: a connection that sent its request is ready to accept at once;
    one that sent nothing is not, until the kernel's SYN-ACK resend about a second later
    makes it accepted all the same (for the request timeout to drop it)."""
    outcome = on_a_thread(
        open_in_namespace, "net", [LOOPBACK], backlog=8, netns_dir="/proc/self/ns"
    )
    (sock,) = outcome["result"]
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) == 1
        where = sock.getsockname()[:2]
        with socket.create_connection(where, timeout=5) as silent:
            assert select.select([sock], [], [], 0.3)[0] == []  # connected, not accepted
            with socket.create_connection(where, timeout=5) as talking:
                talking.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert select.select([sock], [], [], 0.5)[0] == [sock]
                accepted, peer = sock.accept()
                with accepted:
                    assert peer == talking.getsockname()
                    assert accepted.recv(100) == b"GET / HTTP/1.0\r\n\r\n"
            began = time.monotonic()
            assert select.select([sock], [], [], 5)[0] == [sock]
            assert time.monotonic() - began < 3
            accepted, peer = sock.accept()
            with accepted:
                assert peer == silent.getsockname()
    finally:
        sock.close()


@needs_root
def test_an_address_not_there_yet_is_bound_all_the_same():
    """IP_FREEBIND: the metadata address may come after the listener."""
    outcome = on_a_thread(
        open_in_namespace,
        "net",
        [ListenAddress("192.0.2.254", 0)],
        backlog=8,
        netns_dir="/proc/self/ns",
    )
    (sock,) = outcome["result"]
    assert sock.getsockname()[0] == "192.0.2.254"
    sock.close()


@needs_root
def test_one_address_failing_leaves_none_open():
    """The second address is taken: the first socket is closed too, and the message
    names the address, the namespace and the likely cause."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    before = len(os.listdir("/proc/self/fd"))
    try:
        outcome = on_a_thread(
            open_in_namespace,
            "net",
            [ListenAddress("127.0.0.2", port), ListenAddress("127.0.0.1", port)],
            backlog=8,
            netns_dir="/proc/self/ns",
        )
    finally:
        busy.close()
    assert str(outcome["error"]) == (
        f"cannot listen on 127.0.0.1:{port} in net: Address already in use (another "
        "process listens there: is haproxy still running in it?)"
    )
    assert len(os.listdir("/proc/self/fd")) == before - 1  # only busy is gone
    assert outcome["after"] == outcome["before"]


@needs_root
def test_prepare_runs_inside_the_namespace_before_the_sockets():
    """The hook runs on the opening thread once it has entered the namespace, before
    any socket is made."""
    seen = []

    def prepare():
        seen.append((thread_namespace(), len(os.listdir("/proc/self/fd"))))

    before = len(os.listdir("/proc/self/fd"))
    outcome = on_a_thread(
        open_in_namespace,
        "net",
        [LOOPBACK],
        backlog=8,
        netns_dir="/proc/self/ns",
        prepare=prepare,
    )
    (sock,) = outcome["result"]
    sock.close()
    # entered: the namespace's descriptor is closed, its home one is held; no socket yet
    assert seen == [(outcome["before"], before + 1)]
    assert outcome["after"] == outcome["before"]


@needs_root
@pytest.mark.parametrize(
    "error, message",
    [
        (
            NamespaceSocketError("cannot add 169.254.169.254/32 in net: nope"),
            "cannot add 169.254.169.254/32 in net: nope",
        ),
        (RuntimeError("netlink went away"), "cannot prepare net to listen in: netlink went away"),
    ],
)
def test_a_failing_prepare_opens_nothing_and_says_why(error, message):
    def prepare():
        raise error

    before = len(os.listdir("/proc/self/fd"))
    outcome = on_a_thread(
        open_in_namespace,
        "net",
        [LOOPBACK],
        backlog=8,
        netns_dir="/proc/self/ns",
        prepare=prepare,
    )
    assert isinstance(outcome["error"], NamespaceSocketError)
    assert not isinstance(outcome["error"], StrandedThread)
    assert str(outcome["error"]) == message
    assert len(os.listdir("/proc/self/fd")) == before
    assert outcome["after"] == outcome["before"]


@needs_root
def test_a_missing_interface_is_named():
    outcome = on_a_thread(
        open_in_namespace,
        "net",
        [ListenAddress("fe80::a9fe:a9fe", 0, "nosuchif0")],
        backlog=8,
        netns_dir="/proc/self/ns",
    )
    assert str(outcome["error"]) == (
        "cannot listen on [fe80::a9fe:a9fe%nosuchif0]:0 in net: there is no interface "
        "nosuchif0 in that namespace"
    )


@needs_root
def test_a_thread_that_cannot_come_back_says_so_and_closes_the_sockets(monkeypatch):
    entered = []
    real = netns.set_network_namespace

    def failing_return(fd):
        entered.append(fd)
        if len(entered) == 2:
            raise OSError(1, "Operation not permitted")
        real(fd)

    monkeypatch.setattr(netns, "set_network_namespace", failing_return)
    before = len(os.listdir("/proc/self/fd"))
    outcome = on_a_thread(
        open_in_namespace, "net", [LOOPBACK], backlog=8, netns_dir="/proc/self/ns"
    )
    assert isinstance(outcome["error"], StrandedThread)
    assert "could not return to the agent's network namespace" in str(outcome["error"])
    assert len(os.listdir("/proc/self/fd")) == before


# ---- the opener's thread ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_opener_fails_with_the_reason(tmp_path):
    from twisted.internet import reactor

    opener = NamespaceSocketOpener(reactor, netns_dir=str(tmp_path))
    try:
        with pytest.raises(NamespaceSocketError, match="does not exist"):
            await opener.open("ovnmeta-gone", [LOOPBACK], backlog=8)
    finally:
        opener.stop()


@needs_root
@pytest_twisted.ensureDeferred
async def test_opener_hands_sockets_to_the_reactor_which_never_moves():
    from twisted.internet import reactor

    home = thread_namespace()
    opener = NamespaceSocketOpener(reactor, netns_dir="/proc/self/ns")
    try:
        first = opener.open("net", [LOOPBACK], backlog=8)
        second = opener.open("net", [LOOPBACK, LOOPBACK], backlog=8)
        sockets = (await first) + (await second)
        assert len(sockets) == 3
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for s in sockets)
        for sock in sockets:
            sock.close()
    finally:
        opener.stop()
    assert thread_namespace() == home


@needs_root
@pytest_twisted.ensureDeferred
async def test_opener_runs_prepare_on_its_own_thread():
    from twisted.internet import reactor

    threads = []
    opener = NamespaceSocketOpener(reactor, netns_dir="/proc/self/ns")
    try:
        (sock,) = await opener.open(
            "net", [LOOPBACK], backlog=8, prepare=lambda: threads.append(threading.current_thread())
        )
        sock.close()
    finally:
        opener.stop()
    assert len(threads) == 1 and threads[0] is not threading.current_thread()
    assert threads[0].name == "metaproxy-netns"


@needs_root
@pytest_twisted.ensureDeferred
async def test_a_stranded_thread_is_replaced(monkeypatch, logged):
    """A thread that could not return home ends; the next request gets a new thread,
    and the operator a log line."""
    from twisted.internet import reactor
    from twisted.logger import formatEvent

    calls = []
    real = netns.set_network_namespace

    def strand_once(fd):
        calls.append(threading.current_thread())  # kept: never mistaken for a later one
        if len(calls) == 2:
            raise OSError(1, "Operation not permitted")
        real(fd)

    monkeypatch.setattr(netns, "set_network_namespace", strand_once)
    opener = NamespaceSocketOpener(reactor, netns_dir="/proc/self/ns")
    try:
        with pytest.raises(StrandedThread):
            await opener.open("net", [LOOPBACK], backlog=8)
        (sock,) = await opener.open("net", [LOOPBACK], backlog=8)
        sock.close()
    finally:
        opener.stop()
    assert calls[0] == calls[1] != calls[2] == calls[3]
    assert any("could not return" in formatEvent(e) for e in logged)
