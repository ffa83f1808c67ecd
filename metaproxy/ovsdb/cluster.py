"""Whether a database server may be used: its C{_Server.Database} row, judged.

Every C{ovsdb-server} describes the databases it serves in the C{Database} table of its
C{_Server} database: C{model} (C{standalone}, C{clustered} or C{relay}), C{connected}
(a cluster member: it is part of its cluster and the cluster has a leader; a relay: it
is connected to its source), C{leader} (this member is the leader), C{index} (a cluster
member: the index of the last log entry it shows its clients) and C{cid} (the cluster's
id). A member that lost its cluster keeps serving its last copy and says so only there;
the client must look.

L{ClusterView} judges those rows as the C{ovs} library's IDL does for a client that may
read from any member (not the leader only):

  - a database the server does not serve: refused (C{no_database});
  - a cluster member or relay that is not connected: refused (C{cluster_disconnected});
  - a cluster member whose index is below one already seen in the same cluster: refused
    (C{stale}: it has not caught up with what this client has already read);
  - anything else: usable; its index becomes the least acceptable one.

The index only grows within one cluster: a member of another cluster (another C{cid},
e.g. one created again from a backup) resets it, with a warning. The view is kept by
the client across connections, so that a member behind the previous one is refused.

Pure: rows in, verdicts out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from twisted.logger import Logger

from metaproxy.ovsdb.data import Column, Schema

__all__ = [
    "SERVER_DATABASE",
    "SERVER_SCHEMA",
    "SERVER_COLUMNS",
    "USABLE",
    "MEMBER_STATES",
    "Verdict",
    "ClusterView",
]

log = Logger("metaproxy.ovsdb")

SERVER_DATABASE = "_Server"
#: The columns of C{_Server.Database} that are read (C{schema} is left out: a member
#: that has not joined yet is not connected either, and the schema is large).
SERVER_COLUMNS = ["name", "model", "connected", "leader", "index", "cid"]
#: Their kinds (those of the C{_Server} schema every ovsdb-server since 2.9 has).
SERVER_SCHEMA = Schema(
    SERVER_DATABASE,
    "",
    {
        "Database": {
            "name": Column("scalar", 1, ""),
            "model": Column("scalar", 1, ""),
            "connected": Column("scalar", 1, False),
            "leader": Column("scalar", 1, False),
            "index": Column("set", 1),
            "cid": Column("set", 1),
        }
    },
)

#: A member's state as the client sees it. C{unknown}: not tried yet; C{usable};
#: C{unreachable}: no connection; C{cluster_disconnected}, C{stale}, C{no_database}:
#: refused on its C{_Server} row; C{failed}: connected, but the database could not be
#: monitored (schema, protocol).
USABLE = "usable"
MEMBER_STATES = (
    "unknown",
    USABLE,
    "unreachable",
    "cluster_disconnected",
    "stale",
    "no_database",
    "failed",
)


@attrs.frozen
class Verdict:
    """C{state}: one of L{MEMBER_STATES}; C{why}: a sentence for the log; C{role}:
    C{"leader"}, C{"follower"}, C{"relay"} or C{"standalone"} (for the log)."""

    state: str
    why: str
    role: str = ""

    @property
    def usable(self) -> bool:
        return self.state == USABLE


def _optional(value: Any) -> Any:
    """A C{min 0, max 1} column's value (a tuple of at most one atom) or None."""
    return value[0] if value else None


class ClusterView:
    """What this client has seen of a cluster: its id and the highest index read."""

    def __init__(self) -> None:
        self.cid: str | None = None
        self.min_index = 0

    def judge(self, database: str, rows: Mapping[str, Mapping[str, Any]]) -> Verdict:
        """The verdict on a server whose C{_Server.Database} rows are C{rows} (decoded,
        as a L{metaproxy.ovsdb.data.RowStore} holds them), for C{database}."""
        row = next((r for r in rows.values() if r.get("name") == database), None)
        if row is None:
            return Verdict("no_database", f"the server does not serve {database}")
        model = row.get("model", "")
        if model == "relay":
            if not row.get("connected"):
                return Verdict("cluster_disconnected", "relay not connected to its source", "relay")
            return Verdict(USABLE, "relay connected to its source", "relay")
        if model != "clustered":
            return Verdict(USABLE, "standalone database", "standalone")
        role = "leader" if row.get("leader") else "follower"
        if not row.get("connected"):
            return Verdict(
                "cluster_disconnected",
                "disconnected from its cluster (no leader in reach, or not joined yet)",
                role,
            )
        cid = _optional(row.get("cid"))
        index = _optional(row.get("index")) or 0
        if cid is not None and self.cid is not None and cid != self.cid:
            log.warn(
                "OVSDB {database}: this member belongs to cluster {cid}, not to {old} seen "
                "before (was the cluster created again?); reading from it",
                database=database,
                cid=cid,
                old=self.cid,
            )
            self.min_index = 0
        if cid is not None:
            self.cid = cid
        if index < self.min_index:
            return Verdict(
                "stale",
                f"its index {index} is behind {self.min_index}, already read from the cluster",
                role,
            )
        self.min_index = index
        return Verdict(USABLE, f"connected to its cluster, index {index}", role)
