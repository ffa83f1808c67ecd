"""The chassis-local replica of the chassis mode's lookups: what it holds, and how its
conditions follow this chassis's ports, is L{metaproxy.ovn_scope} (shared with the
chassis's metadata agent); here, how a process without a chassis agent (a worker)
learns this node's chassis name from the local Open_vSwitch database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ChassisName", "system_id"]

Tables = Mapping[str, Mapping[str, Mapping[str, Any]]]


def system_id(tables: Tables) -> str:
    """This node's chassis name: the local C{Open_vSwitch} row's C{external_ids:system-id}
    (C{""} when it has none yet)."""
    for row in tables.get("Open_vSwitch", {}).values():
        return str(row.get("external_ids", {}).get("system-id", "")).strip()
    return ""


class ChassisName:
    """Follows this node's chassis name (L{system_id}) in the local Open_vSwitch
    database, for a lookup backend in a process that has no chassis agent (a worker).

    @param monitor_factory: C{(columns, **callbacks) -> monitor} on the local database.
    @param on_name: C{(name)}, when the name is first known and whenever it changes.
    """

    COLUMNS = {"Open_vSwitch": ["external_ids"]}

    def __init__(self, monitor_factory: Any, on_name: Any) -> None:
        self.name = ""
        self._on_name = on_name
        self.monitor = monitor_factory(self.COLUMNS, on_sync=self._synced, on_changes=self._changed)

    def _synced(self, store: Any) -> None:
        self._tables = store.tables
        self._check()

    def _changed(self, changes: Any) -> None:
        self._check()

    def _check(self) -> None:
        name = system_id(self._tables)
        if name and name != self.name:
            self.name = name
            self._on_name(name)
