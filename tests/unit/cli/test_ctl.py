"""``metaproxy ctl``, against a real Unix socket and the agent's control protocol."""

from __future__ import annotations

import os
import socket
import threading

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread

from metaproxy.agent.control import ControlFactory
from metaproxy.agent.registry import RegistryError
from metaproxy.cli import main
from metaproxy.namespace import Namespace
from tests.unit.cli.samples import DHCP, OVN, ROUTER


class FakeControlServer:
    """A control socket in a thread: one line in, the scripted answer out, then close."""

    def __init__(self, path: str, answer=None, *, silent: bool = False) -> None:
        self.path = path
        self.received: list[bytes] = []
        self.namespaces: list[str] = []
        self._answer = answer or self._registry
        self._silent = silent
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen(8)
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _registry(self, line: bytes) -> bytes:
        words = line.decode("ascii").split()
        if words == ["list"]:
            return ("ok\n" + "".join(n + "\n" for n in self.namespaces)).encode()
        command, name = words
        if command == "add":
            self.namespaces.append(name)
            return b"ok\n"
        if name not in self.namespaces:
            return f"error: {name} is not registered\n".encode()
        self.namespaces.remove(name)
        return b"ok\n"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(1024)
                    if not chunk:
                        break
                    data += chunk
                self.received.append(data)
                if self._silent:
                    self._stop.wait()
                    continue
                conn.sendall(self._answer(data))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def control(short_dir):
    servers = []

    def start(answer=None, **kwargs):
        server = FakeControlServer(os.path.join(short_dir, "control.sock"), answer, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def test_ctl_add_list_remove(capsys, control):
    server = control()
    sock = ["--control-socket", server.path]
    assert main(["ctl", *sock, "add", ROUTER]) == 0
    assert main(["ctl", *sock, "add", DHCP, OVN]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["ctl", *sock, "list"]) == 0
    assert capsys.readouterr().out == f"{ROUTER}\n{DHCP}\n{OVN}\n"
    assert main(["ctl", *sock, "remove", DHCP]) == 0
    assert main(["ctl", *sock, "list"]) == 0
    assert capsys.readouterr().out == f"{ROUTER}\n{OVN}\n"
    assert server.received == [
        f"add {ROUTER}\n".encode(),
        f"add {DHCP}\n".encode(),
        f"add {OVN}\n".encode(),
        b"list\n",
        f"remove {DHCP}\n".encode(),
        b"list\n",
    ]


def test_ctl_list_empty(capsys, control):
    server = control()
    assert main(["ctl", "--control-socket", server.path, "list"]) == 0
    assert capsys.readouterr() == ("", "")


def test_ctl_error_answer_goes_to_stderr_with_status_1(capsys, control):
    server = control()
    server.namespaces.append(ROUTER)
    assert main(["ctl", "--control-socket", server.path, "remove", DHCP, ROUTER]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"metaproxy ctl: remove {DHCP}: {DHCP} is not registered\n"
    # The error on the first namespace did not stop the second.
    assert server.namespaces == []


def test_ctl_list_error(capsys, control):
    server = control(lambda line: b"error: registry unavailable\n")
    assert main(["ctl", "--control-socket", server.path, "list"]) == 1
    assert capsys.readouterr().err == "metaproxy ctl: error: registry unavailable\n"


@pytest.mark.parametrize(
    "answer, message",
    [
        (b"", "closed the connection without an answer"),
        (b"HTTP/1.1 200 OK\r\n", "unexpected answer"),
    ],
)
def test_ctl_malformed_answer(capsys, control, answer, message):
    server = control(lambda line: answer)
    assert main(["ctl", "--control-socket", server.path, "add", ROUTER]) == 1
    assert message in capsys.readouterr().err


def test_ctl_no_answer_times_out(capsys, control):
    server = control(silent=True)
    assert main(["ctl", "--control-socket", server.path, "--timeout", "0.2", "list"]) == 1
    assert f"no answer from the agent on {server.path} within 0.2 s" in capsys.readouterr().err


def test_ctl_unreachable_socket_exits_1(capsys, short_dir):
    path = os.path.join(short_dir, "nobody-here.sock")
    assert main(["ctl", "--control-socket", path, "list"]) == 1
    err = capsys.readouterr().err
    assert f"cannot connect to the control socket {path}" in err
    assert "Is the agent running" in err and "[metaproxy] control_socket" in err


def test_ctl_refused_socket_exits_1(capsys, short_dir):
    path = os.path.join(short_dir, "stale.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nothing listens: ECONNREFUSED
    assert main(["ctl", "--control-socket", path, "add", ROUTER]) == 1
    assert "Connection refused" in capsys.readouterr().err


def test_ctl_control_socket_from_the_config_file(capsys, control, config_file):
    server = control()
    server.namespaces.append(OVN)
    assert main(["ctl", "--config-file", config_file, "list"]) == 0
    assert capsys.readouterr().out == f"{OVN}\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["add", "qfoo-1"], "'qfoo-1' is not a namespace name"),
        (["add"], "'add' needs at least one NAMESPACE"),
        (["remove"], "'remove' needs at least one NAMESPACE"),
        (["list", ROUTER], "'list' takes no NAMESPACE"),
        (["purge", ROUTER], "invalid choice: 'purge'"),
    ],
)
def test_ctl_usage_errors_send_nothing(capsys, control, argv, message):
    server = control()
    assert main(["ctl", "--control-socket", server.path, *argv]) == 2
    assert message in capsys.readouterr().err
    assert server.received == []


class _Registry:
    """What ControlProtocol uses of NamespaceRegistry."""

    def __init__(self) -> None:
        self.served: set[Namespace] = set()

    def names(self) -> list[str]:
        return sorted(ns.name for ns in self.served)

    def add(self, namespace: Namespace):
        d = defer.Deferred()  # answered later, as the real registry's listen is
        reactor.callLater(0.01, lambda: (self.served.add(namespace), d.callback(None)))
        return d

    def remove(self, namespace: Namespace) -> None:
        if namespace not in self.served:
            raise RegistryError(f"{namespace.name} is not registered")
        self.served.discard(namespace)


@pytest_twisted.inlineCallbacks
def test_ctl_against_the_agent_control_protocol(short_dir, capsys):
    """The client and metaproxy.agent.control's server agree on the protocol."""
    path = os.path.join(short_dir, "agent-control.sock")
    registry = _Registry()
    port = reactor.listenUNIX(path, ControlFactory(registry))
    try:
        sock = ["--control-socket", path]
        assert (yield deferToThread(main, ["ctl", *sock, "add", ROUTER, OVN])) == 0
        assert registry.names() == [OVN, ROUTER]
        assert (yield deferToThread(main, ["ctl", *sock, "remove", DHCP])) == 1
        assert (yield deferToThread(main, ["ctl", *sock, "remove", OVN])) == 0
        assert registry.names() == [ROUTER]
        assert (yield deferToThread(main, ["ctl", *sock, "list"])) == 0
        assert capsys.readouterr() == (
            f"{ROUTER}\n",
            f"metaproxy ctl: remove {DHCP}: {DHCP} is not registered\n",
        )
    finally:
        yield port.stopListening()
