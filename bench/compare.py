# -*- test-case-name: tests.integration.test_compare -*-
"""C{python -m bench compare}: the same boot storm against two agents in one run.

    python -m bench compare --a metaproxy --b upstream [--c metaproxy-namespaces]
                            [--rounds 2] [storm options]

One fleet, one table and B{one fake Nova} serve the agents, and each agent is started
once. Then the rounds alternate: A, B, A, B, ... (A, B, C, A, B, C with a third agent;
C{--rounds} storms per agent, each a full storm, L{bench.load.storm.run_storm}). After each
storm the agent that served it is given time to go quiet (L{wait_idle}: upstream keeps
working through connections it accepted after the generator gave up on them), so it
does not eat into the next round.

Agents (L{AGENTS}):

  - C{metaproxy}: C{twistd metaproxy} through Neutron's shared socket;
  - C{metaproxy-namespaces}: the same, through its per-namespace sockets;
  - C{upstream}: upstream's C{neutron-metadata-agent} (L{bench.upstream}: its own code,
    with only the port lookup RPC answered from the same table; with C{--lookup rpc},
    unpatched, over its own RPC client to the same fake neutron-server), shared socket
    only;
  - C{metaproxy-haproxy}, C{upstream-haproxy}: the same agent on its shared socket, behind
    real haproxy in network namespaces, the instances connecting from their own
    namespaces (L{bench.load.nstarget}; root, ip, iptables, haproxy). haproxy retries a
    refused connection (C{retries 3}), as it would in front of upstream on a node.

Agents may be of the same kind (an agent is started per side: an A/A run shows the noise).
Results are kept per round and added up per agent (L{bench.load.report.merge_results}:
requests and errors summed, latencies pooled), then printed side by side with the ratio
B / A (and C / A) of every figure and which agent is better on it
(L{bench.load.report.compare_markdown}).
Written: C{<out>/<stamp>-compare.json} (format L{FORMAT}: every round's full result, the
aggregates, the ratios), C{<stamp>-compare.md}, C{<stamp>-compare.png} (with matplotlib)
and C{<out>/latest-compare.md}.

Exit status: 0 when every metaproxy agent's request was right (with C{--wrong-secret}:
every one an error C{status 403}); upstream's errors are results, not failures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from bench.load.fleet import Fleet
from bench.load.plots import MATPLOTLIB_MISSING, matplotlib_available, plot_results
from bench.load.procstat import tree_cpu_seconds
from bench.load.report import StormResult, compare_markdown, compare_rows, merge_results
from bench.load.storm import StormConfig, run_storm
from bench.load.targets import NamespaceSockets, SharedSocket, Target
from bench.lookups import RunningLookup, start_lookup
from bench.options import fleet_and_config
from bench.processes import Process
from bench.stack import new_run_dir, sigterm_interrupts, start_metaproxy, start_nova

__all__ = [
    "AGENTS",
    "FORMAT",
    "RunningAgent",
    "Comparison",
    "start_named_agent",
    "run_compare",
    "wait_idle",
    "add_compare_options",
    "compare_main",
]

FORMAT = "metaproxy-bench-compare/1"
#: The sides, in the order of the rounds: A (the reference of the ratios), B, C.
SIDES = ("a", "b", "c")

#: Agent name to what it is.
AGENTS = {
    "metaproxy": "metaproxy (twistd metaproxy), Neutron's shared socket",
    "metaproxy-namespaces": "metaproxy (twistd metaproxy), its per-namespace sockets",
    "upstream": "upstream's neutron-metadata-agent, shared socket (its only kind)",
    "metaproxy-haproxy": "metaproxy behind real haproxy in network namespaces, shared socket",
    "upstream-haproxy": "upstream behind real haproxy in network namespaces, shared socket",
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
    front: Any = None  # bench.load.nstarget.HaproxyFront, for the -haproxy agents

    def stop(self) -> None:
        if self.front is not None:
            self.front.stop()
        self.process.stop()

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
    if name in ("metaproxy", "metaproxy-namespaces"):
        process, shared, ns_dir = start_metaproxy(
            fleet, table, run_dir, nova_port=nova_port, secret=secret, lookup=lookup
        )
        target: Target = SharedSocket(shared) if name == "metaproxy" else NamespaceSockets(ns_dir)
        return RunningAgent(name, label, AGENTS[name], process, target, run_dir)
    if name == "upstream":
        from bench import upstream

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


@attrs.define
class Round:
    number: int  # 1-based, per agent
    side: str  # "a" or "b"
    result: StormResult
    drain_seconds: float
    drained: bool


@attrs.define
class Comparison:
    """A finished comparison: the agents (A, the reference of the ratios, then B and
    maybe C), every round in the order run."""

    agents: list[RunningAgent]
    rounds: list[Round]
    settings: dict[str, Any]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    command: str = ""

    @property
    def sides(self) -> list[str]:
        return [SIDES[i] for i in range(len(self.agents))]

    def agent(self, side: str) -> RunningAgent:
        return self.agents[SIDES.index(side)]

    def results(self, side: str) -> list[StormResult]:
        return [r.result for r in self.rounds if r.side == side]

    def aggregate(self, side: str) -> StormResult:
        rounds = [r for r in self.rounds if r.side == side]
        result = merge_results([r.result for r in rounds], [f"round {r.number}" for r in rounds])
        notes = list(result.notes)
        notes += [
            f"round {r.number}: the agent was still busy {r.drain_seconds:.0f} s after "
            "the storm (it kept serving connections the generator had given up on)"
            for r in rounds
            if not r.drained
        ]
        return attrs.evolve(result, notes=notes)

    @property
    def order(self) -> list[str]:
        return [f"{r.side.upper()}{r.number}" for r in self.rounds]

    def metaproxy_failures(self, wrong_secret: bool) -> list[str]:
        """Why the run failed, per metaproxy agent; empty when every request was right
        (with C{wrong_secret}: every one a C{status 403})."""
        failures = []
        for side in self.sides:
            agent = self.agent(side)
            if not agent.is_metaproxy():
                continue
            result = self.aggregate(side)
            if wrong_secret:
                if result.good or result.errors != {"status 403": result.requests}:
                    failures.append(
                        f"{agent.label}: with the wrong secret every request must "
                        f"be an error 'status 403'; got {result.good} good and "
                        f"{result.errors}"
                    )
            elif result.error_count or result.boots_failed:
                failures.append(
                    f"{agent.label}: {result.error_count} errors "
                    f"({result.errors}), {result.boots_failed} boots failed"
                )
        return failures

    # ---- output

    def rounds_markdown(self) -> str:
        lines = [
            "| round | agent | requests | duration (s) | requests/s | good | errors "
            "| refused | non-CRLF | latency p50 / p99 (ms) | boot time p50 / p99 (s) "
            "| agent CPU per request (µs) | host CPU busy | idle after (s) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.rounds:
            res = r.result
            lat, boot = res.latency(), res.boot_time()
            per = res.agent_cpu_per_request
            lines.append(
                f"| {r.side.upper()}{r.number} | {self.agent(r.side).label} "
                f"| {res.requests:,} | {res.duration:.2f} | {res.rps:,.0f} | {res.good:,} "
                f"| {res.error_count:,} | {res.refused:,} | {res.nonstandard_count:,} "
                f"| {_ms(lat['p50'])} / {_ms(lat['p99'])} "
                f"| {_s(boot['p50'])} / {_s(boot['p99'])} "
                f"| {'-' if per is None else f'{per * 1e6:,.0f}'} "
                f"| {res.host.get('busy', 0):.0%} "
                f"| {r.drain_seconds:.1f}{'' if r.drained else ' (still busy)'} |"
            )
        return "\n".join(lines) + "\n"

    def ratio_markdown(self, side: str = "b") -> str:
        """The side-by-side table of A and C{side}, with the ratios C{side} / A."""
        a = self.agent("a")
        return compare_markdown(
            self.aggregate("a"), self.aggregate(side), a.label, self.agent(side).label
        )

    def to_markdown(self, stamp: str = "") -> str:
        s = self.settings
        load = "{:.2f} {:.2f} {:.2f}"
        per_agent = "one storm per agent" if s["rounds"] == 1 else f"{s['rounds']} storms per agent"
        names = [f"{self.agent(side).label} ({side.upper()})" for side in self.sides]
        parts = [
            f"# Side by side: {', '.join(names[:-1])} and {names[-1]}"
            + (f", {stamp}" if stamp else ""),
            "",
            f"`{self.command}`" if self.command else "",
            "",
        ]
        parts += [
            f"- {side.upper()}: **{self.agent(side).label}**: {self.agent(side).description}"
            for side in self.sides
        ]
        parts += [
            f"- storm: {s['fleet']}; {s['concurrency']} concurrent boots, ramp {s['ramp']:g} s, "
            f"keep-alive {'on' if s['keepalive'] else 'off'}, {s['workers']} generator "
            f"processes, request timeout {s['request_timeout']:g} s"
            + (", **agents given the wrong secret**" if s.get("wrong_secret") else ""),
            f"- one fake Nova for all (delay {s['nova_delay']:g} s), each agent started "
            f"once; {per_agent}, in the order {', '.join(self.order)}",
            f"- host: {os.cpu_count()} CPUs, load average (1, 5, 15 min) "
            f"{load.format(*self.load_before)} before, {load.format(*self.load_after)} after",
            "",
        ]
        for side in self.sides[1:]:
            parts += [
                f"## {side.upper()} / A, all rounds",
                "",
                f"{side.upper()} / A above 1 means {side.upper()} has more of the figure; the "
                "last column names the agent that is better on it. Refused connections are "
                "among the errors and also counted on their own.",
                "",
                self.ratio_markdown(side),
            ]
        parts += ["## Rounds", "", self.rounds_markdown()]
        for side in self.sides:
            parts += [
                f"## {side.upper()}: {self.agent(side).label}, all rounds",
                "",
                self.aggregate(side).to_markdown(),
            ]
        return "\n".join(parts)

    def to_json(self) -> str:
        def agent(side: str) -> dict[str, Any]:
            a = self.agent(side)
            return {
                "name": a.name,
                "label": a.label,
                "description": a.description,
                "target": a.target.describe(),
                "pid": a.process.pid,
            }

        aggregates = {side: self.aggregate(side) for side in self.sides}
        document = {
            "format": FORMAT,
            "command": self.command,
            "settings": self.settings,
            "agents": {side: agent(side) for side in self.sides},
            "order": self.order,
            "host": {
                "cpus": os.cpu_count(),
                "load_before": self.load_before,
                "load_after": self.load_after,
                "kernel": platform.release(),
                "python": platform.python_version(),
            },
            "rounds": [
                {
                    "round": r.number,
                    "side": r.side,
                    "agent": self.agent(r.side).label,
                    "drain_seconds": round(r.drain_seconds, 3),
                    "drained": r.drained,
                    "result": json.loads(r.result.to_json()),
                }
                for r in self.rounds
            ],
            "aggregate": {
                side: json.loads(result.to_json()) for side, result in aggregates.items()
            },
            # per side but A: that side / A
            "ratios": {
                side: [
                    {k: v for k, v in row.items() if not k.endswith("_text")}
                    for row in compare_rows(
                        aggregates["a"],
                        aggregates[side],
                        self.agent("a").label,
                        self.agent(side).label,
                    )
                ]
                for side in self.sides[1:]
            },
        }
        return json.dumps(document, indent=1)

    def write(self, out: Path, stamp: str) -> list[Path]:
        """C{<out>/<stamp>-compare.json/.md/.png} and C{<out>/latest-compare.md}."""
        out.mkdir(parents=True, exist_ok=True)
        base = out / f"{stamp}-compare"
        markdown = self.to_markdown(stamp)
        written = [Path(f"{base}.json"), Path(f"{base}.md")]
        written[0].write_text(self.to_json())
        written[1].write_text(markdown)
        aggregates = [
            attrs.evolve(self.aggregate(side), label=self.agent(side).label) for side in self.sides
        ]
        if plot_results(aggregates, f"{base}.png"):
            written.append(Path(f"{base}.png"))
        latest = out / "latest-compare.md"
        latest.write_text(markdown)
        written.append(latest)
        return written


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
                    fleet,
                    [agent.process.pid],
                    target=agent.target,
                    nova_pids=[nova.pid],
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


# ---- command line


def add_compare_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("comparison")
    group.add_argument(
        "--a",
        default="metaproxy",
        choices=sorted(AGENTS),
        help="agent A, the reference of the ratios (default %(default)s)",
    )
    group.add_argument(
        "--b", default="upstream", choices=sorted(AGENTS), help="agent B (default %(default)s)"
    )
    group.add_argument(
        "--c",
        default=None,
        choices=sorted(AGENTS),
        help="a third agent, compared with A as B is (default: none)",
    )
    group.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="storms per agent, alternating A, B, A, B (default %(default)s)",
    )
    group.add_argument(
        "--upstream-workers",
        type=int,
        default=None,
        metavar="N",
        help="upstream's metadata_workers (default: upstream's own default, CPUs // 2)",
    )


def compare_main(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """C{python -m bench compare}, with the arguments parsed by L{bench.__main__}."""
    if args.rounds < 1:
        print("--rounds must be at least 1", file=sys.stderr)
        return 2
    made = fleet_and_config(args, "compare")
    if made is None:
        return 2
    fleet, config = made
    if any(name and name.endswith(HAPROXY_SUFFIX) for name in (args.a, args.b, args.c)):
        from bench.load.nstarget import missing_line

        missing = missing_line()
        if missing:
            print(
                f"bench compare: {missing.replace('--target haproxy', 'a -haproxy agent')}",
                file=sys.stderr,
            )
            return 2
    secret = args.secret
    agent_secret = secret + "-but-wrong" if args.wrong_secret else None
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    command = "python -m bench " + " ".join(argv)
    third = f" and {args.c} (C)" if args.c else ""
    print(
        f"compare: {args.a} (A), {args.b} (B){third}; {fleet.describe()}; "
        f"{config.concurrency} concurrent boots; {args.rounds} storm"
        f"{'s' if args.rounds > 1 else ''} per agent, alternating",
        file=sys.stderr,
    )
    try:
        with sigterm_interrupts():  # SIGTERM cleans up as Ctrl-C does (namespaces too)
            comparison = run_compare(
                fleet,
                config,
                args.a,
                args.b,
                args.c,
                rounds=args.rounds,
                secret=secret,
                agent_secret=agent_secret,
                nova_delay=args.nova_delay,
                upstream_workers=args.upstream_workers,
                keep=args.keep,
                command=command,
                lookup=args.lookup,
            )
    except KeyboardInterrupt:
        print("bench compare: interrupted; what it started is stopped and removed", file=sys.stderr)
        return 130
    written = comparison.write(args.out, stamp)
    print(comparison.to_markdown(stamp))
    if not matplotlib_available():
        print(MATPLOTLIB_MISSING, file=sys.stderr)
    print("written: " + ", ".join(str(p) for p in written), file=sys.stderr)
    failures = comparison.metaproxy_failures(args.wrong_secret)
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f}"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"
