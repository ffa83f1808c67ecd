# -*- test-case-name: tests.integration.test_compare -*-
"""A finished comparison (L{Comparison}): the agents, every round in the order run, and
its output: the Markdown tables, the JSON document (format L{FORMAT}) and the files."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import attrs

from bench.compare.agents import RunningAgent
from bench.compare.ratios import compare_markdown, compare_rows, merge_results
from bench.load.plots import plot_results
from bench.load.report import StormResult

__all__ = ["FORMAT", "SIDES", "Round", "Comparison"]

FORMAT = "metaproxy-bench-compare/1"
#: The sides, in the order of the rounds: A (the reference of the ratios), B, C.
SIDES = ("a", "b", "c")


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


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f}"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"
