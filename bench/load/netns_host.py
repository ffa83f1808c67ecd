# -*- test-case-name: tests.e2e.test_topology -*-
"""The host side of the network-namespace topologies (L{bench.load.netns}): running
commands (L{run_command}), what the host must have (L{missing_prerequisites}), and
removing what earlier topologies left behind when their owner died
(L{cleanup_leftovers}).

A topology's namespaces, run directory and processes carry its tag
(C{e2e<8 hex digits>}, L{LEFTOVER}); its run directory holds a record of its owner
process and of the processes it adopted (pid and start time, so a reused pid is never
taken for them). A topology whose owner is gone is a leftover, and only those are
removed, so two runs at once do not disturb each other.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "TopologyError",
    "RUN_DIR_PREFIX",
    "INSTANCE_PREFIX",
    "ID_PREFIX",
    "TAG_HEX",
    "LEFTOVER",
    "run_command",
    "find_iptables",
    "missing_prerequisites",
    "start_time",
    "process_record",
    "terminate",
    "is_haproxy",
    "netns_list",
    "delete_namespace",
    "destroy_run",
    "cleanup_leftovers",
    "ensure_neighbour_room",
]

#: Run directories are C{/tmp/mpe2e-<hex>}: short, because haproxy accepts at most 97
#: bytes for a Unix socket path and the agent's sockets live there.
RUN_DIR_PREFIX = "/tmp/mpe2e-"
INSTANCE_PREFIX = "mpe2e-"
ID_PREFIX = "e2e"
TAG_HEX = 8
#: A namespace made by some topology: its tag's hex digits are group 1.
LEFTOVER = re.compile(
    r"^(?:(?:qrouter|qdhcp|ovnmeta)-%s|%s)([0-9a-f]{%d})-"
    % (ID_PREFIX, re.escape(INSTANCE_PREFIX), TAG_HEX)
)


class TopologyError(RuntimeError):
    """A command building or tearing down the topology failed; the message says which."""


def run_command(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 30.0,
    cwd: str | os.PathLike | None = None,
    input: bytes | None = None,
) -> subprocess.CompletedProcess:
    stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=timeout, cwd=cwd, **stdin)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TopologyError(f"{' '.join(argv)}: {e}") from None
    if check and done.returncode != 0:
        raise TopologyError(
            f"{' '.join(argv)} exited with {done.returncode}: "
            f"{done.stderr.decode(errors='replace').strip()}"
        )
    return done


# -- prerequisites ----------------------------------------------------------------------


def find_iptables(namespace: str) -> str | None:
    """The iptables command that works inside C{namespace}: C{iptables} (whichever
    backend it is), else C{iptables-legacy}; None if neither can list the nat table."""
    for command in ("iptables", "iptables-legacy"):
        if shutil.which(command) is None:
            continue
        done = run_command(
            ["ip", "netns", "exec", namespace, command, "-w", "-t", "nat", "-S"], check=False
        )
        if done.returncode == 0:
            return command
    return None


def missing_prerequisites() -> list[str]:
    """What this host lacks to build a topology, in words; empty if nothing.

    Checks root, the C{ip}, C{haproxy} and C{iptables} commands, then that a network
    namespace can really be added and that iptables' nat table works inside it.
    """
    missing = []
    if os.geteuid() != 0:
        missing.append("root (running as uid %d)" % os.geteuid())
    for tool in ("ip", "haproxy", "iptables"):
        if shutil.which(tool) is None:
            missing.append(tool)
    if missing:
        return missing
    probe = f"{INSTANCE_PREFIX}probe-{secrets.token_hex(4)}"
    done = run_command(["ip", "netns", "add", probe], check=False)
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        return ["a working `ip netns add` (%s)" % (reason[-1] if reason else done.returncode)]
    try:
        if find_iptables(probe) is None:
            missing.append(
                "iptables that works in a network namespace (iptables and "
                "iptables-legacy both fail on the nat table)"
            )
    finally:
        run_command(["ip", "netns", "delete", probe], check=False)
    return missing


# -- leftovers --------------------------------------------------------------------------


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (/proc/<pid>/stat field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    current = start_time(pid)
    return current is not None and (start is None or current == start)


def process_record(pid: int) -> str:
    """The record of process C{pid}: its pid and start time."""
    return f"{pid} {start_time(pid) or '-'}\n"


def _read_record(path: Path) -> tuple[int, str | None] | None:
    try:
        pid, start = path.read_text().split()
        return int(pid), None if start == "-" else start
    except (OSError, ValueError):
        return None


def terminate(pid: int, start: str | None, timeout: float = 5.0) -> None:
    """SIGTERM C{pid} if it is still the process recorded, then SIGKILL after C{timeout}."""
    if not _alive(pid, start):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not _alive(pid, start) or _zombie(pid):
            _reap(pid)
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def netns_list() -> list[str]:
    """The names of every network namespace on the host."""
    done = run_command(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in done.stdout.decode().splitlines() if line.strip()]


def _kill_namespace_processes(namespace: str) -> None:
    done = run_command(["ip", "netns", "pids", namespace], check=False)
    pids = [int(p) for p in done.stdout.split() if p.isdigit()]
    for pid in pids:
        terminate(pid, start_time(pid), timeout=3.0)


def delete_namespace(namespace: str) -> None:
    """Stop every process in C{namespace}, then delete it."""
    _kill_namespace_processes(namespace)
    run_command(["ip", "netns", "delete", namespace], check=False)


def _owner_alive(run_dir: Path) -> bool:
    record = _read_record(run_dir / "owner")
    return record is not None and _alive(*record)


def destroy_run(tag_hex: str, namespaces: Iterable[str]) -> None:
    """Remove a topology: its C{namespaces}, its adopted processes and haproxy, and its
    run directory."""
    run_dir = Path(RUN_DIR_PREFIX + tag_hex)
    for namespace in namespaces:
        delete_namespace(namespace)
    pids = run_dir / "pids"
    if pids.is_dir():
        for entry in pids.iterdir():
            record = _read_record(entry)
            if record is not None:
                terminate(*record)
    for pidfile in run_dir.glob("haproxy/*.pid"):
        for word in pidfile.read_text(errors="replace").split():
            if word.isdigit() and is_haproxy(int(word)):
                terminate(int(word), start_time(int(word)))
    shutil.rmtree(run_dir, ignore_errors=True)


def is_haproxy(pid: int) -> bool:
    """Whether process C{pid} is a haproxy."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "haproxy"
    except OSError:
        return False


def cleanup_leftovers() -> list[str]:
    """Remove what earlier topologies left behind when their owner died; return the
    namespaces removed. A topology whose owner still runs is left alone."""
    by_tag: dict[str, list[str]] = {}
    for namespace in netns_list():
        match = LEFTOVER.match(namespace)
        if match:
            by_tag.setdefault(match.group(1), []).append(namespace)
    for run_dir in Path(RUN_DIR_PREFIX).parent.glob(Path(RUN_DIR_PREFIX).name + "*"):
        tag = run_dir.name[len(Path(RUN_DIR_PREFIX).name) :]
        if re.fullmatch("[0-9a-f]{%d}" % TAG_HEX, tag):
            by_tag.setdefault(tag, [])
    removed = []
    for tag, namespaces in sorted(by_tag.items()):
        if _owner_alive(Path(RUN_DIR_PREFIX + tag)):
            continue
        destroy_run(tag, namespaces)
        removed.extend(namespaces)
    return removed


#: The host's IPv4 neighbour (ARP) table limits. Their count is shared by every network
#: namespace on the host, and a namespace's router keeps an entry per instance address.
NEIGH_SYSCTL = "/proc/sys/net/ipv4/neigh/default"


def ensure_neighbour_room(addresses: int, *, sysctl_dir: str = NEIGH_SYSCTL) -> str | None:
    """Make room in the host's ARP table for C{addresses} more entries (a storm's
    instances, each one an entry in its router's namespace), with room for three fronts
    at once (C{bench compare}) and the rest of the host: C{gc_thresh3} (the hard limit)
    to at least 4x and C{gc_thresh2} to at least 2x C{addresses} + 1,024. Past the hard
    limit the kernel drops packets ("neighbor table overflow"), which a storm sees as
    connections retried by SYN for up to 20 s. Limits already higher are kept.

    @return: a line saying what was raised, or None if nothing was.
    """
    need = addresses + 1024
    changed = []
    for name, factor in (("gc_thresh2", 2), ("gc_thresh3", 4)):
        path = os.path.join(sysctl_dir, name)
        with open(path) as f:
            current = int(f.read().split()[0])
        if current < factor * need:
            with open(path, "w") as f:
                f.write(str(factor * need))
            changed.append(f"{name} {current} -> {factor * need}")
    if not changed:
        return None
    return (
        "raised the host's ARP table limits (net.ipv4.neigh.default: "
        + ", ".join(changed)
        + f") for {addresses:,} instance addresses"
    )
