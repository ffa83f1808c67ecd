"""Blocking OVSDB requests over a Unix socket, for the sandbox's set-up (not the product).

rows = select(path, "OVN_Southbound", "Chassis", [["name", "==", "c1"]], ["name"])
transact(path, "OVN_Northbound", [{"op": "insert", ...}])
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from metaproxy.ovsdb.framing import JsonSplitter

__all__ = ["OvsdbSyncError", "request", "transact", "select", "omap", "oset", "plain"]


class OvsdbSyncError(RuntimeError):
    """The server answered with an error, or closed the connection."""


def request(path: str, method: str, params: list[Any], timeout: float = 30.0) -> Any:
    """One JSON-RPC request on a fresh connection; its result."""
    splitter = JsonSplitter()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps({"method": method, "params": params, "id": 1}).encode())
        while True:
            data = s.recv(1 << 16)
            if not data:
                raise OvsdbSyncError(f"{path}: closed before answering {method}")
            for raw in splitter.feed(data):
                message = json.loads(raw)
                if message.get("id") != 1:
                    continue
                if message.get("error") is not None:
                    raise OvsdbSyncError(f"{method} on {path}: {message['error']}")
                return message["result"]


def transact(
    path: str, database: str, operations: Iterable[Mapping[str, Any]], timeout: float = 30.0
) -> list[Any]:
    """One transaction; its results. @raise OvsdbSyncError: an operation failed."""
    results = request(path, "transact", [database, *operations], timeout)
    errors = [r for r in results if isinstance(r, dict) and "error" in r]
    if errors:
        raise OvsdbSyncError(f"transact on {database} failed: {errors}")
    return results


def select(
    path: str,
    database: str,
    table: str,
    where: Sequence[Any] = (),
    columns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The rows of C{table} matching C{where}, values in plain form (see L{plain})."""
    op: dict[str, Any] = {"op": "select", "table": table, "where": list(where)}
    if columns is not None:
        op["columns"] = list(columns)
    rows = transact(path, database, [op])[0]["rows"]
    return [{name: plain(value) for name, value in row.items()} for row in rows]


def omap(pairs: Mapping[str, Any]) -> list[Any]:
    """A map in OVSDB's wire form."""
    return ["map", [[k, v] for k, v in sorted(pairs.items())]]


def oset(values: Iterable[Any]) -> list[Any]:
    """A set in OVSDB's wire form."""
    return ["set", list(values)]


def plain(value: Any) -> Any:
    """A wire value in plain form: maps as dicts, sets as lists, uuids as text."""
    if isinstance(value, list) and len(value) == 2:
        kind, body = value
        if kind == "map":
            return {plain(k): plain(v) for k, v in body}
        if kind == "set":
            return [plain(v) for v in body]
        if kind in ("uuid", "named-uuid"):
            return body
    return value
