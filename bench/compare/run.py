# -*- test-case-name: tests.integration.test_compare -*-
"""Running a comparison (L{run_compare}): one fake Nova and the agents on one fleet,
storms alternating between them, everything stopped at the end."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

import attrs

from bench.compare.agents import AGENTS, RunningAgent, start_named_agent, wait_idle
from bench.compare.comparison import SIDES, Comparison, Round
from bench.load.fleet import Fleet
from bench.load.storm import StormConfig, run_storm
from bench.lookups import RunningLookup, start_lookup
from bench.processes import Process
from bench.stack import new_run_dir, start_nova

__all__ = ["run_compare"]


def _labels(names: Sequence[str]) -> list[str]:
    """The agents' names, with the side added to those that appear more than once."""
    return [
        name if list(names).count(name) == 1 else f"{name} ({SIDES[i].upper()})"
        for i, name in enumerate(names)
    ]


def run_compare(
    fleet: Fleet,
    config: StormConfig,
    a: str,
    b: str,
    c: str | None = None,
    *,
    rounds: int = 2,
    secret: str,
    agent_secret: str | None = None,
    nova_delay: float = 0.0,
    upstream_workers: int | None = None,
    keep: bool = False,
    command: str = "",
    lookup: str = "table",
) -> Comparison:
    """Start one fake Nova and the agents C{a}, C{b} (and C{c}) on C{fleet}'s table, run
    C{rounds} storms per agent alternating A, B, (C,) A, B, (C,) ..., and stop everything.

    @param config: the storm; its socket fields and C{target} are not used (each agent
        has its own target), its C{nova_url} is filled in.
    @param agent_secret: every agent's secret, if not Nova's (C{--wrong-secret}).
    @param lookup: where metaproxy looks instances up (a key of L{bench.lookups.LOOKUPS}).
    """
    names = [a, b] + ([c] if c is not None else [])
    for name in names:
        if name not in AGENTS:
            raise ValueError(f"unknown agent {name!r}; one of {', '.join(AGENTS)}")
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    labels = _labels(names)
    run = new_run_dir()
    table = run / "ports.json"
    fleet.write(table)
    agents: list[RunningAgent] = []
    nova: Process | None = None
    running: RunningLookup | None = None
    load_before = os.getloadavg()
    try:
        nova, nova_port = start_nova(table, run, secret=secret, nova_delay=nova_delay)
        running = start_lookup(lookup, table, run / "lookup")
        for side, name, label in zip(SIDES, names, labels, strict=False):
            agents.append(
                start_named_agent(
                    name,
                    label,
                    fleet,
                    table,
                    run / side,
                    nova_port=nova_port,
                    secret=agent_secret if agent_secret is not None else secret,
                    upstream_workers=upstream_workers,
                    lookup=running,
                )
            )
        run_config = attrs.evolve(config, nova_url=f"http://127.0.0.1:{nova_port}")
        done: list[Round] = []
        for number in range(1, rounds + 1):
            for side, agent in zip(SIDES, agents, strict=False):
                print(
                    f"compare: round {side.upper()}{number}: {agent.label}",
                    file=sys.stderr,
                    flush=True,
                )
                result = run_storm(
                    run_config,
                    agent.fleet or fleet,
                    [agent.process.pid],
                    target=agent.target,
                    nova_pids=[nova.pid],
                    proxy_pids=agent.proxy_pids(),
                    label="upstream neutron-metadata-agent"
                    if agent.name.startswith("upstream")
                    else "metaproxy",
                )
                for each in agents:
                    if not each.process.alive():
                        raise RuntimeError(
                            f"{each.label} died during round {side.upper()}"
                            f"{number}:\n{each.process.log()[-3000:]}"
                        )
                waited, drained = wait_idle([agent.process.pid])
                done.append(Round(number, side, result, waited, drained))
                print(
                    f"compare: round {side.upper()}{number}: {result.requests:,} requests in "
                    f"{result.duration:.1f} s, {result.error_count:,} errors "
                    f"({result.refused:,} refused); agent idle after {waited:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
        settings = {
            "fleet": fleet.describe()
            if config.instances == len(fleet.instances)
            else f"{config.instances} of {fleet.describe()}",
            "instances": config.instances,
            "routers": fleet.routers,
            "seed": fleet.seed,
            "concurrency": min(config.concurrency, config.instances),
            "ramp": config.ramp,
            "keepalive": config.keepalive,
            "workers": config.workers,
            "request_timeout": config.request_timeout,
            "rounds": rounds,
            "nova_delay": nova_delay,
            "wrong_secret": agent_secret is not None,
            "upstream_workers": upstream_workers,
            "lookup": running.description if running is not None else lookup,
        }
        return Comparison(agents, done, settings, load_before, os.getloadavg(), command)
    finally:
        for agent in agents:
            agent.stop()
        if nova is not None:
            nova.stop()
        if running is not None:
            running.stop()
        if keep:
            print(f"run directory kept: {run}", file=sys.stderr)
        else:
            shutil.rmtree(run, ignore_errors=True)
