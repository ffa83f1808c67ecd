"""Many clients of one 3-member Southbound cluster, and a member restarted: where and
when do its clients reconnect?

    python -m bench.scale.ovsdb_storm [--clients 200] [--ports 200] [--down 3]
                                      [--start-over 2] [--seed N]

A 3-member clustered Southbound database (L{bench.fakes.ovnsb_cluster}) with C{--ports}
bound ports; C{--clients} L{OvsdbMonitor}s in this process, each with its own
connection and monitor of the OVN backend's tables, as that many agents would have,
started one after the other over C{--start-over} seconds. Once all are synchronised,
the member with the most clients is stopped, and started again C{--down} seconds
later. Two runs, one per mode:

  - C{before}: the remotes in the configured order and a wait of 80-100 % of the
    backoff (what the client did before it shuffled and jittered);
  - C{now}: each client's own order of the remotes and a wait of 50-100 % of the
    backoff (L{metaproxy.ovsdb.members}).

Reported per mode: clients per member before and after; for the clients of the
stopped member, the member each reconnected to and a histogram of the time from the
stop to their synchronisation (100 ms bins); the connection attempts each member saw
from the stop until all were synchronised again.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher

from bench.fakes.ovnsb_cluster import SbCluster
from bench.options import RESULTS
from bench.scale.onreactor import run_once, until
from bench.scale.output import markdown_table, publish
from bench.scale.sbfixture import cannot_run, private_cluster
from bench.scale.southbound import load_fleet
from metaproxy.ovsdb.monitor import OvsdbMonitor
from metaproxy.ovsdb.remote import parse_remotes
from metaproxy.resolve.ovn import DATABASE, SB_COLUMNS, SB_CONDITIONS

__all__ = ["main", "storm"]

BIN = 0.1


class _BeforeJitter(random.Random):
    """The backoff as it was: 80-100 % of the wait."""

    def uniform(self, a: float, b: float) -> float:
        return super().uniform(0.8 * b, b)


async def storm(
    reactor: Any,
    cluster: SbCluster,
    clients: int,
    down: float,
    mode: str,
    seed: int | None = None,
    start_over: float = 2.0,
) -> dict[str, Any]:
    """One mode: C{clients} monitors synchronised, the busiest member stopped for
    C{down} s and started again; the figures (see the module docstring). C{seed}: the
    clients' random sources are C{Random(seed + n)} (None: from the system).
    C{start_over}: the clients start one after the other over that many seconds (agents
    do not start in the same millisecond; ovsdb-server listens with a backlog of 10,
    and connections beyond it wait for the kernel's SYN-ACK retransmissions)."""
    failures: Counter[str] = Counter()

    def observe(event: dict[str, Any]) -> None:
        if event.get("state") == "failed" and "why" in event:
            failures[str(event["why"])[:160]] += 1

    globalLogPublisher.addObserver(observe)
    try:
        return await _storm(reactor, cluster, clients, down, mode, seed, start_over, failures)
    finally:
        globalLogPublisher.removeObserver(observe)


async def _storm(
    reactor: Any,
    cluster: SbCluster,
    clients: int,
    down: float,
    mode: str,
    seed: int | None,
    start_over: float,
    failures: Counter[str],
) -> dict[str, Any]:
    remotes = parse_remotes(cluster.remotes())
    names = {str(r): f"m{i}" for i, r in enumerate(remotes)}
    synced: list[list[tuple[float, str]]] = [[] for _ in range(clients)]
    attempts: list[tuple[float, str]] = []
    monitors = []
    for n in range(clients):

        def on_sync(store: Any, n: int = n) -> None:
            synced[n].append((time.monotonic(), names[str(monitors[n].remote)]))

        monitor = OvsdbMonitor(
            reactor,
            remotes,
            DATABASE,
            SB_COLUMNS,
            conditions=SB_CONDITIONS,
            on_sync=on_sync,
            on_changes=lambda changes: None,
            timeout=30,
            probe_interval=0,
            retry_max_interval=8,
            shuffle=mode == "now",
            rng=(_BeforeJitter if mode == "before" else random.Random)(
                None if seed is None else seed + n
            ),
        )
        next_remote = monitor.members.next_remote

        def counted(next_remote: Any = next_remote) -> Any:
            remote = next_remote()
            attempts.append((time.monotonic(), names[str(remote)]))
            return remote

        monitor.members.next_remote = counted  # type: ignore[method-assign]
        monitors.append(monitor)
        reactor.callLater(start_over * n / clients, monitor.start)
    await until(reactor, lambda: all(m.synchronised for m in monitors), 120, interval=0.01)
    before = Counter(names[str(m.remote)] for m in monitors)
    start_refusals = Counter(
        f"{names[str(remote)]} {state}"
        for m in monitors
        for (remote, state), count in m.members.refusals.items()
        for _ in range(count)
    )
    victim_name, _ = before.most_common(1)[0]
    victim = int(victim_name[1:])
    moved = [n for n, m in enumerate(monitors) if names[str(m.remote)] == victim_name]
    stopped_at = time.monotonic()
    cluster.members[victim].stop()
    await deferLater(reactor, down, lambda: None)
    cluster.members[victim].restart()
    await until(reactor, lambda: all(m.synchronised for m in monitors), 120, interval=0.01)
    settled = time.monotonic()
    after = Counter(names[str(m.remote)] for m in monitors)
    went = Counter(synced[n][-1][1] for n in moved)
    delays = sorted(synced[n][-1][0] - stopped_at for n in moved)
    histogram = Counter(int(d / BIN) for d in delays)
    seen = Counter(name for at, name in attempts if at >= stopped_at)
    kinds = Counter()
    for n in moved:
        kinds.update(monitors[n].sync_kinds)
    for monitor in monitors:
        await monitor.stop()
    return {
        "mode": mode,
        "clients": clients,
        "stopped": victim_name,
        "down_seconds": down,
        "before": dict(sorted(before.items())),
        "refused_at_start": dict(sorted(start_refusals.items())),
        "failures_logged": dict(failures),
        "after": dict(sorted(after.items())),
        "moved": len(moved),
        "moved_to": dict(sorted(went.items())),
        "reconnect_seconds": {
            "first": delays[0],
            "median": delays[len(delays) // 2],
            "last": delays[-1],
        },
        "histogram_100ms": {f"{k * BIN:.1f}": v for k, v in sorted(histogram.items())},
        "attempts_after_stop": dict(sorted(seen.items())),
        "resumed_syncs": kinds["changes"],
        "settled_seconds": settled - stopped_at,
    }


def _spark(histogram: dict[str, int]) -> str:
    return ", ".join(f"{at} s: {count}" for at, count in histogram.items())


def storm_markdown(result: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = [
        ("clients / Port_Binding rows", f"{result['clients']} / {result['ports']}"),
    ]
    for run in result["runs"]:
        mode = run["mode"]
        rows += [
            (
                f"{mode}: clients per member before",
                f"{run['before']} (attempts refused at the start: "
                f"{run['refused_at_start'] or 'none'})",
            ),
            (
                f"{mode}: {run['stopped']} stopped for {run['down_seconds']:g} s",
                f"{run['moved']} clients moved to {run['moved_to']} "
                f"({run['resumed_syncs']} resumed with changes only)",
            ),
            (
                f"{mode}: their reconnects, s after the stop",
                "first {first:.2f}, median {median:.2f}, last {last:.2f}".format(
                    **run["reconnect_seconds"]
                ),
            ),
            (f"{mode}: histogram (100 ms bins)", _spark(run["histogram_100ms"])),
            (
                f"{mode}: connection attempts per member after the stop",
                str(run["attempts_after_stop"]),
            ),
            (f"{mode}: clients per member after", str(run["after"])),
        ]
    return markdown_table("OVSDB clients and a member restart", rows)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench.scale.ovsdb_storm")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--ports", type=int, default=200)
    parser.add_argument("--down", type=float, default=3.0)
    parser.add_argument("--modes", default="before,now")
    parser.add_argument("--seed", type=int, default=None, help="the clients' random sources")
    parser.add_argument(
        "--start-over", type=float, default=2.0, help="seconds over which the clients start"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if cannot_run():
        return 2
    result: dict[str, Any] = {
        "check": "ovsdb-storm",
        "clients": args.clients,
        "ports": args.ports,
        "runs": [],
    }
    with private_cluster("mp-ovsdb-storm-", size=3) as (_, cluster):
        load_fleet(cluster, args.ports, max(1, args.ports // 20))

        async def run(reactor: Any) -> None:
            for mode in args.modes.split(","):
                result["runs"].append(
                    await storm(
                        reactor,
                        cluster,
                        args.clients,
                        args.down,
                        mode,
                        args.seed,
                        args.start_over,
                    )
                )
                for i in range(len(cluster.members)):
                    await until(reactor, lambda i=i: cluster.connected(i), 30, interval=0.01)

        run_once(run)
    markdown = storm_markdown(result)
    publish(result, markdown, args.out, parser.prog, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
