# -*- test-case-name: tests.integration.test_compare -*-
"""The agents a comparison can run (L{AGENTS}), how each is started in front of the fake
Nova (L{start_named_agent}), and waiting until one has gone quiet after a storm
(L{wait_idle})."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from bench.load.fleet import Fleet
from bench.load.procstat import tree_cpu_seconds
from bench.load.targets import NamespaceSockets, SharedSocket, Target
from bench.lookups import RunningLookup
from bench.processes import Process
from bench.stack import start_metaproxy

__all__ = [
    "AGENTS",
    "HAPROXY_SUFFIX",
    "RunningAgent",
    "start_named_agent",
    "wait_idle",
]

#: Agent name to what it is.
AGENTS = {
    "metaproxy": "metaproxy (twistd metaproxy), Neutron's shared socket",
    "metaproxy-namespaces": "metaproxy (twistd metaproxy), its per-namespace sockets",
    "upstream": "upstream's neutron-metadata-agent, shared socket (its only kind)",
    "metaproxy-haproxy": "metaproxy behind real haproxy in network namespaces, shared socket",
    "upstream-haproxy": "upstream behind real haproxy in network namespaces, shared socket",
    "metaproxy-routers": "metaproxy listening in the router namespaces itself, no haproxy "
    "(router_namespaces = serve)",
}
#: An agent name ending so is the agent before it behind haproxy (L{bench.load.nstarget}).
HAPROXY_SUFFIX = "-haproxy"
#: An agent is idle when its processes use less than this share of one core...
IDLE_SHARE = 0.05
#: ... over this many seconds; L{wait_idle} gives up after L{IDLE_TIMEOUT}.
IDLE_WINDOW = 0.5
IDLE_TIMEOUT = 60.0


@attrs.define
class RunningAgent:
    """One started agent: its process (descendants are measured too), the storm target
    that reaches it, and the run directory with its logs."""

    name: str
    label: str
    description: str
    process: Process
    target: Target
    run_dir: Path
    front: Any = None  # HaproxyFront (-haproxy agents) or RouterFront (metaproxy-routers)
    #: the fleet as this agent's table knows it (metaproxy-routers: routers renamed)
    fleet: Fleet | None = None
    lookup: RunningLookup | None = None  # a lookup service of its own, stopped with it

    def stop(self) -> None:
        if self.front is not None:
            self.front.stop()
        self.process.stop()
        if self.lookup is not None:
            self.lookup.stop()

    def proxy_pids(self) -> list[int]:
        """The proxies in front of it (haproxy), measured with it."""
        return self.front.proxy_pids() if self.front is not None else []

    def is_metaproxy(self) -> bool:
        return self.name.startswith("metaproxy")


def start_named_agent(
    name: str,
    label: str,
    fleet: Fleet,
    table: Path,
    run_dir: Path,
    *,
    nova_port: int,
    secret: str,
    upstream_workers: int | None = None,
    lookup: RunningLookup | None = None,
) -> RunningAgent:
    """Start the agent called C{name} (a key of L{AGENTS}) on C{table} in front of the
    fake Nova at C{nova_port}, everything under C{run_dir}.

    @param lookup: the lookup service metaproxy uses (L{bench.lookups}); default: the
        table file. Upstream's port lookups are answered from C{table}, except when the
        lookup service is a bus (C{--lookup rpc}): then upstream, unpatched, asks the same
        fake neutron-server over the same bus with its own RPC client.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    if name.endswith(HAPROXY_SUFFIX) and name in AGENTS:
        from bench.load.nstarget import start_haproxy_front

        agent = start_named_agent(
            name[: -len(HAPROXY_SUFFIX)],
            label,
            fleet,
            table,
            run_dir,
            nova_port=nova_port,
            secret=secret,
            upstream_workers=upstream_workers,
            lookup=lookup,
        )
        try:
            front = start_haproxy_front(
                fleet,
                len(fleet.instances),
                socket_path=agent.target.path,  # type: ignore
                adopt=[agent.process.pid],
            )
        except BaseException:
            agent.stop()
            raise
        print(f"compare: {label}: {front.describe_setup()}", file=sys.stderr, flush=True)
        return RunningAgent(
            name,
            label,
            f"{agent.description}; behind {front.target.describe()}",
            agent.process,
            front.target,
            run_dir,
            front,
        )
    if name == "metaproxy-routers":
        return _start_router_agent(
            label, fleet, run_dir, nova_port=nova_port, secret=secret, lookup=lookup
        )
    if name in ("metaproxy", "metaproxy-namespaces"):
        process, shared, ns_dir = start_metaproxy(
            fleet, table, run_dir, nova_port=nova_port, secret=secret, lookup=lookup
        )
        target: Target = SharedSocket(shared) if name == "metaproxy" else NamespaceSockets(ns_dir)
        return RunningAgent(name, label, AGENTS[name], process, target, run_dir)
    if name == "upstream":
        from bench.compare import upstream

        transport_url = lookup.transport_url if lookup is not None else None
        process, socket_path = upstream.start_upstream_agent(
            table,
            run_dir,
            nova_port=nova_port,
            secret=secret,
            workers=upstream_workers,
            transport_url=transport_url,
        )
        workers = (
            f"metadata_workers = {upstream_workers}"
            if upstream_workers is not None
            else f"metadata_workers: upstream's default, CPUs // 2 = "
            f"{(os.cpu_count() or 1) // 2} here"
        )
        lookups = (
            "its own RPC client to the same fake neutron-server"
            if transport_url
            else "get_ports answered from the table in-process"
        )
        description = (
            f"upstream's neutron-metadata-agent ({upstream.NEUTRON_SPEC}), shared "
            f"socket; {workers}; lookups: {lookups}"
        )
        return RunningAgent(name, label, description, process, SharedSocket(socket_path), run_dir)
    raise ValueError(f"unknown agent {name!r}; one of {', '.join(AGENTS)}")


def _start_router_agent(
    label: str,
    fleet: Fleet,
    run_dir: Path,
    *,
    nova_port: int,
    secret: str,
    lookup: RunningLookup | None,
) -> RunningAgent:
    """metaproxy serving the fleet's routers in their own namespaces
    (L{bench.load.routerfront}). Its table names the routers after the topology; the
    fake Nova's is the same but for router ids, which Nova never sees. A lookup service
    other than the table is started again for this agent, on its table."""
    from bench.load.netns import Topology
    from bench.load.routerfront import router_fleet, router_mode_config, start_router_front
    from bench.lookups import start_lookup

    topology = Topology()
    own_lookup = None
    process = None
    try:
        renamed = router_fleet(fleet, topology)
        table = run_dir / "ports.json"
        renamed.write(table)
        if lookup is not None and lookup.name != "table":
            own_lookup = start_lookup(lookup.name, table, run_dir / "lookup")
        process, _, _ = start_metaproxy(
            renamed,
            table,
            run_dir,
            nova_port=nova_port,
            secret=secret,
            extra_metaproxy=router_mode_config(topology),
            lookup=own_lookup,
        )
        front = start_router_front(topology, renamed, len(fleet.instances), adopt=[process.pid])
    except BaseException:
        topology.cleanup()
        if process is not None:
            process.stop()
        if own_lookup is not None:
            own_lookup.stop()
        raise
    print(f"compare: {label}: {front.describe_setup()}", file=sys.stderr, flush=True)
    return RunningAgent(
        "metaproxy-routers",
        label,
        f"{AGENTS['metaproxy-routers']}; {front.target.describe()}",
        process,
        front.target,
        run_dir,
        front,
        renamed,
        own_lookup,
    )


def wait_idle(
    pids: Sequence[int],
    *,
    share: float = IDLE_SHARE,
    window: float = IDLE_WINDOW,
    timeout: float = IDLE_TIMEOUT,
) -> tuple[float, bool]:
    """Wait until the process trees of C{pids} use less than C{share} of one core over
    C{window} seconds. Returns (seconds waited, whether they went idle within
    C{timeout})."""
    started = time.monotonic()
    before = tree_cpu_seconds(pids)
    while True:
        time.sleep(window)
        after = tree_cpu_seconds(pids)
        waited = time.monotonic() - started
        if after - before < share * window:
            return waited, True
        if waited >= timeout:
            return waited, False
        before = after
