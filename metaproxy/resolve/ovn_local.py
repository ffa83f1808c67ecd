"""The chassis-local replica: in the OVN chassis mode the lookups answer only callers
bound to this chassis, so the Southbound replica holds only what this chassis needs,
through conditional monitoring (L{metaproxy.ovsdb.monitor.OvsdbMonitor.set_conditions}):

  - C{Chassis}: this chassis's row (by name), which gives its uuid;
  - C{Port_Binding}: the rows bound here (C{chassis} is this chassis, or
    C{additional_chassis} holds it: the destination of a live migration), and the
    localports of their datapaths (each network's metadata port);
  - C{Datapath_Binding}: the datapaths of the rows bound here (their network ids).

The conditions follow the rows: a port bound here brings its datapath, which brings
its localports; a port leaving takes them away when no other port here needs them.

In OVSDB monitor conditions a row is monitored when I{any} clause of its table holds,
and an empty list of clauses means every row: "no row" is C{[false]}. "A localport of
datapath D" needs two clauses at once (C{type} and C{datapath}), which monitor
conditions cannot say; it is asked once with a C{select} (whose clauses must all hold)
and the rows found are then monitored by C{_uuid}. A needed datapath without one is
asked again every C{retry_interval} seconds, and when a known localport is deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from twisted.logger import Logger

from metaproxy.ovsdb.data import RowChange

__all__ = [
    "ChassisScope",
    "chassis_uuid",
    "needed_datapaths",
    "local_conditions",
    "localport_selects",
    "system_id",
]

log = Logger("metaproxy.resolve.ovn")

Tables = Mapping[str, Mapping[str, Mapping[str, Any]]]

#: a condition no row satisfies (an empty list would be every row)
NO_ROW: list[Any] = [False]


def _refs(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def system_id(tables: Tables) -> str:
    """This node's chassis name: the local C{Open_vSwitch} row's C{external_ids:system-id}
    (C{""} when it has none yet)."""
    for row in tables.get("Open_vSwitch", {}).values():
        return str(row.get("external_ids", {}).get("system-id", "")).strip()
    return ""


def chassis_uuid(tables: Tables, name: str) -> str | None:
    """The uuid of the C{Chassis} row named C{name}, None when there is none."""
    for uuid, row in tables.get("Chassis", {}).items():
        if row.get("name") == name:
            return uuid
    return None


def needed_datapaths(tables: Tables, chassis: str | None) -> set[str]:
    """The datapaths of the C{Port_Binding} rows bound to chassis uuid C{chassis}."""
    if chassis is None:
        return set()
    found = set()
    for row in tables.get("Port_Binding", {}).values():
        if chassis in _refs(row.get("chassis")) or chassis in _refs(row.get("additional_chassis")):
            datapath = row.get("datapath")
            if datapath:
                found.add(datapath)
    return found


def local_conditions(
    name: str, chassis: str | None, datapaths: Iterable[str], localports: Iterable[str]
) -> dict[str, list[Any]]:
    """The monitor conditions of the chassis-local replica (module docstring).

    @param name: this chassis's name; C{chassis}: its row's uuid (None: not known yet).
    @param datapaths: the C{Datapath_Binding} uuids needed; C{localports}: the
        C{Port_Binding} uuids of their localports.
    """
    ports: list[Any] = []
    if chassis is not None:
        ports = [
            ["chassis", "==", ["uuid", chassis]],
            ["additional_chassis", "includes", ["uuid", chassis]],
        ]
    ports += [["_uuid", "==", ["uuid", uuid]] for uuid in sorted(localports)]
    paths = [["_uuid", "==", ["uuid", uuid]] for uuid in sorted(datapaths)]
    return {
        "Chassis": [["name", "==", name]],
        "Port_Binding": ports or NO_ROW,
        "Datapath_Binding": paths or NO_ROW,
    }


def localport_selects(datapaths: Iterable[str]) -> list[dict[str, Any]]:
    """One C{select} per datapath: its localports' uuids (the clauses of a C{where} must
    all hold)."""
    return [
        {
            "op": "select",
            "table": "Port_Binding",
            "where": [["datapath", "==", ["uuid", datapath]], ["type", "==", "localport"]],
            "columns": ["_uuid"],
        }
        for datapath in datapaths
    ]


class ChassisScope:
    """Keeps a monitor's conditions on what chassis C{name} needs.

    Call L{refresh} with the replica's tables after every synchronisation and change;
    it sets the monitor's conditions (L{OvsdbMonitor.set_conditions}) and asks for the
    localports of newly needed datapaths on the monitor's connection.

    @param monitor: has C{set_conditions(conditions)} and C{transact(operations)}.
    """

    def __init__(
        self, reactor: Any, monitor: Any, name: str, *, retry_interval: float = 5.0
    ) -> None:
        self._reactor = reactor
        self._monitor = monitor
        self.name = name
        self._retry_interval = retry_interval
        self._tables: Tables = {}
        self.chassis: str | None = None
        self.datapaths: set[str] = set()
        #: localport uuid -> its datapath
        self.localports: dict[str, str] = {}
        self._asking: set[str] = set()  # datapaths whose select is on its way
        self._unfound: set[str] = set()  # datapaths without a localport, asked later
        self._retry_call: Any = None

    def initial(self) -> dict[str, list[Any]]:
        """The conditions before anything is known: this chassis's row only."""
        return local_conditions(self.name, None, (), ())

    def stop(self) -> None:
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None

    def refresh(self, tables: Tables, changes: Iterable[RowChange] = ()) -> None:
        self._tables = tables
        for change in changes:
            if change.table == "Port_Binding" and change.new is None:
                self.localports.pop(change.uuid, None)  # deleted: asked again
        self.chassis = chassis_uuid(tables, self.name)
        self.datapaths = needed_datapaths(tables, self.chassis)
        self.localports = {
            uuid: datapath
            for uuid, datapath in self.localports.items()
            if datapath in self.datapaths
        }
        self._unfound &= self.datapaths
        known = set(self.localports.values())
        missing = self.datapaths - known - self._asking - self._unfound
        if missing:
            self._ask(sorted(missing))
        self._monitor.set_conditions(
            local_conditions(self.name, self.chassis, self.datapaths, self.localports)
        )

    def _ask(self, datapaths: list[str]) -> None:
        self._asking.update(datapaths)
        d = self._monitor.transact(localport_selects(datapaths))
        d.addCallback(self._found, datapaths)
        d.addErrback(self._not_asked, datapaths)

    def _found(self, results: list[Any], datapaths: list[str]) -> None:
        self._asking.difference_update(datapaths)
        for datapath, result in zip(datapaths, results, strict=True):
            rows = result.get("rows", []) if isinstance(result, dict) else []
            uuids = [row["_uuid"][1] for row in rows if isinstance(row.get("_uuid"), list)]
            if not uuids and datapath in self.datapaths:
                self._unfound.add(datapath)
            for uuid in uuids:
                self.localports[uuid] = datapath
        if self._unfound:
            self._retry_later()
        self.refresh(self._tables)

    def _not_asked(self, failure: Any, datapaths: list[str]) -> None:
        # not connected, or the connection dropped: the next synchronisation asks again
        self._asking.difference_update(datapaths)
        log.debug(
            "Localports of {count} datapaths not asked: {why}",
            count=len(datapaths),
            why=failure.getErrorMessage(),
        )

    def _retry_later(self) -> None:
        if self._retry_call is None or not self._retry_call.active():
            self._retry_call = self._reactor.callLater(self._retry_interval, self._retry)

    def _retry(self) -> None:
        self._retry_call = None
        self._unfound.clear()
        self.refresh(self._tables)


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
