"""Starting and stopping the fake Nova and the agent as real processes.

Shared by C{make demo}, the integration tests and the bench, so all three run the real
C{twistd metaproxy} plugin the way an operator does.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "Process",
    "start_fakenova",
    "start_agent",
    "wait_for_socket",
    "wait_for_log",
    "write_agent_config",
]


class Process:
    """A child process with its log file; C{stop()} terminates it (SIGTERM, then SIGKILL)."""

    def __init__(
        self, popen: subprocess.Popen, log_path: Path, name: str, url: str | None = None
    ) -> None:
        self.popen = popen
        self.log_path = log_path
        self.name = name
        #: where it listens, when it says (the fake Nova's C{http(s)://host:port})
        self.url = url

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return self.popen.returncode


#: What the fake Nova prints once it listens, before its URL.
_LISTENING = "fakenova listening on "


def _wait_for_line(process: Process, prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in process.log().splitlines():
            if line.startswith(prefix):
                return line
        if not process.alive():
            raise RuntimeError(
                f"{process.name} exited with {process.popen.returncode}:\n{process.log()[-3000:]}"
            )
        time.sleep(0.05)
    raise RuntimeError(f"{process.name} did not start within {timeout} s:\n{process.log()[-3000:]}")


def _wait_for_first_stdout_line(process: Process, timeout: float) -> str:
    """The first line the process writes on its stdout (a pipe)."""
    stdout = process.popen.stdout
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stdout], [], [], 0.2)
        if ready:
            return stdout.readline().decode(errors="replace")
        if not process.alive():
            break
    process.stop()
    raise RuntimeError(f"{process.name} did not start within {timeout} s:\n{process.log()[-3000:]}")


def start_fakenova(
    table: str | os.PathLike,
    secret: str,
    run_dir: Path,
    *,
    extra_args: Iterable[str] = (),
    timeout: float = 20.0,
    separate_stdout: bool = False,
) -> tuple[Process, int]:
    """Start C{python -m bench.fakes.nova} on a free loopback port; return it and the port.

    The secret is written to a file with a trailing newline, as an operator's file has.
    The returned process's C{url} is where it listens (C{https://...} with TLS options).

    @param separate_stdout: keep stdout apart, as a pipe (C{process.popen.stdout}), and
        the log file for stderr only: the listening line must then be the first line on
        stdout, and a test can check that nothing else is written there.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "fakenova.log"
    secret_file = run_dir / "fakenova.secret"
    secret_file.write_text(secret + "\n")
    args = [
        sys.executable,
        "-m",
        "bench.fakes.nova",
        "--table",
        str(table),
        "--secret-file",
        str(secret_file),
        "--listen",
        "tcp:0:interface=127.0.0.1",
        *extra_args,
    ]
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            args,
            stdout=subprocess.PIPE if separate_stdout else log,
            stderr=log if separate_stdout else subprocess.STDOUT,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
    process = Process(popen, log_path, "fake Nova")
    if separate_stdout:
        line = _wait_for_first_stdout_line(process, timeout)
        if not line.startswith(_LISTENING):
            process.stop()
            raise RuntimeError(
                f"fake Nova's first line is not {_LISTENING!r}: {line!r}\n{process.log()[-3000:]}"
            )
    else:
        line = _wait_for_line(process, _LISTENING, timeout)
    process.url = line.removeprefix(_LISTENING).strip()
    port = int(line.rsplit(":", 1)[1].strip().rstrip(")"))
    return process, port


def write_agent_config(
    path: Path,
    *,
    state_path: Path,
    nova_port: int,
    secret: str,
    table: str | os.PathLike,
    namespaces: Iterable[str] = (),
    extra_default: str = "",
    extra_metaproxy: str = "",
    extra_sections: str = "",
) -> Path:
    """Write a metadata_agent.ini for a local run (everything under C{state_path}).

    @param extra_sections: whole sections appended at the end (C{"[ovn]\\n..."}).
    """
    path.write_text(
        "[DEFAULT]\n"
        f"state_path = {state_path}\n"
        "nova_metadata_host = 127.0.0.1\n"
        f"nova_metadata_port = {nova_port}\n"
        f"metadata_proxy_shared_secret = {secret}\n"
        f"{extra_default}"
        "\n[metaproxy]\n"
        f"lookup_table = {table}\n"
        f"namespaces = {','.join(namespaces)}\n"
        "namespace_rescan_interval = 0.5\n"
        f"{extra_metaproxy}" + (f"\n{extra_sections}" if extra_sections else "")
    )
    return path


def start_agent(
    config_files: Iterable[str | os.PathLike],
    run_dir: Path,
    *,
    wait_socket: str | None,
    timeout: float = 30.0,
) -> Process:
    """Start C{twistd -n metaproxy --config-file ...} and wait for its shared socket."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "metaproxy.log"
    args = [
        str(Path(sys.executable).with_name("twistd")),
        "--nodaemon",
        "--pidfile=",
        f"--logfile={log_path}",
        "metaproxy",
    ]
    for f in config_files:
        args += ["--config-file", str(f)]
    stderr_path = run_dir / "metaproxy.stderr"
    with open(stderr_path, "wb") as err:
        popen = subprocess.Popen(args, stdout=err, stderr=subprocess.STDOUT, cwd=str(run_dir))
    process = Process(popen, log_path, "metaproxy")
    if wait_socket:
        try:
            wait_for_socket(wait_socket, timeout, process)
        except RuntimeError:
            process.stop()
            raise RuntimeError(
                f"metaproxy did not start:\n{stderr_path.read_text()}\n{process.log()[-3000:]}"
            ) from None
    return process


def wait_for_log(process: Process, text: str, timeout: float = 30.0) -> None:
    """Wait until C{process}'s log contains C{text} (its lookups are ready, say)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in process.log():
            return
        if not process.alive():
            raise RuntimeError(
                f"{process.name} exited with {process.popen.returncode}:\n{process.log()[-3000:]}"
            )
        time.sleep(0.05)
    raise RuntimeError(
        f"{process.name} did not log {text!r} within {timeout} s:\n{process.log()[-3000:]}"
    )


def wait_for_socket(path: str, timeout: float = 30.0, process: Process | None = None) -> None:
    """Wait until something accepts connections on the Unix socket C{path}."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} exited with {process.popen.returncode}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {path} after {timeout} s")
