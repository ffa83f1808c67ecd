# -*- test-case-name: tests.bench.compare.test_ratios -*-
"""Storm results compared and added up: L{compare_rows} and L{compare_markdown} put two
results side by side with the ratio B / A of every figure and which of the two is better
on it (C{bench compare} uses them for metaproxy against the upstream agent);
L{merge_results} adds up the rounds of one agent."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench.load.report import HIGHER, LOWER, NEUTRAL, StormResult, markdown_cell

__all__ = ["compare_rows", "compare_markdown", "merge_results"]


def compare_rows(
    a: StormResult, b: StormResult, label_a: str, label_b: str
) -> list[dict[str, Any]]:
    """Every comparison figure of two results: C{figure}, C{a}, C{b} (values), C{ratio}
    (B / A; None when A is zero or a figure is missing), C{direction} (C{"higher"},
    C{"lower"} or C{None}: which way is better) and C{better} (the label of the better
    result, C{"same"} when equal, None for a neutral figure)."""
    rows = []
    for (name, va, fmt, direction), (_, vb, _, _) in zip(a.figures(), b.figures(), strict=False):
        ratio = None if va is None or vb is None or va == 0 else vb / va
        better: str | None = None
        if direction != NEUTRAL and va is not None and vb is not None:
            if va == vb or fmt(va) == fmt(vb):  # equal as shown
                better = "same"
            else:
                better = label_b if (vb > va) == (direction == HIGHER) else label_a
        rows.append(
            {
                "figure": name,
                "a": va,
                "b": vb,
                "ratio": ratio,
                "direction": {HIGHER: "higher", LOWER: "lower"}.get(direction),
                "better": better,
                "a_text": fmt(va),
                "b_text": fmt(vb),
            }
        )
    return rows


def compare_markdown(a: StormResult, b: StormResult, label_a: str, label_b: str) -> str:
    """A side-by-side table of two results with the ratio B / A of every figure (C{-}
    when A is zero or a figure is missing) and, in the last column, which is better on
    it and why (C{higher}/C{lower} is better); a blank for figures that are context."""
    lines = [
        f"| figure | {markdown_cell(label_a)} | {markdown_cell(label_b)} "
        f"| {markdown_cell(label_b)} / {markdown_cell(label_a)} | better |",
        "|---|---:|---:|---:|---|",
    ]
    for row in compare_rows(a, b, label_a, label_b):
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        if row["better"] is None:
            better = ""
        elif row["better"] == "same":
            better = "same"
        else:
            better = f"{markdown_cell(row['better'])} ({row['direction']} is better)"
        lines.append(
            f"| {row['figure']} | {row['a_text']} | {row['b_text']} | {ratio} | {better} |"
        )
    notes = [f"{label}: {note}" for label, r in ((label_a, a), (label_b, b)) for note in r.notes]
    if notes:
        lines.append("")
        lines += [f"- {markdown_cell(note)}" for note in notes]
    return "\n".join(lines) + "\n"


def merge_results(
    results: Sequence[StormResult], names: Sequence[str] | None = None
) -> StormResult:
    """One result for several storms of one agent (the rounds of C{bench compare}):
    counts, durations, CPU seconds and Nova's counters are summed (so rates are over the
    summed durations), latencies and boot times pooled, peak memory is the largest,
    host CPU busy is weighted by duration. C{settings} are the first storm's, with
    C{rounds}; notes are kept, prefixed with C{names} (default C{round 1}, ...)."""
    if not results:
        raise ValueError("nothing to merge")
    names = list(names) if names is not None else [f"round {i + 1}" for i in range(len(results))]
    first = results[0]
    duration = sum(r.duration for r in results)

    def total(get: Callable[[StormResult], Any]) -> Any:
        values = [get(r) for r in results]
        return None if any(v is None for v in values) else sum(values)

    def counters(get: Callable[[StormResult], dict[str, int] | None]) -> dict[str, int]:
        merged: dict[str, int] = {}
        for r in results:
            for key, value in (get(r) or {}).items():
                merged[key] = merged.get(key, 0) + value
        return merged

    worker_cpu = [
        sum(values)
        for values in zip(*(r.generator.get("cpu_seconds") or [] for r in results), strict=False)
    ]
    generator = {
        "workers": first.generator.get("workers"),
        "cpu_seconds": [round(v, 6) for v in worker_cpu],
        "busy": [round(v / duration, 3) if duration > 0 else 0.0 for v in worker_cpu],
        "collector_cpu_seconds": round(
            sum(r.generator.get("collector_cpu_seconds", 0.0) for r in results), 3
        ),
    }
    agent_cpu = total(lambda r: r.agent.get("cpu_seconds"))
    peaks = [r.agent.get("peak_rss_bytes") for r in results]
    hwms = [r.agent.get("peak_hwm_bytes") for r in results]
    agent = {
        "pids": first.agent.get("pids"),
        "processes": max(r.agent.get("processes") or 0 for r in results),
        "cpu_seconds": None if agent_cpu is None else round(agent_cpu, 6),
        "peak_rss_bytes": max((p for p in peaks if p is not None), default=None),
        "peak_hwm_bytes": max((h for h in hwms if h is not None), default=None),
    }
    nova = None
    if all(r.nova is not None for r in results):
        nova_cpu = total(lambda r: (r.nova or {}).get("cpu_seconds"))
        nova = {
            "total": sum((r.nova or {}).get("total", 0) for r in results),
            "by_status": counters(lambda r: (r.nova or {}).get("by_status")),
            "by_outcome": counters(lambda r: (r.nova or {}).get("by_outcome")),
            "cpu_seconds": None if nova_cpu is None else round(nova_cpu, 6),
        }
    proxies = None
    if all(r.proxies is not None for r in results):
        proxy_cpu = total(lambda r: (r.proxies or {}).get("cpu_seconds"))
        proxy_peaks = [(r.proxies or {}).get("peak_rss_bytes") for r in results]
        proxies = {
            **(first.proxies or {}),
            "cpu_seconds": None if proxy_cpu is None else round(proxy_cpu, 6),
            "peak_rss_bytes": max((p for p in proxy_peaks if p is not None), default=None),
        }
    busy = (
        sum(r.host.get("busy", 0.0) * r.duration for r in results) / duration
        if duration > 0
        else 0.0
    )
    return StormResult(
        label=first.label,
        target=first.target,
        settings={**first.settings, "rounds": len(results)},
        started=first.started,
        duration=round(duration, 6),
        requests=sum(r.requests for r in results),
        good=sum(r.good for r in results),
        connections=sum(r.connections for r in results),
        errors=counters(lambda r: r.errors),
        boots=sum(r.boots for r in results),
        boots_completed=sum(r.boots_completed for r in results),
        boots_clean=sum(r.boots_clean for r in results),
        boot_failures=counters(lambda r: r.boot_failures),
        latencies=[v for r in results for v in r.latencies],
        boot_times=[v for r in results for v in r.boot_times],
        boot_lengths=[n for r in results for n in r.boot_lengths],
        generator=generator,
        agent=agent,
        nova=nova,
        host={"cpus": first.host.get("cpus"), "busy": round(busy, 3)},
        notes=[
            f"{name}: {note}" for name, r in zip(names, results, strict=False) for note in r.notes
        ],
        nonstandard=counters(lambda r: r.nonstandard),
        proxies=proxies,
    )
