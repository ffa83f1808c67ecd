"""OVSDB values and rows: the schema's column kinds, the wire form of values (RFC 7047
section 5.1), and a store of monitored rows that applies C{update} and C{update2}
notifications.

Values are held in plain Python form:

  - a scalar column (exactly one value): the atom (C{str}, C{int}, C{float}, C{bool};
    a uuid as its text);
  - a set column (any other key-only column, optional references included): a tuple of
    atoms, sorted;
  - a map column: a C{dict}.

Everything here is pure: bytes-free, reactor-free, tested with JSON literals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

__all__ = ["DataError", "Column", "Schema", "decode_value", "RowStore", "RowChange"]


class DataError(ValueError):
    """A schema or a value does not have the form RFC 7047 gives it."""


@attrs.frozen
class Column:
    """A column's kind: C{"scalar"}, C{"set"} or C{"map"}; C{n_max} (None: unlimited);
    C{default}: a scalar's value when the server leaves it out (its type's default)."""

    kind: str
    n_max: int | None = 1
    default: Any = None


_DEFAULTS = {
    "string": "",
    "integer": 0,
    "real": 0.0,
    "boolean": False,
    "uuid": "00000000-0000-0000-0000-000000000000",
}


def _atomic_type(base: Any) -> str:
    name = base.get("type") if isinstance(base, dict) else base
    if name not in _DEFAULTS:
        raise DataError(f"unknown atomic type {name!r}")
    return name


def _column(spec: Any) -> Column:
    kind = spec.get("type") if isinstance(spec, dict) else None
    if isinstance(kind, str):
        return Column("scalar", 1, _DEFAULTS[_atomic_type(kind)])
    if not isinstance(kind, dict):
        raise DataError(f"column type {kind!r} is not a string or an object")
    n_min = kind.get("min", 1)
    n_max = kind.get("max", 1)
    n_max = None if n_max == "unlimited" else n_max
    if "value" in kind:
        return Column("map", n_max)
    if n_min == 1 and n_max == 1:
        return Column("scalar", 1, _DEFAULTS[_atomic_type(kind.get("key"))])
    return Column("set", n_max)


@attrs.frozen
class Schema:
    """The column kinds of the tables of a database schema (a C{get_schema} reply)."""

    name: str
    version: str
    tables: Mapping[str, Mapping[str, Column]]

    @classmethod
    def from_json(cls, schema: Any) -> Schema:
        try:
            tables = {
                table: {name: _column(spec) for name, spec in body["columns"].items()}
                for table, body in schema["tables"].items()
            }
            return cls(schema["name"], schema.get("version", ""), tables)
        except (KeyError, TypeError, AttributeError) as e:
            raise DataError(f"not an OVSDB schema ({type(e).__name__}: {e})") from None

    def missing(self, wanted: Mapping[str, Iterable[str]]) -> list[str]:
        """C{"Table.column"} for each wanted column the schema lacks."""
        absent = []
        for table, columns in wanted.items():
            have = self.tables.get(table)
            for column in columns:
                if have is None or column not in have:
                    absent.append(f"{table}.{column}")
        return absent


def _atom(value: Any) -> Any:
    if isinstance(value, list):
        if len(value) == 2 and value[0] in ("uuid", "named-uuid") and isinstance(value[1], str):
            return value[1]
        raise DataError(f"{value!r} is not an atom")
    return value


def _elements(value: Any) -> list[Any]:
    if isinstance(value, list) and len(value) == 2 and value[0] == "set":
        return [_atom(v) for v in value[1]]
    return [_atom(value)]


def _sort_key(atom: Any) -> tuple[str, Any]:
    return (type(atom).__name__, atom)


def decode_value(column: Column, value: Any) -> Any:
    """The wire form of a value of C{column} in plain form (see the module docstring).

    @raise DataError: the value does not have the wire form of its kind.
    """
    if column.kind == "map":
        if not (
            isinstance(value, list)
            and len(value) == 2
            and value[0] == "map"
            and isinstance(value[1], list)
        ):
            raise DataError(f"{value!r} is not a map")
        try:
            return {_atom(k): _atom(v) for k, v in value[1]}
        except (TypeError, ValueError):
            raise DataError(f"{value!r} is not a map of pairs") from None
    if column.kind == "set":
        return tuple(sorted(_elements(value), key=_sort_key))
    return _atom(value)


def _empty(column: Column) -> Any:
    if column.kind == "map":
        return {}
    if column.kind == "set":
        return ()
    return column.default


def _apply_diff(column: Column, old: Any, diff: Any) -> Any:
    """C{update2}'s "modify": a map's diff holds the keys added (or changed: the new
    value) and removed (with their old value); a set's diff is the elements added or
    removed; a scalar's is the new value. A set or map of at most one element that has
    one gets its new value, as a scalar does (what ovsdb-server sends, and what OVS's
    own IDL expects)."""
    if column.n_max == 1 and column.kind != "scalar" and old:
        return diff
    if column.kind == "map":
        new = dict(old)
        for key, value in diff.items():
            if key in new and new[key] == value:
                del new[key]
            else:
                new[key] = value
        return new
    if column.kind == "set":
        current = set(old)
        current.symmetric_difference_update(diff)
        return tuple(sorted(current, key=_sort_key))
    return diff


@attrs.frozen
class RowChange:
    """One row changed: C{old} is None for an insert, C{new} None for a delete."""

    table: str
    uuid: str
    old: Mapping[str, Any] | None
    new: Mapping[str, Any] | None


class RowStore:
    """The monitored rows of some tables, kept as the server's notifications say.

    @param schema: the server's schema.
    @param columns: table -> the monitored columns (a row holds exactly these).
    """

    def __init__(self, schema: Schema, columns: Mapping[str, Iterable[str]]) -> None:
        self._columns = {
            table: {name: schema.tables[table][name] for name in names}
            for table, names in columns.items()
        }
        self.tables: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in columns}

    @property
    def column_kinds(self) -> Mapping[str, Mapping[str, Column]]:
        """Table -> monitored column -> its kind: two stores with equal kinds hold
        rows of the same form (a replica can be carried over to a new connection)."""
        return self._columns

    def _decode_row(
        self, table: str, row: Any, base: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        if not isinstance(row, dict):
            raise DataError(f"{table}: row {row!r} is not an object")
        columns = self._columns[table]
        decoded = dict(base) if base is not None else {n: _empty(c) for n, c in columns.items()}
        for name, value in row.items():
            column = columns.get(name)
            if column is not None:
                decoded[name] = decode_value(column, value)
        return decoded

    def _updates(self, updates: Any) -> Iterable[tuple[str, str, Any]]:
        if not isinstance(updates, dict):
            raise DataError(f"table updates {updates!r} are not an object")
        for table, rows in updates.items():
            if table not in self.tables:
                raise DataError(f"table {table!r} was not monitored")
            if not isinstance(rows, dict):
                raise DataError(f"{table}: row updates are not an object")
            for uuid, update in rows.items():
                if not isinstance(update, dict):
                    raise DataError(f"{table} {uuid}: row update is not an object")
                yield table, uuid, update

    def apply_update(self, updates: Any) -> list[RowChange]:
        """A C{monitor} reply or C{update} notification: "old" and "new" rows (the new
        one with every monitored column on insert, the changed ones on modify)."""
        changes = []
        for table, uuid, update in self._updates(updates):
            rows = self.tables[table]
            old = rows.get(uuid)
            if "new" not in update:
                if old is not None:
                    del rows[uuid]
                    changes.append(RowChange(table, uuid, old, None))
                continue
            new = self._decode_row(table, update["new"], old)
            rows[uuid] = new
            changes.append(RowChange(table, uuid, old, new))
        return changes

    def apply_update2(self, updates: Any) -> list[RowChange]:
        """A C{monitor_cond} reply or C{update2} notification: "initial", "insert",
        "modify" (a diff, see L{_apply_diff}) or "delete"."""
        changes = []
        for table, uuid, update in self._updates(updates):
            rows = self.tables[table]
            old = rows.get(uuid)
            if "delete" in update:
                if old is not None:
                    del rows[uuid]
                    changes.append(RowChange(table, uuid, old, None))
            elif "modify" in update:
                if old is None:
                    raise DataError(f"{table} {uuid}: modify of a row never inserted")
                diff = update["modify"]
                if not isinstance(diff, dict):
                    raise DataError(f"{table} {uuid}: modify is not an object")
                columns = self._columns[table]
                new = dict(old)
                for name, value in diff.items():
                    column = columns.get(name)
                    if column is not None:
                        new[name] = _apply_diff(column, old[name], decode_value(column, value))
                rows[uuid] = new
                changes.append(RowChange(table, uuid, old, new))
            else:
                row = update.get("initial", update.get("insert"))
                if row is None:
                    raise DataError(
                        f"{table} {uuid}: row update without initial, insert, modify or delete"
                    )
                new = self._decode_row(table, row)
                rows[uuid] = new
                changes.append(RowChange(table, uuid, old, new))
        return changes
