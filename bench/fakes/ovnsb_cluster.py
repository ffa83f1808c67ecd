"""A clustered OVN Southbound database on this machine: N C{ovsdb-server} processes on
127.0.0.1, each in a private directory, for the tests and the bench.

    cluster = SbCluster.start(run_dir, size=3)     # create-cluster, join-cluster, start
    cluster.remotes()                              # "tcp:127.0.0.1:P1,tcp:...,tcp:..."
    cluster.members[1].stop(); cluster.members[1].restart()
    cluster.wait_connected([0, 2])                 # their _Server row says connected
    cluster.transact([...]); cluster.load_table(table)
    cluster.stop()

The first member creates the cluster (C{ovsdb-tool create-cluster} with the
Southbound schema), the others join it (C{ovsdb-tool join-cluster}); each serves
clients on C{ptcp:} and C{punix:} and talks Raft to the others on a port of its own.
Transactions go to any member that is connected (a follower passes them to the leader).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.fakes.ovnsb import (
    DATABASE,
    SbServer,
    call,
    find_schema,
    free_port,
    missing,
    program,
    table_to_operations,
)

__all__ = ["ClusterMember", "SbCluster", "server_row"]


class ClusterMember(SbServer):
    """One member: an L{SbServer} whose database is a cluster member's.

    @ivar raft_port: its Raft port on 127.0.0.1.
    """

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir)
        self.raft_port = free_port()

    @property
    def raft_address(self) -> str:
        return f"tcp:127.0.0.1:{self.raft_port}"

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None


def server_row(unix_path: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """The server's C{_Server.Database} row of the Southbound database, or None."""
    result = call(
        unix_path,
        "transact",
        [
            "_Server",
            {
                "op": "select",
                "table": "Database",
                "where": [["name", "==", DATABASE]],
                "columns": ["model", "connected", "leader", "index"],
            },
        ],
        timeout,
    )
    rows = result[0].get("rows", [])
    return rows[0] if rows else None


class SbCluster:
    """C{size} members serving one clustered Southbound database."""

    def __init__(self, members: Sequence[ClusterMember]) -> None:
        self.members = list(members)

    @classmethod
    def start(cls, run_dir: Path, size: int = 3, timeout: float = 30.0) -> SbCluster:
        """Create the cluster and start every member; return once all are connected.

        @raise RuntimeError: L{missing} is not None, or the cluster did not form.
        """
        problem = missing()
        if problem:
            raise RuntimeError(problem)
        tool = program("ovsdb-tool")
        members = []
        for i in range(size):
            directory = run_dir / f"m{i}"
            directory.mkdir(parents=True, exist_ok=True)
            members.append(ClusterMember(directory))
        first = members[0]
        subprocess.run(
            [tool, "create-cluster", str(first.db_path), str(find_schema()), first.raft_address],
            check=True,
            capture_output=True,
        )
        for member in members[1:]:
            subprocess.run(
                [
                    tool,
                    "join-cluster",
                    str(member.db_path),
                    DATABASE,
                    member.raft_address,
                    first.raft_address,
                ],
                check=True,
                capture_output=True,
            )
        cluster = cls(members)
        try:
            for member in members:
                member._spawn()
            cluster.wait_connected(range(size), timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def remotes(self, which: Iterable[int] | None = None) -> str:
        """The members' C{tcp:} connection strings, comma separated."""
        chosen = range(len(self.members)) if which is None else which
        return ",".join(self.members[i].remote("tcp") for i in chosen)

    def connected(self, i: int) -> bool:
        """Member C{i} runs and its C{_Server} row says it is connected to the cluster."""
        member = self.members[i]
        if not member.running:
            return False
        try:
            row = server_row(member.unix_path)
        except (OSError, RuntimeError):
            return False
        return bool(row and row.get("connected"))

    def wait_connected(self, which: Iterable[int], timeout: float = 30.0) -> float:
        """Wait until every member in C{which} is connected; return the seconds it took.

        @raise RuntimeError: not within C{timeout}, with the members' log tails.
        """
        which = list(which)
        start = time.monotonic()
        while not all(self.connected(i) for i in which):
            if time.monotonic() - start > timeout:
                tails = "\n".join(f"m{i}: {self.members[i].log()[-800:]}" for i in which)
                raise RuntimeError(f"members {which} not connected within {timeout} s\n{tails}")
            time.sleep(0.05)
        return time.monotonic() - start

    def wait_disconnected(self, i: int, timeout: float = 30.0) -> float:
        """Wait until running member C{i} says it is not connected to its cluster."""
        start = time.monotonic()
        while self.connected(i):
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"member {i} still connected after {timeout} s")
            time.sleep(0.05)
        return time.monotonic() - start

    def _any_connected(self) -> ClusterMember:
        for i, member in enumerate(self.members):
            if self.connected(i):
                return member
        raise RuntimeError("no member of the cluster is connected")

    def transact(
        self, operations: Iterable[Mapping[str, Any]], timeout: float = 120.0
    ) -> list[Any]:
        """One transaction through a connected member; its results."""
        return self._any_connected().transact(operations, timeout)

    def load_table(self, table: Mapping[str, Any], chassis: str = "bench-chassis") -> int:
        """As L{SbServer.load_table}, through a connected member."""
        operations = table_to_operations(table, chassis)
        self.transact(operations)
        return sum(1 for op in operations if op["table"] == "Port_Binding")

    def stop(self) -> None:
        for member in self.members:
            member.stop()
