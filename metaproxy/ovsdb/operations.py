"""OVSDB C{transact} operations (RFC 7047 section 5.2) and the check of their results.

Builders for what the chassis writes, in wire form:

  - L{map_set}: set some keys of a map column, keeping the others (a C{mutate} deleting
    the keys, then inserting them with their new values: one operation, atomic);
  - L{map_add}: add keys that are absent, leaving present ones as they are (C{insert}
    on a map never overwrites, which is what C{ovs-vsctl add} and ovsdbapp's C{db_add}
    do);
  - L{map_remove}: delete keys if present;
  - L{wire_map}, L{wire_set}, L{uuid_ref}, L{named_ref}: values.

L{check_results} turns a transaction's reply into its results, or raises
L{TransactError} naming the operation that failed and why; an operation whose C{where}
matched no row (C{count} 0) fails too when the caller said it must match.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "TransactError",
    "wire_map",
    "wire_set",
    "uuid_ref",
    "named_ref",
    "map_set",
    "map_add",
    "map_remove",
    "check_results",
]


class TransactError(Exception):
    """A transaction failed; str() says which operation and why."""


def wire_map(pairs: Mapping[str, Any]) -> list[Any]:
    return ["map", [[key, value] for key, value in sorted(pairs.items())]]


def wire_set(values: Iterable[Any]) -> list[Any]:
    return ["set", list(values)]


def uuid_ref(uuid: str) -> list[str]:
    return ["uuid", uuid]


def named_ref(name: str) -> list[str]:
    return ["named-uuid", name]


def map_set(
    table: str, where: Sequence[Any], column: str, pairs: Mapping[str, str]
) -> dict[str, Any]:
    """Set C{pairs} in map C{column} of the matching rows, other keys untouched."""
    return {
        "op": "mutate",
        "table": table,
        "where": list(where),
        "mutations": [
            [column, "delete", wire_set(sorted(pairs))],
            [column, "insert", wire_map(pairs)],
        ],
    }


def map_add(
    table: str, where: Sequence[Any], column: str, pairs: Mapping[str, str]
) -> dict[str, Any]:
    """Add the keys of C{pairs} that C{column} lacks; present keys keep their value."""
    return {
        "op": "mutate",
        "table": table,
        "where": list(where),
        "mutations": [[column, "insert", wire_map(pairs)]],
    }


def map_remove(
    table: str, where: Sequence[Any], column: str, keys: Iterable[str]
) -> dict[str, Any]:
    """Remove C{keys} from map C{column} (absent keys are fine)."""
    return {
        "op": "mutate",
        "table": table,
        "where": list(where),
        "mutations": [[column, "delete", wire_set(sorted(keys))]],
    }


def _describe(operation: Mapping[str, Any]) -> str:
    where = operation.get("where")
    target = f" where {where}" if where else ""
    return f"{operation.get('op')} on {operation.get('table')}{target}"


def check_results(
    operations: Sequence[Mapping[str, Any]],
    results: Any,
    must_match: Iterable[int] = (),
) -> list[Any]:
    """The results of a transaction, checked.

    @param must_match: indexes of operations whose C{where} must match at least one row.
    @raise TransactError: the reply is not a list, an operation has an error, or one of
        C{must_match} matched nothing.
    """
    if not isinstance(results, list):
        raise TransactError(f"transact answered {results!r}, not a list of results")
    for index, result in enumerate(results):
        if isinstance(result, dict) and result.get("error") is not None:
            operation = operations[index] if index < len(operations) else {}
            what = _describe(operation) if operation else "the transaction"
            details = result.get("details")
            raise TransactError(
                f"{what} failed: {result['error']}" + (f" ({details})" if details else "")
            )
    for index in must_match:
        result = results[index] if index < len(results) else None
        if not isinstance(result, dict) or result.get("count", 0) < 1:
            raise TransactError(f"{_describe(operations[index])} matched no row")
    return results
