"""The same exit status for the same situation in every subcommand: 0 success; 1 the
agent (or a dependency) cannot be reached, does not answer, answers an error or is
unhealthy; 2 bad arguments or a configuration that cannot be used. The table is in
--help and in docs/operations.md."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from metaproxy.cli import main

ROUTER = "qrouter-3f5d8c3a-1b2c-4d5e-8f90-a1b2c3d4e5f6"
OPERATIONS = Path(__file__).resolve().parents[3] / "docs" / "operations.md"

#: each subcommand with the arguments it needs to run at all
COMMANDS = {
    "haproxy-config": ["haproxy-config", ROUTER],
    "ctl": ["ctl", "list"],
    "check-config": ["check-config"],
    "health": ["health"],
}


@pytest.fixture
def short_dir():
    path = tempfile.mkdtemp(prefix="mp-exit-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _config(directory: str, default: str = "", metaproxy: str = "") -> str:
    """A configuration every subcommand can load, plus C{default} and C{metaproxy} lines."""
    table = os.path.join(directory, "ports.json")
    with open(table, "w") as f:
        f.write("[]\n")
    path = os.path.join(directory, "agent.ini")
    with open(path, "w") as f:
        f.write(
            f"[DEFAULT]\nstate_path = {directory}/state\n{default}"
            f"[metaproxy]\nlookup_table = {table}\n"
            f"control_socket = {directory}/control.sock\n"
            f"metrics_listen = unix:{directory}/metrics.sock\n{metaproxy}"
        )
    return path


def _serve(path: str, answer: bytes) -> threading.Thread:
    """Answer one connection on the Unix socket C{path} with C{answer}."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def run():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(answer)
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _status(capsys, argv: list[str]) -> tuple[int, str]:
    status = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


# -- 0: success ----------------------------------------------------------------------------


def test_success_is_0_everywhere(capsys, short_dir):
    config = _config(short_dir)
    assert _status(capsys, ["haproxy-config", ROUTER, "--config-file", config])[0] == 0
    assert _status(capsys, ["check-config", "--config-file", config])[0] == 0
    thread = _serve(os.path.join(short_dir, "control.sock"), b"ok\n")
    assert _status(capsys, ["ctl", "--config-file", config, "list"])[0] == 0
    thread.join(5)
    thread = _serve(
        os.path.join(short_dir, "metrics.sock"),
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    assert _status(capsys, ["health", "--config-file", config])[0] == 0
    thread.join(5)


def test_help_and_version_are_0(capsys):
    for argv in (["--help"], ["--version"], *([c, "--help"] for c in COMMANDS)):
        assert main(argv) == 0, argv
    capsys.readouterr()


# -- 1: the agent cannot be reached, answers an error, or is unhealthy -------------------


@pytest.mark.parametrize("command", ["ctl", "health"])
def test_an_agent_that_is_not_there_is_1(capsys, short_dir, command):
    """Nothing listens on the control socket or the metrics socket."""
    config = _config(short_dir)
    status, err = _status(capsys, [*COMMANDS[command], "--config-file", config])
    assert status == 1
    assert "No such file or directory" in err


@pytest.mark.parametrize("command", ["ctl", "health"])
def test_an_agent_that_refuses_the_connection_is_1(capsys, short_dir, command):
    """A stale socket file: ECONNREFUSED."""
    config = _config(short_dir)
    for name in ("control.sock", "metrics.sock"):
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(os.path.join(short_dir, name))
        stale.close()
    status, err = _status(capsys, [*COMMANDS[command], "--config-file", config])
    assert status == 1
    assert "Connection refused" in err


@pytest.mark.parametrize(
    "command, answer",
    [
        ("ctl", b"error: the registry is busy\n"),
        ("health", b"HTTP/1.1 503 X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"),
    ],
)
def test_an_agent_that_answers_no_is_1(capsys, short_dir, command, answer):
    config = _config(short_dir)
    sock = "control.sock" if command == "ctl" else "metrics.sock"
    thread = _serve(os.path.join(short_dir, sock), answer)
    assert _status(capsys, [*COMMANDS[command], "--config-file", config])[0] == 1
    thread.join(5)


# -- 2: bad arguments or configuration ----------------------------------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unknown_option_is_2(capsys, command):
    status, err = _status(capsys, [*COMMANDS[command], "--no-such-option"])
    assert status == 2 and "unrecognized arguments: --no-such-option" in err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_missing_configuration_file_is_2(capsys, command):
    status, err = _status(capsys, [*COMMANDS[command], "--config-file", "/nonexistent/a.ini"])
    assert status == 2 and "/nonexistent/a.ini: configuration file not found" in err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_bad_configuration_value_is_2(capsys, short_dir, command):
    config = _config(short_dir, default="metadata_backlog = lots\n")
    status, err = _status(capsys, [*COMMANDS[command], "--config-file", config])
    assert status == 2 and "[DEFAULT] metadata_backlog = 'lots'" in err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unsupported_oslo_log_option_is_2_in_one_line(capsys, short_dir, command):
    config = _config(short_dir, default="log_config_append = /etc/neutron/logging.conf\n")
    status, err = _status(capsys, [*COMMANDS[command], "--config-file", config])
    assert status == 2
    assert err.count("\n") == 1
    assert f"{config}: [DEFAULT] log_config_append = '/etc/neutron/logging.conf'" in err
    assert "not supported" in err and "use_syslog" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ctl", "--control-socket", "/x.sock", "add"], "'add' needs at least one NAMESPACE"),
        (["health", "--listen", "nowhere:x"], "--listen 'nowhere:x'"),
        (["haproxy-config", "qrouter-"], "is not a valid router or network id"),
    ],
)
def test_bad_arguments_are_2(capsys, argv, message):
    status, err = _status(capsys, argv)
    assert status == 2 and message in err


@pytest.mark.parametrize(
    "command, metaproxy, message",
    [
        ("ctl", "control_socket =\n", "sets no [metaproxy] control_socket"),
        ("health", "metrics_listen =\n", "sets no [metaproxy] metrics_listen"),
    ],
)
def test_a_configuration_without_what_the_command_needs_is_2(
    capsys, short_dir, command, metaproxy, message
):
    config = _config(short_dir)
    with open(config, "a") as f:
        f.write(metaproxy)  # the later line wins
    status, err = _status(capsys, [*COMMANDS[command], "--config-file", config])
    assert status == 2 and message in err


def test_no_command_is_2(capsys):
    assert _status(capsys, [])[0] == 2


# -- documented ----------------------------------------------------------------------------


def test_help_shows_the_exit_status_table(capsys):
    for argv in (["--help"], *([c, "--help"] for c in COMMANDS)):
        main(argv)
        out = capsys.readouterr().out
        lines = [line.strip() for line in out.splitlines()]
        assert "exit status (the same in every command):" in lines, argv
        assert any(line.startswith("0  success") for line in lines)
        assert any(line.startswith("1  the agent") for line in lines)
        assert any(line.startswith("2  the command cannot run as given") for line in lines)


def test_the_operations_page_has_the_same_table():
    text = OPERATIONS.read_text()
    ops = text[text.index("\n## Exit status\n") :]
    ops = ops[: ops.index("\n## ", 1)]
    rows = [line for line in ops.splitlines() if line.startswith("| `")]
    codes = {row.split("|")[1].strip() for row in rows}
    assert codes == {"`0`", "`1`", "`2`"}
