# -*- test-case-name: tests.bench.load.test_report -*-
"""Storm results as a PNG: the latency CDF and the boot-time histogram
(L{plot_results}). matplotlib is an optional extra: without it nothing is written and
L{MATPLOTLIB_MISSING} says so."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Protocol


class Plotted(Protocol):
    """What a plot reads of a result (L{bench.load.report.StormResult} has it): plots
    know results by this shape only, so the report can import the plots."""

    label: str
    target: str
    latencies: Sequence[float]
    boot_times: Sequence[float]


__all__ = ["MATPLOTLIB_MISSING", "matplotlib_available", "plot_results"]

MATPLOTLIB_MISSING = (
    "matplotlib is not installed: no PNG plot "
    "(install it in the venv: .venv/bin/pip install matplotlib)"
)


def matplotlib_available() -> bool:
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return False
    return True


def plot_results(results: Sequence[Plotted], path: str) -> bool:
    """One PNG for one or more results: latency CDF (log time axis) on the left, boot-time
    histogram on the right. C{False} (nothing written) when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (cdf, hist) = plt.subplots(1, 2, figsize=(12, 4.5))
    every_boot = [t for result in results for t in result.boot_times]
    bins: Any = 10
    if every_boot:  # the same bins for every result, so histograms compare
        low, high = min(every_boot), max(every_boot)
        count = min(50, max(5, len(every_boot) // (10 * len(results))))
        bins = [low + (high - low) * i / count for i in range(count + 1)] if high > low else 5
    try:
        for result in results:
            name = f"{result.label}, {result.target}"
            latencies = sorted(v * 1000 for v in result.latencies)
            if latencies:
                n = len(latencies)
                cdf.step(latencies, [(i + 1) / n for i in range(n)], where="post", label=name)
            if result.boot_times:
                hist.hist(
                    result.boot_times, bins=bins, alpha=0.6 if len(results) > 1 else 1.0, label=name
                )
        cdf.set_xscale("log")
        cdf.set_xlabel("request latency (ms, log scale)")
        cdf.set_ylabel("share of requests")
        cdf.set_title("latency CDF")
        cdf.grid(True, which="both", alpha=0.3)
        hist.set_xlabel("boot completion time (s)")
        hist.set_ylabel("boots")
        hist.set_title("boot time")
        hist.grid(True, alpha=0.3)
        for axes in (cdf, hist):
            if axes.get_legend_handles_labels()[0]:
                axes.legend(fontsize="small")
        s = results[0].settings
        figure.suptitle(
            f"{s.get('fleet', '')}; {s.get('concurrency')} concurrent boots", fontsize="medium"
        )
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return True
