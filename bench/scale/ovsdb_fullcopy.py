"""Where a full copy of a large Southbound spends the reactor's time, and the longest
single reactor turn (stall) while it arrives.

    python -m bench.scale.ovsdb_fullcopy [--ports 100000] [--networks 1000]

A one-member clustered Southbound is loaded with C{--ports} bound Port_Binding rows
over C{--networks} networks (L{bench.scale.southbound.load_fleet}). Then, in a process
of its own, the lookups' backend of proxy mode (L{metaproxy.resolve.ovn.OvnBackend})
connects and takes the full copy while:

  - a probe (a C{LoopingCall} every 10 ms) records how late each of its calls runs:
    the longest lateness is the longest time a request waiting on the reactor would
    have stalled;
  - the phases of the client are timed, each as its total and its longest single call:
    the framing (L{metaproxy.ovsdb.framing.JsonSplitter.feed}, called per chunk read),
    JSON decoding of each message (C{json.loads} in L{metaproxy.ovsdb.jsonrpc}), the
    rows applied to the store (C{RowStore.apply_update2}), the index built from them
    (C{OvnIndex.from_store}, or each slice of C{OvnIndex.fill} where the index is
    built in slices) and the rest of the C{on_sync} callback;
  - the garbage collector's collections of its oldest generation are counted and timed
    (they run inside whichever turn allocates), and the process's peak RSS is read.

The timing wrappers are installed by this bench only (the code measured is unchanged).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.task import LoopingCall, deferLater

from bench.options import RESULTS
from bench.scale.onreactor import run_once
from bench.scale.output import markdown_table, publish
from bench.scale.sbfixture import cannot_run, fleet_parser, private_cluster
from bench.scale.selfusage import peak_rss_mib
from bench.scale.southbound import load_fleet

__all__ = ["main", "PhaseTimer", "StallProbe"]

PROBE_INTERVAL = 0.010


class PhaseTimer:
    """Total and longest call of some functions, by phase name."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.longest: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                self.total[name] = self.total.get(name, 0.0) + spent
                self.longest[name] = max(self.longest.get(name, 0.0), spent)
                self.calls[name] = self.calls.get(name, 0) + 1

        return timed

    def wrap_steps(self, name: str, steps: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
        """C{steps} returns an iterator run a step at a time: time each step."""

        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            iterator = steps(*args, **kwargs)
            step = self.wrap(name, iterator.__next__)
            while True:
                try:
                    value = step()
                except StopIteration:
                    return
                yield value

        return timed

    def figures(self) -> dict[str, dict[str, float]]:
        return {
            name: {
                "total_s": self.total[name],
                "longest_s": self.longest[name],
                "calls": self.calls[name],
            }
            for name in self.total
        }


class StallProbe:
    """A C{LoopingCall} every C{interval} seconds that records how late it runs."""

    def __init__(self, reactor: Any, interval: float = PROBE_INTERVAL) -> None:
        self._interval = interval
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor
        self._last = 0.0
        self.longest = 0.0
        self.over_50ms = 0

    def start(self) -> None:
        self._last = time.perf_counter()
        self._loop.start(self._interval, now=False)

    def stop(self) -> None:
        self._loop.stop()

    def _tick(self) -> None:
        now = time.perf_counter()
        late = now - self._last - self._interval
        self._last = now
        self.longest = max(self.longest, late)
        if late > 0.050:
            self.over_50ms += 1


class GcPauses:
    """The cyclic garbage collector's collections of the oldest generation: how many,
    and the longest (they fall inside whatever turn allocates at the time)."""

    def __init__(self) -> None:
        self.count = 0
        self.longest = 0.0
        self.total = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._start = time.perf_counter()
            return
        spent = time.perf_counter() - self._start
        self.count += 1
        self.total += spent
        self.longest = max(self.longest, spent)

    def figures(self) -> dict[str, Any]:
        return {"count": self.count, "total_s": self.total, "longest_s": self.longest}


def _instrument(timer: PhaseTimer) -> None:
    import metaproxy.ovsdb.jsonrpc as jsonrpc
    from metaproxy.ovsdb.data import RowStore
    from metaproxy.ovsdb.framing import JsonSplitter
    from metaproxy.resolve.ovn import OvnBackend, OvnIndex

    JsonSplitter.feed = timer.wrap("framing (JsonSplitter.feed)", JsonSplitter.feed)
    decoder = timer.wrap("json.loads", json.loads)

    class _TimedJson:
        loads = staticmethod(decoder)
        dumps = staticmethod(json.dumps)

    jsonrpc.json = _TimedJson  # type: ignore[assignment]
    RowStore.apply_update2 = timer.wrap("RowStore.apply_update2", RowStore.apply_update2)
    OvnIndex.from_store = classmethod(  # type: ignore[method-assign]
        timer.wrap("OvnIndex.from_store", OvnIndex.from_store.__func__)
    )
    if hasattr(OvnIndex, "fill"):  # the index built in slices: each slice
        OvnIndex.fill = timer.wrap_steps("OvnIndex.fill (a slice)", OvnIndex.fill)
    OvnBackend._synchronised = timer.wrap(
        "on_sync (OvnBackend._synchronised, all of it)", OvnBackend._synchronised
    )


#: what the reactor is given to do after the copy, each 5 ms: young objects as a storm's
#: requests make them (dicts dropped at once), for as long as AFTER_SECONDS
AFTER_OBJECTS, AFTER_SECONDS = 2000, 2.0


async def _serving_after(reactor: Any) -> dict[str, Any]:
    """The AFTER_SECONDS after the copy, allocating as serving does: the collector's
    full collections then (one held off during the copy, say) and the longest stall."""
    probe = StallProbe(reactor)
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    probe.start()
    try:
        end = time.monotonic() + AFTER_SECONDS
        while time.monotonic() < end:
            [{"n": n} for n in range(AFTER_OBJECTS)]
            await deferLater(reactor, 0.005, lambda: None)
        await deferLater(reactor, 5 * PROBE_INTERVAL, lambda: None)
    finally:
        probe.stop()
        gc.callbacks.remove(pauses)
    return {
        "seconds": AFTER_SECONDS,
        "longest_stall_s": probe.longest,
        "gc_oldest": pauses.figures(),
    }


def measure(remote: str) -> dict[str, Any]:
    """In this process: the proxy-mode backend takes a full copy; its figures."""
    from metaproxy.ovsdb.remote import parse_remotes
    from metaproxy.resolve.ovn import OvnBackend

    timer = PhaseTimer()
    _instrument(timer)
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    out: dict[str, Any] = {}

    async def run(reactor: Any) -> None:
        probe = StallProbe(reactor)
        probe.start()
        cpu = time.process_time()
        start = time.monotonic()
        backend = OvnBackend(reactor, parse_remotes(remote), timeout=300, probe_interval=0)
        backend.start()
        while not backend.ready():
            await deferLater(reactor, 0.005, lambda: None)
        out["seconds"] = time.monotonic() - start
        out["cpu_seconds"] = time.process_time() - cpu
        # the turn that made it ready may be the longest: let the probe see its end
        await deferLater(reactor, 5 * PROBE_INTERVAL, lambda: None)
        probe.stop()
        out["longest_stall_s"] = probe.longest
        out["stalls_over_50ms"] = probe.over_50ms
        out["bound_ports"] = backend.index.bound_ports
        out["phases"] = timer.figures()
        out["gc_oldest"] = pauses.figures()
        gc.callbacks.remove(pauses)
        out["after"] = await _serving_after(reactor)
        # the process's peak resident set: the reply, the store and the index together
        out["max_rss_mib"] = peak_rss_mib()
        await backend.stop()

    run_once(run)
    return out


def fullcopy_markdown(result: dict[str, Any]) -> str:
    m = result["measured"]
    rows = [
        ("Port_Binding rows / networks", f"{result['ports']:,} / {result['networks']:,}"),
        ("bound ports after the copy", f"{m['bound_ports']:,}"),
        ("start to lookups answered", f"{m['seconds']:.2f} s (CPU {m['cpu_seconds']:.2f} s)"),
        (
            "longest reactor stall (10 ms probe's lateness)",
            f"{m['longest_stall_s'] * 1000:.0f} ms ({m['stalls_over_50ms']} over 50 ms)",
        ),
    ]
    if "max_rss_mib" in m:
        rows.append(("peak RSS of the process taking the copy", f"{m['max_rss_mib']:,.0f} MiB"))
    gc_oldest = m.get("gc_oldest")
    if gc_oldest:
        rows.append(
            (
                "garbage collections of the oldest generation (inside the phases)",
                f"{gc_oldest['count']}, {gc_oldest['total_s']:.2f} s, longest "
                f"{gc_oldest['longest_s'] * 1000:.0f} ms",
            )
        )
    after = m.get("after")
    if after:
        gc_after = after["gc_oldest"]
        rows.append(
            (
                f"then {after['seconds']:g} s of allocating as serving does: longest stall; "
                "oldest-generation collections",
                f"{after['longest_stall_s'] * 1000:.0f} ms; {gc_after['count']}, "
                f"{gc_after['total_s']:.2f} s, longest {gc_after['longest_s'] * 1000:.0f} ms",
            )
        )
    for name, figures in m["phases"].items():
        rows.append(
            (
                name,
                f"{figures['total_s']:.2f} s in {figures['calls']:,} calls, "
                f"longest {figures['longest_s'] * 1000:.0f} ms",
            )
        )
    return markdown_table("OVN Southbound: a full copy's reactor time", rows)


PROG = "python -m bench.scale.ovsdb_fullcopy"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = fleet_parser(PROG)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--remote", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.remote)), flush=True)
        return 0
    if cannot_run():
        return 2
    result: dict[str, Any] = {"check": "ovsdb-fullcopy", "ports": args.ports}
    result["networks"] = args.networks
    with private_cluster("mp-ovsdb-fullcopy-", size=1) as (_, cluster):
        result["load_seconds"] = load_fleet(cluster, args.ports, args.networks)["seconds"]
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.scale.ovsdb_fullcopy",
                "--measure",
                "--remote",
                cluster.remotes(),
            ],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        result["measured"] = json.loads(child.stdout.strip().splitlines()[-1])
    publish(result, fullcopy_markdown(result), args.out, PROG, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
