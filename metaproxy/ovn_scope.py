"""What one chassis needs of the OVN Southbound, through conditional monitoring
(L{metaproxy.ovsdb.monitor.OvsdbMonitor.set_conditions}): the chassis-local replica of
the chassis mode's lookups (L{metaproxy.resolve.ovn}) and of its metadata agent
(L{metaproxy.chassis.agent}), whose size follows this chassis's ports, not the cloud's:

  - C{Chassis}: this chassis's row (by name), which gives its uuid;
  - C{Port_Binding}: the rows bound here (C{chassis} is this chassis, or
    C{additional_chassis} holds it: the destination of a live migration), the
    localports of their datapaths (each network's metadata port), and the rows whose
    C{logical_port} the owner names (L{ChassisScope.logical_ports}: the agent names
    the C{iface-id}s on its bridges, so that a metadata veth left there is known);
  - C{Datapath_Binding}: the datapaths of the rows bound here (their network ids).

The conditions follow the rows: a port bound here brings its datapath, which brings
its localports; a port leaving takes them away when no other port here needs them.

In OVSDB monitor conditions a row is monitored when I{any} clause of its table holds,
and an empty list of clauses means every row: "no row" is C{[false]}. "A localport of
datapath D" needs two clauses at once (C{type} and C{datapath}), which monitor
conditions cannot say; it is asked once with a C{select} (whose clauses must all hold)
and the rows found are then monitored by C{_uuid}. A needed datapath without one is
asked again every C{retry_interval} seconds, and when a known localport is deleted.

The replica is complete for what it holds (L{ChassisScope.settled}) once no C{select}
is on its way and the server has acknowledged the newest conditions: until then a row
that should be there may not have arrived yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.logger import Logger

from metaproxy.ovsdb.data import RowChange

__all__ = [
    "NO_ROW",
    "ChassisScope",
    "chassis_uuid",
    "needed_datapaths",
    "local_conditions",
    "localport_selects",
]

Tables = Mapping[str, Mapping[str, Mapping[str, Any]]]

#: a condition no row satisfies (an empty list would be every row)
NO_ROW: list[Any] = [False]


def _refs(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


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
    name: str,
    chassis: str | None,
    datapaths: Iterable[str],
    localports: Iterable[str],
    logical_ports: Iterable[str] = (),
) -> dict[str, list[Any]]:
    """The monitor conditions of the chassis-local replica (module docstring).

    @param name: this chassis's name; C{chassis}: its row's uuid (None: not known yet).
    @param datapaths: the C{Datapath_Binding} uuids needed; C{localports}: the
        C{Port_Binding} uuids of their localports.
    @param logical_ports: C{Port_Binding} rows wanted by C{logical_port} as well.
    """
    ports: list[Any] = []
    if chassis is not None:
        ports = [
            ["chassis", "==", ["uuid", chassis]],
            ["additional_chassis", "includes", ["uuid", chassis]],
        ]
    ports += [["_uuid", "==", ["uuid", uuid]] for uuid in sorted(localports)]
    ports += [["logical_port", "==", name] for name in sorted(logical_ports)]
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

    Call L{refresh} with the replica's tables after every synchronisation and change
    (and after changing L{logical_ports}); it sets the monitor's conditions
    (L{OvsdbMonitor.set_conditions}) and asks for the localports of newly needed
    datapaths on the monitor's connection. An owner that waits for L{settled} calls
    L{acknowledged} when the monitor's conditions are (its C{on_conditions}).

    @param monitor: has C{set_conditions(conditions)} and C{transact(operations)}; for
        L{settled}, C{conditions_acknowledged} too.
    @param log: where a C{select} that could not be sent is said (debug).
    @param on_settled: called (no arguments) when the replica may have become
        L{settled} (a C{select} answered, conditions acknowledged) and is.
    """

    def __init__(
        self,
        reactor: Any,
        monitor: Any,
        name: str,
        *,
        retry_interval: float = 5.0,
        log: Logger | None = None,
        on_settled: Callable[[], None] = lambda: None,
    ) -> None:
        self._reactor = reactor
        self._monitor = monitor
        self.name = name
        self._retry_interval = retry_interval
        self._log = log if log is not None else Logger("metaproxy.ovn_scope")
        self._on_settled = on_settled
        #: C{Port_Binding.logical_port} values monitored as well (the owner's)
        self.logical_ports: set[str] = set()
        self._tables: Tables = {}
        self.chassis: str | None = None
        self.datapaths: set[str] = set()
        #: localport uuid -> its datapath
        self.localports: dict[str, str] = {}
        self._asking: set[str] = set()  # datapaths whose select is on its way
        self._unfound: set[str] = set()  # datapaths without a localport, asked later
        self._retry_call: Any = None
        self._was_settled = False

    def initial(self) -> dict[str, list[Any]]:
        """The conditions before anything is known: this chassis's row only (and the
        ports of L{logical_ports})."""
        return local_conditions(self.name, None, (), (), self.logical_ports)

    @property
    def settled(self) -> bool:
        """The replica holds what its rows need: every needed datapath's localports
        were asked (found, or none yet: asked again later) and the monitor's newest
        conditions are acknowledged."""
        answered = set(self.localports.values()) | self._unfound
        return self.datapaths <= answered and bool(self._monitor.conditions_acknowledged)

    def acknowledged(self) -> None:
        """The monitor's conditions were acknowledged (its C{on_conditions})."""
        self._check_settled()

    def _check_settled(self) -> None:
        """C{on_settled} when the replica has become settled since the last check."""
        settled = self.settled
        became, self._was_settled = settled and not self._was_settled, settled
        if became:
            self._on_settled()

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
            local_conditions(
                self.name, self.chassis, self.datapaths, self.localports, self.logical_ports
            )
        )
        self._check_settled()

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
            elif uuids:
                self._unfound.discard(datapath)
            for uuid in uuids:
                self.localports[uuid] = datapath
        if self._unfound:
            self._retry_later()
        self.refresh(self._tables)

    def _not_asked(self, failure: Any, datapaths: list[str]) -> None:
        # not connected, or the connection dropped: the next synchronisation asks
        # again; an error on a live connection: asked again later
        self._asking.difference_update(datapaths)
        if getattr(self._monitor, "synchronised", True):
            self._retry_later()
        self._log.debug(
            "Localports of {count} datapaths not asked: {why}",
            count=len(datapaths),
            why=failure.getErrorMessage(),
        )

    def _retry_later(self) -> None:
        if self._retry_call is None or not self._retry_call.active():
            self._retry_call = self._reactor.callLater(self._retry_interval, self._retry)

    def _retry(self) -> None:
        """Ask again for the datapaths without a localport (they stay answered, so the
        replica stays settled meanwhile) and for those whose C{select} failed."""
        self._retry_call = None
        again = sorted((self._unfound & self.datapaths) - self._asking)
        if again:
            self._ask(again)
        self.refresh(self._tables)
