"""A reconnect after an outage on a large Southbound database: changes only
(C{monitor_cond_since}) against a full copy (C{monitor_cond}).

    python -m bench.scale.ovsdb_reconnect [--ports 100000] [--networks 1000]
                                          [--outage 10] [--changes 100]
                                          [--transactions 20]

A one-member clustered Southbound database (the transaction history that
C{monitor_cond_since} answers from is kept for clustered databases) is loaded with
C{--ports} bound Port_Binding rows. Then, for each mode, an L{OvnBackend} (the monitor
and the index, as the agent runs them) connects through a relay
(L{bench.scale.southbound.Relay}) and synchronises; the relay cuts the line for
C{--outage} seconds while C{--changes} ports are unbound in C{--transactions}
transactions (ovsdb-server keeps its last 100 transactions at most: more than that
during the outage and the server sends a full copy anyway); the line comes back and
the backend reconnects. Reported per mode: the bytes the server sent on the
reconnection, the seconds from the relay accepting it to the backend answering again
(index updated), and this process's CPU seconds in that time; the initial
synchronisation's bytes and seconds too. Both modes run against the same
server, one after the other; the changes are undone between them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.task import deferLater

from bench.fakes.ovnsb_cluster import SbCluster
from bench.options import RESULTS
from bench.scale.onreactor import run_once, until
from bench.scale.output import MIB, markdown_table, publish
from bench.scale.sbfixture import cannot_run, fleet_parser, private_cluster
from bench.scale.selfusage import cpu_seconds
from bench.scale.southbound import Relay, churn, load_fleet
from metaproxy.ovsdb.monitor import OvsdbMonitor
from metaproxy.ovsdb.remote import parse_remotes
from metaproxy.resolve.ovn import DATABASE, SB_COLUMNS, SB_CONDITIONS, OvnBackend

__all__ = ["main", "measure_reconnect"]


async def measure_reconnect(
    reactor: Any,
    cluster: SbCluster,
    chassis: str,
    *,
    resume: bool,
    outage: float,
    changes: int,
    transactions: int,
) -> dict[str, Any]:
    """One mode: connect, synchronise, cut for C{outage} s while C{changes} ports are
    unbound, reconnect; the figures of the first synchronisation and the reconnect."""
    relay = Relay(reactor, cluster.members[0].tcp_port)
    relay.start()
    synced: list[tuple[float, float]] = []  # (monotonic, cpu) at each synchronisation

    def factory(**callbacks: Any) -> OvsdbMonitor:
        def after(callback: Any) -> Any:
            def wrapped(*args: Any) -> None:
                callback(*args)
                synced.append((time.monotonic(), cpu_seconds()))

            return wrapped

        callbacks["on_sync"] = after(callbacks["on_sync"])
        callbacks["on_resumed"] = after(callbacks["on_resumed"])
        return OvsdbMonitor(
            reactor,
            parse_remotes(f"tcp:127.0.0.1:{relay.port}"),
            DATABASE,
            SB_COLUMNS,
            conditions=SB_CONDITIONS,
            timeout=120,
            probe_interval=0,
            retry_max_interval=1,
            resume=resume,
            **callbacks,
        )

    backend = OvnBackend(reactor, (), monitor_factory=factory)
    cpu0 = cpu_seconds()
    backend.start()
    await until(reactor, backend.ready, 600, interval=0.005)
    first = relay.connections[-1]
    initial = {
        "bytes": first.to_client[0],
        "seconds": synced[0][0] - first.accepted,
        "cpu_seconds": synced[0][1] - cpu0,
        "bound_ports": backend.index.bound_ports,
    }
    await relay.cut()
    cut_at = time.monotonic()
    await until(reactor, lambda: not backend.ready(), 10, interval=0.005)
    churn(cluster, chassis, 0, changes, bind=False, transactions=transactions)
    remaining = outage - (time.monotonic() - cut_at)
    if remaining > 0:
        await deferLater(reactor, remaining, lambda: None)
    before = len(relay.connections)
    relay.restore()
    await until(reactor, lambda: len(relay.connections) > before, 30, interval=0.005)
    connection = relay.connections[-1]
    cpu1 = cpu_seconds()
    await until(reactor, backend.ready, 600, interval=0.005)
    done, cpu2 = synced[-1]
    reconnect = {
        "bytes": connection.to_client[0],
        "bytes_sent": connection.to_server[0],
        "seconds": done - connection.accepted,
        "cpu_seconds": cpu2 - cpu1,
        "bound_ports": backend.index.bound_ports,
        "kind": "changes" if backend.monitor.sync_kinds["changes"] else "full",
    }
    await backend.stop()
    await relay.cut()
    churn(cluster, chassis, 0, changes, bind=True, transactions=transactions)  # undo
    return {"initial": initial, "reconnect": reconnect}


def reconnect_markdown(result: dict[str, Any]) -> str:
    rows = [
        ("Port_Binding rows (bound)", f"{result['ports']:,}"),
        (
            "outage / ports unbound during it",
            f"{result['outage']:g} s / {result['changed_ports']} in "
            f"{result['transactions']} transactions",
        ),
        ("load time (server)", f"{result['load_seconds']:.1f} s"),
    ]
    for mode, label in (("resume", "changes only"), ("full", "full copy")):
        r = result[mode]
        rows += [
            (
                f"{label}: first sync",
                f"{r['initial']['bytes'] / MIB:.1f} MiB, {r['initial']['seconds']:.2f} s",
            ),
            (
                f"{label}: reconnect",
                f"{r['reconnect']['bytes']:,} bytes ({r['reconnect']['bytes'] / MIB:.2f} MiB), "
                f"{r['reconnect']['seconds']:.3f} s, CPU {r['reconnect']['cpu_seconds']:.3f} s "
                f"({r['reconnect']['kind']})",
            ),
        ]
    c, f = result["resume"]["reconnect"], result["full"]["reconnect"]
    rows.append(
        (
            "full copy / changes only",
            f"{f['bytes'] / max(c['bytes'], 1):,.0f}x bytes, "
            f"{f['seconds'] / max(c['seconds'], 1e-6):,.0f}x time",
        )
    )
    return markdown_table("OVSDB reconnect after an outage: changes only vs full copy", rows)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = fleet_parser("python -m bench.scale.ovsdb_reconnect")
    parser.add_argument("--outage", type=float, default=10.0)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--transactions", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if cannot_run():
        return 2
    result: dict[str, Any] = {
        "check": "ovsdb-reconnect",
        "ports": args.ports,
        "outage": args.outage,
        "changed_ports": args.changes,
        "transactions": args.transactions,
    }
    with private_cluster("mp-ovsdb-reconnect-", size=1) as (_, cluster):
        loaded = load_fleet(cluster, args.ports, args.networks)
        result["load_seconds"] = loaded["seconds"]

        async def run(reactor: Any) -> None:
            for mode, resume in (("resume", True), ("full", False)):
                result[mode] = await measure_reconnect(
                    reactor,
                    cluster,
                    loaded["chassis"],
                    resume=resume,
                    outage=args.outage,
                    changes=args.changes,
                    transactions=args.transactions,
                )

        run_once(run)
    markdown = reconnect_markdown(result)
    publish(result, markdown, args.out, parser.prog, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
