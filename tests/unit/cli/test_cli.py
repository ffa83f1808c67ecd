"""The ``metaproxy`` command: haproxy-config, ctl (against a real Unix socket), check-config."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import tempfile
import threading

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread

from metaproxy.agent.control import ControlFactory
from metaproxy.agent.registry import RegistryError
from metaproxy.cli import main
from metaproxy.config import default_settings
from metaproxy.namespace import Namespace

ROUTER = "qrouter-3f5d8c3a-1b2c-4d5e-8f90-a1b2c3d4e5f6"
DHCP = "qdhcp-9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"
OVN = "ovnmeta-0a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9"
SECRET = "s3cr3t-never-shown"


@pytest.fixture
def short_dir():
    """A directory with a short path: Unix socket paths are limited to 107 bytes."""
    path = tempfile.mkdtemp(prefix="mp-cli-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def config_file(short_dir):
    """A complete configuration file, as an operator would write it."""
    table = os.path.join(short_dir, "ports.json")
    with open(table, "w") as f:
        f.write("[]\n")
    path = os.path.join(short_dir, "metadata_agent.ini")
    with open(path, "w") as f:
        f.write(
            "[DEFAULT]\n"
            f"state_path = {short_dir}/state\n"
            "metadata_proxy_socket = $state_path/metadata_proxy\n"
            "metadata_proxy_user = root\n"
            "metadata_proxy_group = 0\n"
            "metadata_proxy_socket_mode = group\n"
            "nova_metadata_host = fd00::5\n"
            "nova_metadata_port = 8775\n"
            f"metadata_proxy_shared_secret = {SECRET}\n"
            "[metaproxy]\n"
            f"lookup_table = {table}\n"
            f"namespace_socket_dir = {short_dir}/ns\n"
            f"control_socket = {short_dir}/control.sock\n"
        )
    return path


def _server_lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.strip().startswith("server ")]


# -- haproxy-config -------------------------------------------------------------------


def test_haproxy_config_defaults_to_the_namespace_socket(capsys):
    assert main(["haproxy-config", ROUTER]) == 0
    out = capsys.readouterr().out
    defaults = default_settings()
    assert _server_lines(out) == [f"server metadata {defaults.namespace_socket_dir}/{ROUTER}.sock"]
    router_id = ROUTER.removeprefix("qrouter-")
    assert f"    pidfile     {defaults.state_path}/external/pids/{router_id}.pid.haproxy\n" in out
    assert f"    user        {pwd.getpwuid(os.geteuid()).pw_name}\n" in out
    assert f"    group       {grp.getgrgid(os.getegid()).gr_name}\n" in out
    assert "    bind 0.0.0.0:9697\n" in out
    assert f"    http-request set-header X-Neutron-Router-ID {router_id}\n" in out


def test_haproxy_config_from_a_config_file(capsys, config_file, short_dir):
    assert main(["haproxy-config", DHCP, "--config-file", config_file]) == 0
    out = capsys.readouterr().out
    assert _server_lines(out) == [f"server metadata {short_dir}/ns/{DHCP}.sock"]
    net_id = DHCP.removeprefix("qdhcp-")
    assert f"    pidfile     {short_dir}/state/external/pids/{net_id}.pid.haproxy\n" in out
    assert "    user        root\n" in out
    assert f"    group       {grp.getgrgid(0).gr_name}\n" in out  # gid 0 resolved to its name
    assert "    bind 169.254.169.254:80\n" in out

    assert main(["haproxy-config", DHCP, "--config-file", config_file, "--shared"]) == 0
    out = capsys.readouterr().out
    assert _server_lines(out) == [f"server metadata {short_dir}/state/metadata_proxy"]


def test_haproxy_config_shared_socket_with_defaults(capsys):
    assert main(["haproxy-config", OVN, "--shared"]) == 0
    out = capsys.readouterr().out
    assert _server_lines(out) == [f"server metadata {default_settings().metadata_proxy_socket}"]
    assert f"    http-request add-header X-OVN-Network-ID {OVN.removeprefix('ovnmeta-')}\n" in out


def test_haproxy_config_explicit_values(capsys):
    me = pwd.getpwuid(os.geteuid()).pw_name
    argv = [
        "haproxy-config",
        DHCP,
        "--socket",
        "/run/mp/x.sock",
        "--ipv6-interface",
        "tap9a8b7c6d-5e",
        "--pidfile",
        "/run/mp/x.pid",
        "--user",
        str(os.geteuid()),
        "--group",
        str(os.getegid()),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert _server_lines(out) == ["server metadata /run/mp/x.sock"]
    assert "    bind [fe80::a9fe:a9fe]:80 interface tap9a8b7c6d-5e\n" in out
    assert "    pidfile     /run/mp/x.pid\n" in out
    assert f"    user        {me}\n" in out


def test_haproxy_config_router_options(capsys):
    assert main(["haproxy-config", ROUTER, "--bind-v6-any", "--metadata-port", "9700"]) == 0
    assert "    bind :::9700\n" in capsys.readouterr().out


def test_haproxy_config_rate_limiting(capsys):
    assert (
        main(
            [
                "haproxy-config",
                OVN,
                "--rate-limit-base",
                "30/60",
                "--rate-limit-burst",
                "3/5",
                "--rate-limit-ip-version",
                "6",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "    stick-table type ipv6 size 10k expire 60s store http_req_rate(60s)\n" in out
    assert "    stick-table type ipv6 size 10k expire 60s store http_req_rate(5s)\n" in out
    assert "if { src_http_req_rate(base_rate_limiter) gt 30 }\n" in out
    assert "if { src_http_req_rate(burst_rate_limiter) gt 3 }\n" in out

    # Only a burst window: the base window takes Neutron's default 10/10, type ip.
    assert main(["haproxy-config", OVN, "--rate-limit-burst", "2/5"]) == 0
    out = capsys.readouterr().out
    assert "    stick-table type ip size 10k expire 10s store http_req_rate(10s)\n" in out
    assert "    stick-table type ip size 10k expire 10s store http_req_rate(5s)\n" in out

    assert main(["haproxy-config", OVN]) == 0
    assert "rate_limiter" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, status, message",
    [
        (["haproxy-config", "qfoo-123"], 2, "'qfoo-123' is not a namespace name"),
        (["haproxy-config", "qrouter-"], 2, "is not a valid router or network id"),
        (["haproxy-config", ROUTER, "--shared", "--socket", "/x"], 2, "not allowed with"),
        (["haproxy-config", ROUTER, "--rate-limit-base", "10"], 2, "is not N/SECONDS"),
        (["haproxy-config", ROUTER, "--rate-limit-base", "0/10"], 2, "must be >= 1"),
        (
            ["haproxy-config", ROUTER, "--rate-limit-ip-version", "6"],
            2,
            "--rate-limit-ip-version needs --rate-limit-base or --rate-limit-burst",
        ),
        (["haproxy-config", ROUTER, "--metadata-port", "70000"], 2, "is not a TCP port"),
        (
            ["haproxy-config", ROUTER, "--ipv6-interface", "tap1"],
            2,
            "ipv6_interface applies to DHCP and OVN namespaces",
        ),
        (["haproxy-config", DHCP, "--bind-v6-any"], 2, "bind_v6_any applies to router"),
        (["haproxy-config", ROUTER, "--socket", "/run/a b.sock"], 2, "socket_path '/run/a b.sock'"),
        (["haproxy-config", ROUTER, "--socket", "/" + "s" * 120], 2, "haproxy accepts at most 97"),
        (
            ["haproxy-config", ROUTER, "--user", "no-such-user-metaproxy"],
            2,
            "metadata_proxy_user 'no-such-user-metaproxy': no such user",
        ),
        (
            ["haproxy-config", ROUTER, "--config-file", "/nonexistent/metaproxy.ini"],
            2,
            "configuration file not found",
        ),
        (
            ["haproxy-config", ROUTER, "--config-dir", "/nonexistent/metaproxy.d"],
            2,
            "configuration directory not found",
        ),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        ([], 2, "the following arguments are required: COMMAND"),
    ],
)
def test_user_errors_give_a_message_and_status_not_a_traceback(capsys, argv, status, message):
    assert main(argv) == status
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert "Traceback" not in captured.err


def test_help_exits_zero(capsys):
    assert main(["haproxy-config", "--help"]) == 0
    assert "--rate-limit-base N/SECONDS" in capsys.readouterr().out


def test_a_bad_value_in_the_config_file_is_reported(capsys, short_dir):
    path = os.path.join(short_dir, "bad.ini")
    with open(path, "w") as f:
        f.write("[DEFAULT]\nmetadata_proxy_socket_mode = sometimes\n")
    assert main(["haproxy-config", ROUTER, "--config-file", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"metaproxy haproxy-config: {path}: [DEFAULT] metadata_proxy_socket_mode")
    assert "Traceback" not in err


# -- ctl --------------------------------------------------------------------------------


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


# -- check-config ---------------------------------------------------------------------


def test_check_config_ok_shows_key_values_and_never_the_secret(capsys, config_file, short_dir):
    assert main(["check-config", "--config-file", config_file]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "configuration OK"
    assert f"  metadata_proxy_socket: {short_dir}/state/metadata_proxy" in lines
    assert "  socket mode: 0664" in lines
    assert "  nova metadata url: http://[fd00::5]:8775" in lines
    assert f"  lookup backend: table ({short_dir}/ports.json)" in lines
    assert f"  control_socket: {short_dir}/control.sock" in lines
    assert "  metadata_proxy_shared_secret: set" in lines
    assert SECRET not in out


def test_check_config_says_where_the_log_goes(capsys, config_file, short_dir):
    assert main(["check-config", "--config-file", config_file]) == 0
    assert "  log: standard output (or the agent's --log-file, twistd's --logfile)" in (
        capsys.readouterr().out.splitlines()
    )
    extra = os.path.join(short_dir, "logging.ini")
    with open(extra, "w") as f:
        f.write(
            "[DEFAULT]\nlog_dir = /var/log/neutron\nuse_syslog = true\n"
            "syslog_log_facility = local0\nuse_json = true\n"
        )
    assert main(["check-config", "--config-file", config_file, "--config-file", extra]) == 0
    assert (
        "  log: file /var/log/neutron/metaproxy.log, syslog (local0), as JSON"
        in capsys.readouterr().out.splitlines()
    )


def test_check_config_reports_the_problem(capsys, config_file, short_dir):
    os.unlink(os.path.join(short_dir, "ports.json"))
    assert main(["check-config", "--config-file", config_file]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "lookup_table" in captured.err and "does not exist" in captured.err
    assert SECRET not in captured.err
    assert "Traceback" not in captured.err


# -- health ---------------------------------------------------------------------------


def test_health_without_metrics_listen_says_so(capsys):
    assert main(["health"]) == 2
    err = capsys.readouterr().err
    assert "sets no [metaproxy] metrics_listen" in err and "--listen" in err


def test_health_refuses_a_bad_listen_entry(capsys):
    assert main(["health", "--listen", "localhost:1"]) == 2
    assert "not an IP address" in capsys.readouterr().err


def _serve_once(path: str, answer: bytes) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def run():
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(answer)
        conn.close()
        server.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("status, code", [(200, 0), (503, 1)])
def test_health_exit_status_follows_the_answer(capsys, short_dir, status, code):
    path = os.path.join(short_dir, "m.sock")
    body = b'{"status": "x"}'
    thread = _serve_once(
        path,
        b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close"
        b"\r\n\r\n%s" % (status, len(body), body),
    )
    assert main(["health", "--listen", f"unix:{path}"]) == code
    thread.join(5)
    assert capsys.readouterr().out.strip() == '{"status": "x"}'
