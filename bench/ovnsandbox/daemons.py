"""A real OVN chassis as plain processes in a private directory.

    with OvnSandbox.start() as sandbox:        # OVS, NB, SB, northd, ovn-controller
        sandbox.nb_transact([...]); sandbox.sb_select("Chassis")
        sandbox.ovs_vsctl("show")

What runs, each as a child process with its database, socket, control socket and log in
C{/tmp/mpovn-<tag>/}:

  - C{ovsdb-server} for C{Open_vSwitch} (C{ovs.sock}), then C{ovs-vswitchd};
  - C{br-int} with C{datapath_type=netdev} (the userspace datapath: no OVS kernel module
    is needed) and C{fail-mode=secure};
  - the NB and SB C{ovsdb-server}s (C{nb.sock}, C{sb.sock}, and C{ptcp:0:127.0.0.1}: the
    port the kernel chose is read back from the log);
  - C{ovn-northd};
  - the chassis: C{Open_vSwitch} C{external_ids} C{system-id}, C{hostname},
    C{ovn-bridge}, C{ovn-encap-type=geneve}, C{ovn-encap-ip=127.0.0.1},
    C{ovn-remote=tcp:127.0.0.1:<SB port>}; then C{ovn-controller} with C{OVS_RUNDIR} the
    private run directory (where it finds C{br-int.mgmt}).

Ready means, in this order: the Chassis and Chassis_Private rows exist, ovn-controller
says C{connected}, and C{ovn-nbctl --wait=hv sync} returns. ovn-controller 23.03 dies of
SIGSEGV in a few per cent of starts here (always before it registers the chassis): it is
then started again, at most twice, with its last log kept in C{ovn-controller.crashes}
and counted in C{controller_restarts}. A death after the chassis is ready fails the
sandbox (L{OvnSandbox.check_alive}).

One sandbox runs at a time on a host (C{br-int} and the userspace datapath's
C{ovs-netdev} are kernel tap devices with fixed names): a lock file serialises them.
L{OvnSandbox.stop} always runs the whole clean-up (namespaces, tap devices, processes,
directory), however far the start got; a sandbox whose owner died (SIGKILL) is cleaned
up by the next one.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.ovnsandbox import ovsdbsync

__all__ = ["SandboxError", "OvnSandbox", "missing", "RUN_PREFIX"]

RUN_PREFIX = "/tmp/mpovn-"
_LOCK_PATH = "/run/lock/metaproxy-ovnsandbox.lock"
_PROGRAMS = {
    "ovsdb-server": "openvswitch-switch",
    "ovsdb-tool": "openvswitch-common",
    "ovs-vswitchd": "openvswitch-switch",
    "ovs-vsctl": "openvswitch-switch",
    "ovs-appctl": "openvswitch-common",
    "ovn-northd": "ovn-central",
    "ovn-controller": "ovn-host",
    "ovn-nbctl": "ovn-common",
    "ovn-appctl": "ovn-common",
    "ip": "iproute2",
    "iptables": "iptables",
}
_SCHEMAS = {
    "ovs": ("/usr/share/openvswitch/vswitch.ovsschema", "openvswitch-common"),
    "nb": ("/usr/share/ovn/ovn-nb.ovsschema", "ovn-common"),
    "sb": ("/usr/share/ovn/ovn-sb.ovsschema", "ovn-common"),
}
#: How many times ovn-controller is started again when it dies before the chassis is ready.
_CONTROLLER_RESTARTS = 2
#: Tap devices the userspace datapath creates besides one per bridge.
_DATAPATH_TAPS = ("ovs-netdev",)


class SandboxError(RuntimeError):
    """The sandbox could not be started (or a daemon died); the message says which."""


def _program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/usr/bin", "/sbin"):
        if os.access(f"{directory}/{name}", os.X_OK):
            return f"{directory}/{name}"
    return None


def missing() -> str | None:
    """One line saying what this host lacks to run a sandbox, or None."""
    if os.geteuid() != 0:
        return f"the OVN sandbox needs root (running as uid {os.geteuid()})"
    for name, package in _PROGRAMS.items():
        if _program(name) is None:
            return f"{name} not found (Debian package {package})"
    for path, package in _SCHEMAS.values():
        if not os.path.exists(path):
            return f"{path} not found (Debian package {package})"
    return None


def run(argv: Sequence[str], *, timeout: float = 30.0, check: bool = True, env=None) -> str:
    """Run a command; its stdout. @raise SandboxError: it failed (with its stderr)."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SandboxError(f"{' '.join(argv)}: {e}") from None
    if check and done.returncode != 0:
        raise SandboxError(
            f"{' '.join(argv)} exited with {done.returncode}: "
            f"{done.stderr.decode(errors='replace').strip()}"
        )
    return done.stdout.decode(errors="replace")


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _terminate(pid: int, start: str | None, timeout: float = 5.0) -> None:
    """SIGTERM C{pid} if it is still the process recorded, SIGKILL after C{timeout}."""
    if _start_time(pid) is None or (start is not None and _start_time(pid) != start):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:  # not ours (a dead owner's): gone or a zombie is enough
            if _start_time(pid) != start or _state(pid) == "Z":
                return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def netns_list() -> list[str]:
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def delete_namespace(name: str) -> None:
    """Kill what runs in namespace C{name}, then delete it (its veths go with it)."""
    pids = run(["ip", "netns", "pids", name], check=False).split()
    for pid in pids:
        if pid.isdigit():
            _terminate(int(pid), _start_time(int(pid)), timeout=3.0)
    run(["ip", "netns", "delete", name], check=False)


def _destroy(run_dir: Path) -> None:
    """Everything a sandbox's run directory records: processes, namespaces, taps."""
    for entry in sorted((run_dir / "pids").glob("*"), reverse=True):
        try:
            pid, start = entry.read_text().split()
        except (OSError, ValueError):
            continue
        _terminate(int(pid), None if start == "-" else start)
    recorded = set(_read_lines(run_dir / "namespaces"))
    for namespace in netns_list():
        if namespace in recorded:
            delete_namespace(namespace)
    for name in _read_lines(run_dir / "links"):
        if link_exists(name):
            run(["ip", "link", "delete", name], check=False)
    shutil.rmtree(run_dir, ignore_errors=True)


def _read_lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line]
    except OSError:
        return []


class OvnSandbox:
    """A running sandbox (see the module docstring). Build it with L{start}.

    @ivar tag: 4 hex digits unique to this sandbox, which the ids and names made for it
        start with.
    @ivar chassis: the chassis name (C{system-id}); C{hostname} the one ports request.
    """

    def __init__(self, run_dir: Path, tag: str, chassis: str, bridge: str) -> None:
        self.run_dir = run_dir
        self.tag = tag
        self.chassis = chassis
        self.hostname = chassis
        self.bridge = bridge
        self.ovs_sock = str(run_dir / "ovs.sock")
        self.nb_sock = str(run_dir / "nb.sock")
        self.sb_sock = str(run_dir / "sb.sock")
        self.nb_port = 0
        self.sb_port = 0
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock_fd: int | None = None
        self.started_in = 0.0
        self.stopped = False
        #: ovn-controller deaths while starting, survived by starting it again
        self.controller_restarts = 0
        self._stopped_dbs: dict[str, subprocess.Popen[bytes]] = {}
        self._order: dict[str, int] = {}

    # -- starting ---------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        chassis: str | None = None,
        bridge: str = "br-int",
        lock_timeout: float = 300.0,
        ready_timeout: float = 60.0,
    ) -> OvnSandbox:
        """Start every daemon and wait until the chassis is ready.

        @param chassis: the C{system-id}; default C{mpovn-<tag>} (not a UUID, as on many
            deployments).
        @raise SandboxError: L{missing} is not None, or a step failed (everything started
            so far is cleaned up first).
        """
        problem = missing()
        if problem:
            raise SandboxError(problem)
        lock_fd = _take_lock(lock_timeout)
        began = time.monotonic()
        try:
            _clean_leftovers()
            tag = secrets.token_hex(2)
            run_dir = Path(RUN_PREFIX + tag)
            run_dir.mkdir(mode=0o700)
            (run_dir / "pids").mkdir()
            sandbox = cls(run_dir, tag, chassis or f"mpovn-{tag}", bridge)
        except BaseException:
            os.close(lock_fd)
            raise
        sandbox._lock_fd = lock_fd
        atexit.register(sandbox.stop)
        (run_dir / "owner").write_text(f"{os.getpid()} {_start_time(os.getpid()) or '-'}\n")
        (run_dir / "links").write_text("\n".join((bridge, *_DATAPATH_TAPS)) + "\n")
        try:
            sandbox._start_all(ready_timeout)
        except BaseException:
            sandbox.stop()
            raise
        sandbox.started_in = time.monotonic() - began
        return sandbox

    def _start_all(self, ready_timeout: float) -> None:
        d = self.run_dir
        for name, (schema, _package) in _SCHEMAS.items():
            run(["ovsdb-tool", "create", str(d / f"{name}.db"), schema])
        self._spawn_db("ovs", self.ovs_sock, tcp=False)
        run(["ovs-vsctl", f"--db=unix:{self.ovs_sock}", "--no-wait", "init"])
        self._spawn(
            "ovs-vswitchd",
            [
                _program("ovs-vswitchd"),
                f"unix:{self.ovs_sock}",
                *self._daemon_args("ovs-vswitchd"),
            ],
        )
        self._wait_for_path(d / "ovs-vswitchd.ctl", "ovs-vswitchd")
        self.ovs_vsctl(
            "--timeout=30",
            "add-br",
            self.bridge,
            "--",
            "set",
            "Bridge",
            self.bridge,
            "datapath_type=netdev",
            "fail-mode=secure",
            "other-config:disable-in-band=true",
        )
        self.nb_port = self._spawn_db("nb", self.nb_sock, tcp=True)
        self.sb_port = self._spawn_db("sb", self.sb_sock, tcp=True)
        self._spawn(
            "ovn-northd",
            [
                _program("ovn-northd"),
                f"--ovnnb-db=unix:{self.nb_sock}",
                f"--ovnsb-db=unix:{self.sb_sock}",
                *self._daemon_args("ovn-northd"),
            ],
        )
        self.ovs_vsctl(
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            f"external_ids:system-id={self.chassis}",
            f"external_ids:hostname={self.hostname}",
            f"external_ids:ovn-bridge={self.bridge}",
            "external_ids:ovn-encap-type=geneve",
            "external_ids:ovn-encap-ip=127.0.0.1",
            f"external_ids:ovn-remote=tcp:127.0.0.1:{self.sb_port}",
        )
        self._spawn_controller()
        self._wait_ready(ready_timeout)

    def _spawn_controller(self) -> None:
        self._spawn(
            "ovn-controller",
            [
                _program("ovn-controller"),
                f"unix:{self.ovs_sock}",
                f"--pidfile={self.run_dir / 'ovn-controller.pid'}",
                *self._daemon_args("ovn-controller", unixctl=False),
            ],
        )

    def _daemon_args(self, name: str, *, unixctl: bool = True) -> list[str]:
        d = self.run_dir
        args = ["--no-chdir", f"--log-file={d / f'{name}.log'}", "-vconsole:off", "-vfile:info"]
        if unixctl:  # ovn-controller has no --unixctl: ovn-appctl finds it by its pidfile
            args.append(f"--unixctl={d / f'{name}.ctl'}")
        return args

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        d = str(self.run_dir)
        env.update(OVS_RUNDIR=d, OVS_LOGDIR=d, OVS_DBDIR=d, OVN_RUNDIR=d, OVN_LOGDIR=d)
        return env

    def _spawn(self, name: str, argv: Sequence[str | None]) -> None:
        with open(self.run_dir / f"{name}.stderr", "ab") as stderr:
            popen = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=self._env(),
                cwd=str(self.run_dir),
                start_new_session=True,
            )
        self._procs[name] = popen
        order = self._order.setdefault(name, len(self._order) + 1)  # a restart keeps its own
        (self.run_dir / "pids" / f"{order:02d}-{name}").write_text(
            f"{popen.pid} {_start_time(popen.pid) or '-'}\n"
        )

    def _spawn_db(self, name: str, sock: str, *, tcp: bool, port: int = 0) -> int:
        argv = [
            _program("ovsdb-server"),
            str(self.run_dir / f"{name}.db"),
            f"--remote=punix:{sock}",
            *self._daemon_args(f"ovsdb-{name}"),
        ]
        if tcp:
            argv.append(f"--remote=ptcp:{port}:127.0.0.1")
        log_before = len(self.log(f"ovsdb-{name}"))
        self._spawn(f"ovsdb-{name}", argv)
        self._wait_for_path(Path(sock), f"ovsdb-{name}")
        if not tcp:
            return 0
        pattern = re.compile(r"0:127\.0\.0\.1: listening on port (\d+)")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if port:  # a port given: it is not logged, but it answers
                try:
                    socket.create_connection(("127.0.0.1", port), 0.5).close()
                    return port
                except OSError:
                    pass
            else:
                found = pattern.search(self.log(f"ovsdb-{name}")[log_before:])
                if found:
                    return int(found.group(1))
            self.check_alive()
            time.sleep(0.02)
        raise SandboxError(f"ovsdb-{name} logged no TCP port: {self.log(f'ovsdb-{name}')[-1500:]}")

    def _wait_for_path(self, path: Path, name: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                return
            self.check_alive()
            time.sleep(0.02)
        raise SandboxError(f"{name} did not create {path} within {timeout} s")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        where = [["name", "==", self.chassis]]
        while not (
            self.sb_select("Chassis", where, ["name"])
            and self.sb_select("Chassis_Private", where, ["name"])
        ):
            self._not_past(deadline, "the Chassis and Chassis_Private rows")
        while self.controller_appctl("connection-status", check=False).strip() != "connected":
            self._not_past(deadline, "ovn-controller connected to the SB")
        self.sync(timeout=max(1.0, deadline - time.monotonic()))

    def _not_past(self, deadline: float, what: str) -> None:
        controller = self._procs["ovn-controller"]
        if controller.poll() is not None and self.controller_restarts < _CONTROLLER_RESTARTS:
            # ovn-controller 23.03 sometimes dies of SIGSEGV while it starts (a few per
            # cent of starts here); start it again rather than fail the test for it
            self.controller_restarts += 1
            with open(self.run_dir / "ovn-controller.crashes", "a") as f:
                f.write(f"exit {controller.returncode}\n{self.log('ovn-controller')[-3000:]}\n")
            self._spawn_controller()
        self.check_alive()
        if time.monotonic() > deadline:
            raise SandboxError(
                f"the chassis is not ready: no {what}; ovn-controller log:\n"
                f"{self.log('ovn-controller')[-2000:]}"
            )
        time.sleep(0.05)

    # -- running ----------------------------------------------------------------------

    def check_alive(self) -> None:
        """@raise SandboxError: a daemon died (the sandbox's failure, not the test's)."""
        for name, popen in self._procs.items():
            if popen.poll() is not None:
                raise SandboxError(
                    f"{name} died (exit {popen.returncode}); its log ends:\n"
                    f"{self.log(name)[-2000:]}"
                )

    def pid(self, name: str) -> int:
        """The process id of the daemon C{name} (C{ovs-vswitchd}, C{ovn-controller}, ...)."""
        return self._procs[name].pid

    def log(self, name: str) -> str:
        text = ""
        for suffix in (".log", ".stderr"):
            try:
                text += (self.run_dir / f"{name}{suffix}").read_text(errors="replace")
            except OSError:
                pass
        return text

    def controller_appctl(self, *args: str, check: bool = True) -> str:
        """C{ovn-appctl -t ovn-controller ...} (found through the private run directory)."""
        return run(["ovn-appctl", "-t", "ovn-controller", *args], check=check, env=self._env())

    def ovs_vsctl(self, *args: str, timeout: float = 30.0) -> str:
        return run(["ovs-vsctl", f"--db=unix:{self.ovs_sock}", *args], timeout=timeout)

    def nbctl(self, *args: str, timeout: float = 60.0) -> str:
        return run(["ovn-nbctl", f"--db=unix:{self.nb_sock}", *args], timeout=timeout)

    def sync(self, timeout: float = 60.0) -> None:
        """Wait until every chassis has caught up with the NB (C{--wait=hv sync})."""
        self.nbctl(f"--timeout={max(1, int(timeout))}", "--wait=hv", "sync", timeout=timeout + 5)

    def nb_transact(self, operations: Sequence[Mapping[str, Any]]) -> list[Any]:
        return ovsdbsync.transact(self.nb_sock, "OVN_Northbound", operations)

    def sb_transact(self, operations: Sequence[Mapping[str, Any]]) -> list[Any]:
        return ovsdbsync.transact(self.sb_sock, "OVN_Southbound", operations)

    def ovs_transact(self, operations: Sequence[Mapping[str, Any]]) -> list[Any]:
        return ovsdbsync.transact(self.ovs_sock, "Open_vSwitch", operations)

    def sb_select(self, table: str, where=(), columns=None) -> list[dict[str, Any]]:
        return ovsdbsync.select(self.sb_sock, "OVN_Southbound", table, where, columns)

    def nb_select(self, table: str, where=(), columns=None) -> list[dict[str, Any]]:
        return ovsdbsync.select(self.nb_sock, "OVN_Northbound", table, where, columns)

    def ovs_select(self, table: str, where=(), columns=None) -> list[dict[str, Any]]:
        return ovsdbsync.select(self.ovs_sock, "Open_vSwitch", table, where, columns)

    def remote(self, database: str, kind: str = "unix") -> str:
        """The connection string of C{ovs}, C{nb} or C{sb} (C{unix}, or C{tcp} for the
        two OVN databases)."""
        if kind == "unix":
            return f"unix:{getattr(self, f'{database}_sock')}"
        return f"tcp:127.0.0.1:{getattr(self, f'{database}_port')}"

    def record_namespace(self, name: str) -> None:
        """Have clean-up delete network namespace C{name} if it exists then."""
        with open(self.run_dir / "namespaces", "a") as f:
            f.write(name + "\n")

    def record_link(self, name: str) -> None:
        """Have clean-up delete root-namespace link C{name} if it is still there."""
        with open(self.run_dir / "links", "a") as f:
            f.write(name + "\n")

    def restart_database(self, name: str) -> None:
        """Stop the C{nb} or C{sb} ovsdb-server and start it again on the same database,
        socket and TCP port (its clients see a disconnection)."""
        self.stop_database(name)
        self.start_database(name)

    def stop_database(self, name: str) -> None:
        """Stop the C{nb} or C{sb} ovsdb-server (L{check_alive} does not mind until
        L{start_database})."""
        popen = self._procs.pop(f"ovsdb-{name}")
        popen.terminate()
        popen.wait(10)
        self._stopped_dbs[name] = popen

    def start_database(self, name: str) -> None:
        """Start the C{nb} or C{sb} ovsdb-server stopped by L{stop_database} again."""
        self._stopped_dbs.pop(name, None)
        sock = getattr(self, f"{name}_sock")
        if os.path.exists(sock):
            os.unlink(sock)
        port = getattr(self, f"{name}_port")
        setattr(self, f"{name}_port", self._spawn_db(name, sock, tcp=True, port=port))

    # -- stopping ---------------------------------------------------------------------

    def stop(self) -> None:
        """Clean everything up (idempotent): the namespaces recorded, the daemons
        (ovs-vswitchd asked to remove its datapath first), tap devices, the directory."""
        if self.stopped:
            return
        self.stopped = True
        atexit.unregister(self.stop)
        try:
            vswitchd = self._procs.get("ovs-vswitchd")
            if vswitchd is not None and vswitchd.poll() is None:
                try:
                    run(
                        [
                            "ovs-appctl",
                            "-t",
                            str(self.run_dir / "ovs-vswitchd.ctl"),
                            "exit",
                            "--cleanup",
                        ],
                        check=False,
                        timeout=10,
                    )
                except SandboxError:
                    # busy (thousands of ports on the userspace datapath) or hung: it
                    # is terminated with the others below; the stop goes on
                    pass
                else:
                    try:
                        vswitchd.wait(10)
                    except subprocess.TimeoutExpired:
                        pass
            for popen in self._procs.values():
                if popen.poll() is None:
                    popen.terminate()
            for popen in self._procs.values():
                try:
                    popen.wait(10)
                except subprocess.TimeoutExpired:
                    popen.kill()
                    popen.wait()
            _destroy(self.run_dir)
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> OvnSandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _take_lock(timeout: float) -> int:
    os.makedirs(os.path.dirname(_LOCK_PATH), exist_ok=True)
    fd = os.open(_LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise SandboxError(
                    f"another OVN sandbox has held {_LOCK_PATH} for {timeout:g} s"
                ) from None
            time.sleep(0.2)


def _clean_leftovers() -> None:
    """Holding the lock, any sandbox directory left is a dead owner's: destroy it."""
    for run_dir in Path(RUN_PREFIX).parent.glob(Path(RUN_PREFIX).name + "*"):
        if run_dir.is_dir():
            _destroy(run_dir)
    for name in ("br-int", *_DATAPATH_TAPS):
        if link_exists(name) and not _vswitchd_running():
            run(["ip", "link", "delete", name], check=False)


def _vswitchd_running() -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "ovs-vswitchd":
                    return True
            except OSError:
                continue
    return False
