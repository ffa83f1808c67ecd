"""The chassis-local replica against the full one, on the same large Southbound.

    python -m bench.scale.ovsdb_local [--ports 100000] [--networks 1000] [--local 50]

A one-member clustered Southbound is loaded with C{--ports} bound Port_Binding rows
over C{--networks} networks (L{bench.scale.southbound.load_fleet}), one metadata
localport per network, and a second chassis, C{local-chassis}, to which C{--local}
ports (spread over the networks) are bound. Then, each in a process of its own (so
that its RSS is its own): the lookups' backend of proxy mode (the full replica) and
of the chassis mode for C{local-chassis} (the chassis-local replica) connect and
synchronise. Reported per mode: replica rows, the seconds from start to answering,
the process's RSS after it (and its peak), and for the local replica the seconds from
binding one more port to this chassis to its being answered.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.task import deferLater

from bench.options import RESULTS
from bench.scale.child import measure_in_child, ready_then_wait, send_figures
from bench.scale.onreactor import run_once
from bench.scale.output import markdown_table, publish
from bench.scale.sbfixture import cannot_run, fleet_parser, private_cluster
from bench.scale.selfusage import peak_rss_mib, rss_mib
from bench.scale.southbound import LOCAL_CHASSIS, add_local_chassis, churn, load_fleet

__all__ = ["main"]


def measure(remote: str, mode: str) -> dict[str, Any]:
    """In this process: one backend synchronises; its figures."""
    from metaproxy.ovsdb.remote import parse_remotes
    from metaproxy.resolve.ovn import OvnBackend

    out: dict[str, Any] = {"rss_before_mib": rss_mib()}

    async def run(reactor: Any) -> None:
        start = time.monotonic()
        backend = OvnBackend(
            reactor,
            parse_remotes(remote),
            timeout=300,
            probe_interval=0,
            chassis=LOCAL_CHASSIS if mode == "local" else "",
        )
        backend.start()
        while not backend.ready() or (
            backend.scope is not None
            and backend.monitor.conditions != backend.monitor._acked_conditions
        ):
            await deferLater(reactor, 0.005, lambda: None)
        # the local replica is complete once its conditions are acknowledged
        out["seconds"] = time.monotonic() - start
        store = backend.monitor._store
        out["rows"] = {table: len(rows) for table, rows in store.tables.items()}
        out["bound_ports"] = backend.index.bound_ports
        out["rss_mib"] = rss_mib()
        out["peak_rss_mib"] = peak_rss_mib()
        if mode == "local":
            # one more port bound here: seconds until it is answered
            ready_then_wait()  # the parent binds it
            bound = time.monotonic()
            while backend.index.bound_ports <= out["bound_ports"]:
                await deferLater(reactor, 0.001, lambda: None)
            out["arrival_seconds"] = time.monotonic() - bound
        await backend.stop()

    run_once(run)
    return out


def _child(remote: str, mode: str, on_ready: Any = None) -> dict[str, Any]:
    return measure_in_child(
        "bench.scale.ovsdb_local",
        ["--measure", mode, "--remote", remote],
        on_ready=on_ready,
        what=f"the {mode} measurement",
    )


def local_markdown(result: dict[str, Any]) -> str:
    rows = [
        ("Port_Binding rows cloud-wide", f"{result['ports'] + result['networks']:,}"),
        ("bound here / networks", f"{result['bound_here']} / {result['networks']}"),
    ]
    for mode, label in (("full", "full replica (proxy mode)"), ("local", "chassis-local")):
        r = result[mode]
        rows += [
            (f"{label}: replica rows", f"{sum(r['rows'].values()):,} ({r['rows']})"),
            (f"{label}: initial sync", f"{r['seconds']:.2f} s"),
            (f"{label}: RSS after / peak", f"{r['rss_mib']:.0f} / {r['peak_rss_mib']:.0f} MiB"),
        ]
    rows.append(
        (
            "chassis-local: a port bound here answered after",
            f"{result['local']['arrival_seconds'] * 1000:.0f} ms",
        )
    )
    return markdown_table("OVN Southbound: chassis-local replica vs full replica", rows)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = fleet_parser("python -m bench.scale.ovsdb_local")
    parser.add_argument("--local", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--measure", choices=("full", "local"), help=argparse.SUPPRESS)
    parser.add_argument("--remote", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        send_figures(measure(args.remote, args.measure))
        return 0
    if cannot_run():
        return 2
    result: dict[str, Any] = {
        "check": "ovsdb-local",
        "ports": args.ports,
        "networks": args.networks,
        "bound_here": args.local,
    }
    with private_cluster("mp-ovsdb-local-", size=1) as (_, cluster):
        result["load_seconds"] = load_fleet(cluster, args.ports, args.networks)["seconds"]
        prepared = add_local_chassis(cluster, args.local, args.ports)
        remote = cluster.remotes()
        result["full"] = _child(remote, "full")

        def bind_spare() -> None:
            churn(cluster, prepared["chassis"], prepared["spare_index"], 1, bind=True)

        result["local"] = _child(remote, "local", bind_spare)
    markdown = local_markdown(result)
    publish(result, markdown, args.out, parser.prog, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
