"""metaproxy.ops.sdnotify: datagrams as systemd reads them, on a real Unix socket."""

import os
import socket

import pytest

from metaproxy.ops.sdnotify import Notifier, watchdog_interval


@pytest.fixture
def manager(tmp_path):
    """A socket standing in for systemd's NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def test_ready_sends_one_datagram_of_key_value_lines(manager):
    path, sock = manager
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("serving 3 sockets")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving 3 sockets"
    assert notifier.stopping("draining 2 requests")
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=draining 2 requests"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.sent == 3
    notifier.close()


def test_abstract_socket_names_start_with_at():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"metaproxy-test-{os.getpid()}"
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.status("starting")
        assert sock.recv(4096) == b"STATUS=starting"
    finally:
        sock.close()


def test_outside_systemd_nothing_is_sent():
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready("serving")
    assert notifier.sent == 0


def test_a_vanished_manager_is_not_an_error(tmp_path):
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.enabled
    assert not notifier.ready("serving")
    assert notifier.sent == 0


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(environ, expected):
    assert watchdog_interval(environ) == expected


def test_watchdog_for_this_process():
    environ = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(environ) == 2.0
