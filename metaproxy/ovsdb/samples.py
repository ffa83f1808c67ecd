"""An OVSDB monitor's counts as metric samples (L{metaproxy.ops.metrics.Sample}), read
when metrics are scraped:

  - C{metaproxy_ovsdb_member_state{database,remote,state}}: 1 for each remote's current
    state, 0 for the others (L{metaproxy.ovsdb.cluster.MEMBER_STATES});
  - C{metaproxy_ovsdb_synchronised{database}}: 1 while the replica is the current copy
    of a usable member;
  - C{metaproxy_ovsdb_connection_attempts_total{database,remote}};
  - C{metaproxy_ovsdb_member_refusals_total{database,remote,state}}: attempts that
    ended with the member refused, unreachable or failed;
  - C{metaproxy_ovsdb_syncs_total{database,kind}}: C{full} copies and C{changes}
    (resumed from the last transaction);
  - C{metaproxy_ovsdb_reconnects_total{database,cause}}: synchronised connections
    lost (C{lost}) or dropped because the member was refused (its state).

Summed over worker processes, C{member_state} counts the processes in each state.
"""

from __future__ import annotations

from typing import Any

from metaproxy.ops.metrics import Sample
from metaproxy.ovsdb.cluster import MEMBER_STATES

__all__ = ["monitor_samples"]


def monitor_samples(database: str, monitor: Any) -> list[Sample]:
    """The samples of an L{metaproxy.ovsdb.monitor.OvsdbMonitor}."""
    db = ("database", database)
    members = monitor.members
    samples = [
        Sample(
            "metaproxy_ovsdb_synchronised",
            "gauge",
            "1 while the replica is the current copy of a usable database server.",
            (db,),
            1.0 if monitor.synchronised else 0.0,
        )
    ]
    for remote in members.order:
        current = members.states.get(remote, "unknown")
        where = ("remote", str(remote))
        for state in MEMBER_STATES:
            samples.append(
                Sample(
                    "metaproxy_ovsdb_member_state",
                    "gauge",
                    "1 for each database server's current state as this client sees it.",
                    (db, where, ("state", state)),
                    1.0 if state == current else 0.0,
                )
            )
        samples.append(
            Sample(
                "metaproxy_ovsdb_connection_attempts_total",
                "counter",
                "Connection attempts to each database server.",
                (db, where),
                float(members.attempts.get(remote, 0)),
            )
        )
    for (remote, state), count in sorted(members.refusals.items(), key=lambda kv: str(kv[0])):
        samples.append(
            Sample(
                "metaproxy_ovsdb_member_refusals_total",
                "counter",
                "Attempts that ended with the server refused, unreachable or failed, by state.",
                (db, ("remote", str(remote)), ("state", state)),
                float(count),
            )
        )
    for kind, count in sorted(monitor.sync_kinds.items()):
        samples.append(
            Sample(
                "metaproxy_ovsdb_syncs_total",
                "counter",
                "Synchronisations: full copies, and changes since the last transaction.",
                (db, ("kind", kind)),
                float(count),
            )
        )
    for cause, count in sorted(monitor.reconnects.items()):
        samples.append(
            Sample(
                "metaproxy_ovsdb_reconnects_total",
                "counter",
                "Synchronised connections lost, or dropped because the server was refused.",
                (db, ("cause", cause)),
                float(count),
            )
        )
    return samples
