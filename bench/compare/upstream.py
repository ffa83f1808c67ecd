"""Upstream's real C{neutron-metadata-agent}, run beside metaproxy on the same table.

The bench compares metaproxy with the agent it replaces. Upstream is installed from the
package index into its own virtualenv (L{ensure_upstream_venv}: neutron drags in about 130
packages; none of them goes into metaproxy's environment) and started by
C{bench/compare/upstream_launch.py} (L{start_upstream_agent}), which runs upstream's own
C{neutron-metadata-agent} entry point with exactly one replacement: the RPC port lookup
C{MetadataPluginAPI.get_ports} answers from our JSON table instead of asking
neutron-server. The socket server, request handling, signing, forwarding to Nova with
requests and the answers are upstream's code, so both agents serve the same storm against
the same fake Nova.

No broker is needed: the configuration sets C{transport_url = fake://} (oslo.messaging's
in-process driver; with the replaced lookup nothing is ever sent on it) and C{[AGENT]
report_interval = 0} (no state reports).

What to expect from upstream (docs/upstream.md, "Socket and workers"): a listen backlog
of 5 whatever C{metadata_backlog} says, so it refuses connections under load; and error
answers (404, 400, 503) written with bare LF line ends, which the bench's parsers accept
and count as "non-CRLF answers".
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.processes import Process, wait_for_socket

__all__ = [
    "NEUTRON_SPEC",
    "DEFAULT_VENV",
    "UpstreamInstallError",
    "ensure_upstream_venv",
    "upstream_installed",
    "index_reachable",
    "write_upstream_config",
    "start_upstream_agent",
    "listen_backlog",
]

#: Known good on Python 3.11 (neutron 29.0.0 = OpenStack 2026.2, Requires-Python >= 3.11).
NEUTRON_SPEC = "neutron==29.0.0"

_REPO = Path(__file__).resolve().parents[2]
#: Outside the work tree, so fresh clones on one machine (CI's among them) share one install
#: of neutron and its ~125 dependencies instead of downloading them again each time.
DEFAULT_VENV = Path(
    os.environ.get("METAPROXY_UPSTREAM_VENV")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "metaproxy"
    / "upstream-venv"
)
_LAUNCHER = Path(__file__).resolve().with_name("upstream_launch.py")
_STAMP = ".installed"
#: pip output lines worth echoing as progress (the full output goes to pip-install.log).
_PROGRESS = ("Collecting ", "Building ", "Installing collected", "Successfully ", "ERROR")


class UpstreamInstallError(RuntimeError):
    """The upstream virtualenv could not be created or neutron not installed."""


def _say(text: str) -> None:
    print(f"upstream: {text}", file=sys.stderr, flush=True)


def _base_python() -> str:
    """The interpreter metaproxy's own virtualenv was made from (the system's python3 that
    C{make venv} used), so both agents run on the same CPython build."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _runs(python: Path) -> bool:
    try:
        return (
            subprocess.run(
                [str(python), "-c", "pass"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def upstream_installed(venv_dir: Path = DEFAULT_VENV, neutron_spec: str = NEUTRON_SPEC) -> bool:
    """True when C{venv_dir} holds a working Python with C{neutron_spec} installed."""
    python = Path(venv_dir) / "bin" / "python"
    stamp = Path(venv_dir) / _STAMP
    try:
        if stamp.read_text().strip() != neutron_spec:
            return False
    except OSError:
        return False
    return _runs(python)


def index_reachable(timeout: float = 60.0) -> bool:
    """Whether pip (as configured on this machine) can reach the package index."""
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "index",
                "versions",
                "neutron",
                "--timeout",
                "15",
                "--retries",
                "1",
                "--disable-pip-version-check",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "neutron (" in result.stdout


def ensure_upstream_venv(
    venv_dir: Path = DEFAULT_VENV, neutron_spec: str = NEUTRON_SPEC, *, python: str | None = None
) -> Path:
    """Create C{venv_dir} and C{pip install neutron_spec} into it; return its python.

    Idempotent: a stamp file (C{.installed}, holding the spec) written after a successful
    install makes later calls return at once. A different spec re-runs pip in the same
    virtualenv; a virtualenv whose Python no longer runs is rebuilt. Concurrent callers
    wait for each other (a lock on the directory). pip's whole output is kept in
    C{<venv_dir>/pip-install.log} and C{pip freeze} in C{<venv_dir>/installed.txt}.

    @param python: interpreter to build the virtualenv with; default: the one metaproxy's
        virtualenv was made from.
    @raise UpstreamInstallError: venv creation or pip failed (the message has pip's tail).
    """
    venv_dir = Path(venv_dir)
    venv_python = venv_dir / "bin" / "python"
    if upstream_installed(venv_dir, neutron_spec):
        return venv_python
    venv_dir.mkdir(parents=True, exist_ok=True)
    lock = os.open(venv_dir, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if upstream_installed(venv_dir, neutron_spec):  # another process just did it
            return venv_python
        _install(venv_dir, neutron_spec, python or _base_python())
    finally:
        os.close(lock)
    _say(f"{neutron_spec} ready in {venv_dir}")
    return venv_python


def _install(venv_dir: Path, spec: str, base_python: str) -> None:
    venv_python = venv_dir / "bin" / "python"
    stamp = venv_dir / _STAMP
    stamp.unlink(missing_ok=True)
    started = time.monotonic()
    if not _runs(venv_python):
        for child in venv_dir.iterdir():  # keep the (locked) directory itself
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        _say(f"creating virtualenv {venv_dir} with {base_python}")
        result = subprocess.run(
            [base_python, "-m", "venv", str(venv_dir)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise UpstreamInstallError(
                f"{base_python} -m venv {venv_dir} failed:\n{result.stdout}{result.stderr}"
            )
    _say(
        f"pip install {spec} (about 130 packages; a minute or two the first time), "
        f"log: {venv_dir / 'pip-install.log'}"
    )
    log_path = venv_dir / "pip-install.log"
    args = [
        str(venv_python),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        spec,
    ]
    collected = 0
    with open(log_path, "w") as log:
        popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert popen.stdout is not None
        for line in popen.stdout:
            log.write(line)
            if line.startswith("Collecting "):
                collected += 1
                if collected % 20 == 1:
                    _say(f"  [{collected}] {line.strip()}")
            elif line.startswith(_PROGRESS):
                _say(f"  {line.strip()[:200]}")
        returncode = popen.wait()
    if returncode != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(True)[-30:])
        raise UpstreamInstallError(
            f"pip install {spec} failed (exit {returncode}); full log {log_path}:\n{tail}"
        )
    freeze = subprocess.run(
        [str(venv_python), "-m", "pip", "freeze", "--disable-pip-version-check"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    (venv_dir / "installed.txt").write_text(freeze.stdout)
    stamp.write_text(spec + "\n")
    _say(f"installed {spec} in {time.monotonic() - started:.0f} s")


def _ini_value(value: str) -> str:
    """An oslo.config value: C{$} starts a substitution, C{$$} is a literal C{$}."""
    if "\n" in value:
        raise ValueError("configuration values cannot contain a newline")
    return value.replace("$", "$$")


def write_upstream_config(
    path: Path,
    *,
    state_path: Path,
    socket_path: Path,
    log_file: Path,
    nova_port: int,
    secret: str,
    workers: int | None = None,
    nova_host: str = "127.0.0.1",
    debug: bool = False,
    transport_url: str | None = None,
) -> Path:
    """Write the C{metadata_agent.ini} upstream is started with.

    @param transport_url: a real bus: upstream's own RPC client looks ports up there and
        reports its state every 30 s (its default), as on a node. Default: C{fake://},
        no state reports (the table answers its lookups in-process).
    """
    workers_line = f"metadata_workers = {workers}\n" if workers is not None else ""
    if transport_url:
        bus = f"transport_url = {_ini_value(transport_url)}\n"
        reports = ""
    else:
        bus = (
            "# oslo.messaging's in-process driver: the port lookup RPC is answered from the\n"
            "# table by upstream_launch.py, and nothing else is ever sent, so no broker.\n"
            "transport_url = fake://\n"
        )
        reports = "\n[AGENT]\nreport_interval = 0\n"
    path.write_text(
        "[DEFAULT]\n"
        f"state_path = {_ini_value(str(state_path))}\n"
        f"metadata_proxy_socket = {_ini_value(str(socket_path))}\n"
        f"nova_metadata_host = {nova_host}\n"
        f"nova_metadata_port = {nova_port}\n"
        "nova_metadata_protocol = http\n"
        f"metadata_proxy_shared_secret = {_ini_value(secret)}\n"
        f"{workers_line}"
        f"{bus}"
        f"log_file = {_ini_value(str(log_file))}\n"
        "use_stderr = false\n"
        f"debug = {'true' if debug else 'false'}\n"
        f"{reports}"
    )
    return path


def start_upstream_agent(
    table: Path,
    run_dir: Path,
    *,
    nova_port: int,
    secret: str,
    workers: int | None = None,
    timeout: float = 60,
    venv_dir: Path = DEFAULT_VENV,
    neutron_spec: str = NEUTRON_SPEC,
    debug: bool = False,
    transport_url: str | None = None,
) -> tuple[Process, str]:
    """Start upstream's C{neutron-metadata-agent} on C{table}; return it and its socket.

    Installs upstream first if needed (L{ensure_upstream_venv}). Returns once the socket
    accepts connections. The probe connection is closed without a request, which upstream
    logs as one C{Error while receiving data.: ValueError: Bad HTTP request line: b''}
    traceback. Upstream's log is C{<run_dir>/neutron-metadata-agent.log} (the returned
    process's C{log_path}); anything it prints before logging is set up goes to
    C{<run_dir>/neutron-metadata-agent.stderr}.

    @param workers: C{metadata_workers}; None leaves upstream's default (CPUs // 2).
    @param transport_url: run upstream unpatched, looking ports up over this bus (a
        fake neutron-server serving C{table} there, L{bench.fakes.neutronserver}).
    @param table: metaproxy's JSON table; checked with metaproxy's own loader first, so a
        table metaproxy refuses is refused here too.
    """
    from metaproxy.resolve.table import load_table

    table = Path(table).resolve()
    load_table(table)
    python = ensure_upstream_venv(venv_dir, neutron_spec)
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    state = run_dir / "state"
    socket_path = state / "metadata_proxy"
    if len(os.fsencode(str(socket_path))) > 107:
        raise ValueError(
            f"socket path {socket_path} is too long for a Unix socket; use a shorter run_dir"
        )
    log_path = run_dir / "neutron-metadata-agent.log"
    stderr_path = run_dir / "neutron-metadata-agent.stderr"
    config = write_upstream_config(
        run_dir / "metadata_agent.ini",
        state_path=state,
        socket_path=socket_path,
        log_file=log_path,
        nova_port=nova_port,
        secret=secret,
        workers=workers,
        debug=debug,
        transport_url=transport_url,
    )
    # -I: isolated, so neither this repository (the script's directory, bench/) nor
    # PYTHONPATH can shadow a module of upstream's.
    lookups = ["--rpc"] if transport_url else ["--table", str(table)]
    args = [str(python), "-I", str(_LAUNCHER), *lookups, "--config-file", str(config)]
    with open(stderr_path, "wb") as err:
        popen = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT, cwd=str(run_dir)
        )
    process = Process(popen, log_path, "upstream neutron-metadata-agent")
    try:
        wait_for_socket(str(socket_path), timeout, process)
    except RuntimeError as e:
        process.stop()
        raise RuntimeError(
            f"upstream neutron-metadata-agent did not start ({e}):\n"
            f"{stderr_path.read_text(errors='replace')[-3000:]}\n"
            f"{process.log()[-3000:]}"
        ) from None
    _say(f"neutron-metadata-agent (pid {process.pid}) on {socket_path}; log: {log_path}")
    return process, str(socket_path)


def listen_backlog(socket_path: str) -> int | None:
    """The listen backlog of the Unix socket C{socket_path}, as C{ss -xlH} shows it
    (the Send-Q column of a listening socket); None if no listening socket has that path.

    @raise FileNotFoundError: C{ss} (iproute2) is not installed.
    """
    output = subprocess.run(
        ["ss", "-xlH"], capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL
    ).stdout
    for line in output.splitlines():
        fields = line.split()
        # Netid State Recv-Q Send-Q Local-Address Port Peer-Address Port
        if len(fields) >= 5 and fields[1] == "LISTEN" and fields[4] == socket_path:
            return int(fields[3])
    return None
