"""The two OVN metadata agents the comparison runs, and what is read from /proc of them.

    agent = start_agent("metaproxy", sandbox, run_dir, nova_port=port, secret=s)
    agent = start_agent("upstream", sandbox, run_dir, nova_port=port, secret=s)
    footprint = Footprint.read(agent, namespaces)       # processes, RSS, private memory
    before = cpu_snapshot(agent.pids() | ...)           # then cpu_delta(before, ...)

Both agents are started in a session of their own (L{bench.ovnsandbox.sessions}): the
session holds the agent and whatever it forks that outlives its parent (upstream's
privsep daemons). What runs inside the networks' C{ovnmeta-} namespaces (upstream's
haproxies, daemons in sessions of their own) is found there (C{ip netns pids}).
metaproxy runs no process in them: it listens inside them from its own process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from bench.load.procstat import process_cpu_seconds, rss_bytes
from bench.ovnsandbox.chassis_process import write_metaproxy_config
from bench.ovnsandbox.daemons import OvnSandbox, run
from bench.ovnsandbox.sessions import SessionAgent
from bench.ovnsandbox.upstream_agent import (
    refuse_beside_foreign_ovnmeta,
    start_upstream_ovn_agent,
)

__all__ = [
    "AGENTS",
    "ChassisProcess",
    "Footprint",
    "cpu_snapshot",
    "cpu_delta",
    "namespace_pids",
    "private_bytes",
    "start_agent",
]

_REPO = Path(__file__).resolve().parents[2]
AGENTS = ("metaproxy", "upstream")


class ChassisProcess(SessionAgent):
    """metaproxy's chassis mode: C{twistd metaproxy} on the OVN agent's options
    (L{bench.ovnsandbox.chassis_process})."""

    name = "metaproxy"
    log_names = ("chassis.log", "chassis.stderr")


def start_chassis_process(
    sandbox: OvnSandbox,
    run_dir: Path,
    *,
    nova_port: int,
    secret: str,
    metrics_listen: str = "",
) -> ChassisProcess:
    # the chassis mode owns every ovnmeta- namespace, as upstream does
    refuse_beside_foreign_ovnmeta(sandbox, "metaproxy's chassis mode")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "metaproxy.ini"
    write_metaproxy_config(
        config,
        state_path=str(run_dir / "s"),  # short: socket paths under it
        sb_connection=sandbox.remote("sb", "tcp"),
        nova_port=nova_port,
        secret=secret,
        ovs_connection=sandbox.remote("ovs"),
        metrics_listen=metrics_listen,
    )
    argv = [
        str(Path(sys.executable).with_name("twistd")),
        "--nodaemon",
        "--pidfile=",
        f"--logfile={run_dir / 'chassis.log'}",
        "metaproxy",
        "--config-file",
        str(config),
    ]
    with open(run_dir / "chassis.stderr", "wb") as stderr:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=subprocess.STDOUT,
            cwd=str(_REPO),
            start_new_session=True,
        )
    return ChassisProcess(popen, run_dir)


def start_agent(name: str, sandbox: OvnSandbox, run_dir: Path, *, nova_port: int, secret: str):
    """Start agent C{name} (one of L{AGENTS}) on C{sandbox}; returns at once."""
    if name == "metaproxy":
        return start_chassis_process(sandbox, run_dir, nova_port=nova_port, secret=secret)
    if name == "upstream":
        return start_upstream_ovn_agent(sandbox, run_dir, nova_port=nova_port, secret=secret)
    raise ValueError(f"unknown agent {name!r}: one of {', '.join(AGENTS)}")


def namespace_pids(namespaces: Iterable[str]) -> dict[str, list[int]]:
    """The processes running in each namespace (C{ip netns pids})."""
    return {
        ns: [int(p) for p in run(["ip", "netns", "pids", ns], check=False).split() if p.isdigit()]
        for ns in namespaces
    }


def private_bytes(pid: int) -> int:
    """C{Private_Clean + Private_Dirty} of C{pid} (C{smaps_rollup}), in bytes; 0 if gone."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith((b"Private_Clean:", b"Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def cpu_snapshot(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds so far of each of C{pids} (reaped children included)."""
    return {pid: process_cpu_seconds(pid) for pid in pids}


def cpu_delta(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU seconds used between two snapshots; a process new in C{after} counts whole."""
    return sum(max(0.0, seconds - before.get(pid, 0.0)) for pid, seconds in after.items())


@attrs.frozen
class ProcessMemory:
    pid: int
    comm: str
    rss: int
    private: int


@attrs.frozen
class Footprint:
    """The agent's processes and memory at one moment.

    @ivar session: the agent's session (the agent, upstream's privsep daemons).
    @ivar per_namespace: what else runs in each network's namespace (upstream's
        haproxy).
    """

    session: tuple[ProcessMemory, ...]
    per_namespace: Mapping[str, tuple[ProcessMemory, ...]]

    @classmethod
    def read(cls, agent, namespaces: Iterable[str]) -> Footprint:
        def memory(pid: int) -> ProcessMemory:
            return ProcessMemory(pid, _comm(pid), rss_bytes(pid), private_bytes(pid))

        members = agent.pids()
        inside = namespace_pids(namespaces)
        # a privsep daemon may be inside a namespace for a moment (it enters it to
        # configure it, or forks a helper that does): it is the agent's own, counted
        # once, in the session. The session is read again after the namespaces, so that
        # one forked meanwhile is known as the agent's too; one already gone by then
        # ran in the namespace only for a moment and is not counted there
        members |= agent.pids()
        session = tuple(memory(pid) for pid in sorted(members))
        return cls(
            session,
            {
                ns: tuple(
                    memory(pid)
                    for pid in sorted(set(pids) - members)
                    if os.path.exists(f"/proc/{pid}")
                )
                for ns, pids in inside.items()
            },
        )

    @property
    def agent_rss(self) -> int:
        """RSS of the session but its privsep daemons: the agent (and any worker it
        forks)."""
        return sum(p.rss for p in self.session if p.comm != "privsep-helper")

    @property
    def helpers(self) -> tuple[ProcessMemory, ...]:
        return tuple(p for p in self.session if p.comm == "privsep-helper")

    @property
    def in_namespaces(self) -> tuple[ProcessMemory, ...]:
        return tuple(p for procs in self.per_namespace.values() for p in procs)

    @property
    def processes_per_network(self) -> float:
        if not self.per_namespace:
            return 0.0
        return len(self.in_namespaces) / len(self.per_namespace)

    def all_pids(self) -> set[int]:
        return {p.pid for p in self.session} | {p.pid for p in self.in_namespaces}

    def as_json(self) -> dict:
        return {
            "session": [attrs.asdict(p) for p in self.session],
            "per_namespace": {
                ns: [attrs.asdict(p) for p in procs] for ns, procs in self.per_namespace.items()
            },
        }
