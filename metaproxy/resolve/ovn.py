"""The OVN lookup backend: a replica of the OVN Southbound database's C{Port_Binding},
C{Datapath_Binding} and C{Chassis} tables, kept by L{metaproxy.ovsdb.monitor}, and an
index of it that answers every lookup from memory.

The OVN metadata agent's rules (docs/upstream.md, "OVN lookups"), applied when rows change rather
than on every request:

  - a port identifies an instance only when it is bound (C{chassis} set) and has a
    C{mac} entry; its first entry (in the set's sorted order) is C{"MAC IP1 IP2 ..."};
  - its network is its datapath's C{external_ids:name} without the C{neutron-} prefix;
  - instance and project are C{external_ids:neutron:device_id} and
    C{neutron:project_id};
  - a router's networks are those of the ports whose C{neutron:device_owner} is a router
    interface owner and whose C{neutron:device_id} is the router (bound or not: they are
    OVN patch ports).

More than one port for a key is logged with the advice upstream gives (run
C{neutron-ovn-db-sync-util}), once per key and set of ports.

Lookups are answered only while the replica is the current copy of a usable member
(L{metaproxy.ovsdb.monitor}: connected, and for a cluster member, connected to its
cluster and not behind): before the first synchronisation, after the connection is
lost, and while the only members in reach are refused, every lookup fails with
L{LookupUnavailable} (503 with C{Retry-After}) saying why, never from a copy that may be
stale. A reconnect asks for the changes since the last transaction seen, applied to the
index row by row; a full copy (the first one, or when the server no longer has those
changes) replaces the index in one step: a new index, built a slice of rows per
reactor turn (L{metaproxy.ovsdb.slices}) while lookups answer 503, the changes that
arrive meanwhile applied to it in order once it is whole.

In the OVN chassis mode (C{chassis} given, or later through L{OvnBackend.use_chassis})
the replica is chassis-local: only this chassis's bound ports, the localports of their
networks and those networks' datapaths (L{metaproxy.ovn_scope}); the
conditions follow the ports as they arrive and leave. Proxy mode keeps the wider
replica above (every bound port and router interface of the cloud).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.logger import Logger

from metaproxy.ovn_scope import ChassisScope, local_conditions
from metaproxy.ovsdb.data import RowChange, RowStore
from metaproxy.ovsdb.monitor import OvsdbMonitor
from metaproxy.ovsdb.remote import Remote
from metaproxy.ovsdb.samples import monitor_samples
from metaproxy.ovsdb.slices import ROWS_PER_SLICE, run_in_slices
from metaproxy.resolve.base import ROUTER_INTERFACE_OWNERS, LookupUnavailable, Port

__all__ = [
    "SB_COLUMNS",
    "SB_LOCAL_COLUMNS",
    "SB_CONDITIONS",
    "OvnIndex",
    "OvnBackend",
    "port_from_row",
]

log = Logger("metaproxy.resolve.ovn")

DATABASE = "OVN_Southbound"
#: The columns monitored, per table.
SB_COLUMNS: dict[str, list[str]] = {
    "Port_Binding": ["logical_port", "datapath", "chassis", "mac", "type", "external_ids"],
    "Datapath_Binding": ["external_ids"],
    "Chassis": ["name", "hostname"],
}
#: The columns of the chassis-local replica: also where a live migration lands.
SB_LOCAL_COLUMNS: dict[str, list[str]] = {
    **SB_COLUMNS,
    "Port_Binding": [*SB_COLUMNS["Port_Binding"], "additional_chassis"],
}
#: Port_Binding rows that matter: bound ones, and router interfaces (any clause holds).
SB_CONDITIONS: dict[str, list[Any]] = {
    "Port_Binding": [["chassis", "!=", ["set", []]]]
    + [
        ["external_ids", "includes", ["map", [["neutron:device_owner", owner]]]]
        for owner in ROUTER_INTERFACE_OWNERS
    ],
}
_INTERFACE_OWNERS = frozenset(ROUTER_INTERFACE_OWNERS)
_SYNC_ADVICE = (
    "Please run the neutron-ovn-db-sync-util script as there seems to be "
    "inconsistent data between Neutron and OVN databases"
)


def network_of(datapath_row: Mapping[str, Any]) -> str:
    """The Neutron network id of a C{Datapath_Binding} row ("" when it has none)."""
    name = datapath_row.get("external_ids", {}).get("name", "")
    return name.removeprefix("neutron-")


def _first_mac_entry(row: Mapping[str, Any]) -> tuple[str, tuple[str, ...]] | None:
    macs = row.get("mac") or ()
    if not macs:
        return None
    tokens = str(macs[0]).split()
    if not tokens:
        return None
    ips = []
    for token in tokens[1:]:
        try:
            ips.append(ipaddress.ip_address(token).compressed)
        except ValueError:
            continue  # "dynamic", "unknown" or a typo: not an address
    return tokens[0].lower(), tuple(ips)


def port_from_row(row: Mapping[str, Any], network_id: str) -> Port:
    """The L{Port} a C{Port_Binding} row describes on C{network_id}."""
    external = row.get("external_ids", {})
    entry = _first_mac_entry(row)
    mac, ips = entry if entry is not None else ("", ())
    return Port(
        id=str(row.get("logical_port", "")),
        network_id=network_id,
        mac_address=mac,
        fixed_ips=ips,
        device_id=external.get("neutron:device_id", ""),
        project_id=external.get("neutron:project_id", ""),
        device_owner=external.get("neutron:device_owner", ""),
    )


class _Entry:
    """What one Port_Binding row contributes to the index."""

    __slots__ = ("row", "datapath", "keys_ip", "keys_mac", "router", "network", "port")

    def __init__(self, row: Mapping[str, Any]) -> None:
        self.row = row
        self.datapath: str = row.get("datapath") or ""
        self.keys_ip: tuple[tuple[str, str], ...] = ()
        self.keys_mac: tuple[str, str] | None = None
        self.router = ""
        self.network = ""
        self.port: Port | None = None


class OvnIndex:
    """Bound ports by (network, IP) and (network, MAC), and routers' networks, kept up to
    date row by row. Plain object: feed it rows, ask it questions."""

    def __init__(self) -> None:
        self._networks: dict[str, str] = {}  # datapath uuid -> network id
        self._entries: dict[str, _Entry] = {}  # port binding uuid -> entry
        self._on_datapath: dict[str, set[str]] = {}  # datapath uuid -> port binding uuids
        self._by_ip: dict[tuple[str, str], dict[str, Port]] = {}
        self._by_mac: dict[tuple[str, str], dict[str, Port]] = {}
        self._routers: dict[str, dict[str, str]] = {}  # router -> {pb uuid: network}
        self.chassis = 0

    @classmethod
    def from_store(cls, store: RowStore) -> OvnIndex:
        index = cls()
        for _ in index.fill(store):
            pass
        return index

    def fill(self, store: RowStore, rows: int = ROWS_PER_SLICE) -> Iterator[None]:
        """Index the rows of C{store} as they are now (the store may change between
        the slices: those changes are for L{apply} after it), yielding after each
        C{rows} rows (L{metaproxy.ovsdb.slices.run_in_slices})."""
        datapaths = list(store.tables.get("Datapath_Binding", {}).items())
        ports = list(store.tables.get("Port_Binding", {}).items())
        self.chassis = len(store.tables.get("Chassis", {}))
        count = 0
        for uuid, row in datapaths:
            if count == rows:
                yield
                count = 0
            self.set_datapath(uuid, row)
            count += 1
        for uuid, row in ports:
            if count == rows:
                yield
                count = 0
            self.set_port(uuid, row)
            count += 1

    def apply(self, changes: Iterable[RowChange]) -> None:
        for change in changes:
            if change.table == "Port_Binding":
                self.set_port(change.uuid, change.new)
            elif change.table == "Datapath_Binding":
                self.set_datapath(change.uuid, change.new)
            elif change.table == "Chassis":
                self.chassis += (change.new is not None) - (change.old is not None)

    # rows

    def set_datapath(self, uuid: str, row: Mapping[str, Any] | None) -> None:
        network = network_of(row) if row is not None else ""
        if row is None:
            self._networks.pop(uuid, None)
        elif self._networks.get(uuid) == network:
            return
        else:
            self._networks[uuid] = network
        for port_uuid in list(self._on_datapath.get(uuid, ())):
            self.set_port(port_uuid, self._entries[port_uuid].row)

    def set_port(self, uuid: str, row: Mapping[str, Any] | None) -> None:
        old = self._entries.pop(uuid, None)
        if old is not None:
            self._remove(uuid, old)
        if row is None:
            return
        entry = _Entry(row)
        self._entries[uuid] = entry
        if entry.datapath:
            self._on_datapath.setdefault(entry.datapath, set()).add(uuid)
        network = self._networks.get(entry.datapath, "")
        if not network:
            return  # its datapath is not (yet) known, or not a Neutron network
        entry.network = network
        external = row.get("external_ids", {})
        if external.get("neutron:device_owner") in _INTERFACE_OWNERS:
            router = external.get("neutron:device_id", "")
            if router:
                entry.router = router
                self._routers.setdefault(router, {})[uuid] = network
        if not row.get("chassis"):
            return  # not bound: identifies nobody
        port = port_from_row(row, network)
        if not port.mac_address:
            return
        entry.port = port
        entry.keys_ip = tuple((network, ip) for ip in port.fixed_ips)
        entry.keys_mac = (network, port.mac_address)
        for key in entry.keys_ip:
            self._by_ip.setdefault(key, {})[uuid] = port
        self._by_mac.setdefault(entry.keys_mac, {})[uuid] = port

    def _remove(self, uuid: str, entry: _Entry) -> None:
        on_datapath = self._on_datapath.get(entry.datapath)
        if on_datapath is not None:
            on_datapath.discard(uuid)
            if not on_datapath:
                del self._on_datapath[entry.datapath]
        if entry.router:
            ports = self._routers[entry.router]
            del ports[uuid]
            if not ports:
                del self._routers[entry.router]
        for key in entry.keys_ip:
            _discard(self._by_ip, key, uuid)
        if entry.keys_mac is not None:
            _discard(self._by_mac, entry.keys_mac, uuid)

    # questions

    @property
    def bound_ports(self) -> int:
        return sum(1 for entry in self._entries.values() if entry.port is not None)

    @property
    def networks(self) -> int:
        return len(set(self._networks.values()) - {""})

    def router_networks(self, router_id: str) -> tuple[str, ...]:
        ports = self._routers.get(router_id)
        return tuple(ports.values()) if ports else ()

    def ports_by_ip(self, networks: Sequence[str], ip: str) -> list[Port]:
        return _find(self._by_ip, networks, ip)

    def ports_by_mac(self, networks: Sequence[str], mac: str) -> list[Port]:
        return _find(self._by_mac, networks, mac.lower())


def _discard(
    index: dict[tuple[str, str], dict[str, Port]], key: tuple[str, str], uuid: str
) -> None:
    ports = index.get(key)
    if ports is not None:
        ports.pop(uuid, None)
        if not ports:
            del index[key]


def _find(
    index: Mapping[tuple[str, str], dict[str, Port]], networks: Sequence[str], value: str
) -> list[Port]:
    found: list[Port] = []
    for network in dict.fromkeys(networks):
        ports = index.get((network, value))
        if ports:
            found.extend(ports.values())
    return found


class OvnBackend:
    """L{metaproxy.resolve.base.ManagedBackend} on the OVN Southbound database.

    @param monitor_factory: builds the L{OvsdbMonitor} (tests pass their own); called
        with the keyword arguments C{on_sync}, C{on_changes}, C{on_down}, C{on_resumed},
        and in the chassis-local mode also C{columns} and C{conditions}.
    @param local: the chassis-local replica (the chassis mode): only what chassis
        C{chassis} needs. Without C{chassis}, nothing is monitored until
        L{use_chassis} names it.
    @param name_source: started and stopped with the backend (what calls
        L{use_chassis}: L{metaproxy.resolve.ovn_local.ChassisName}'s monitor).
    @param rows_per_slice: the rows of a full copy indexed per reactor turn (a large
        copy is indexed over many turns, answering 503 until it is whole).

    @ivar index: the last index built (kept while the replica is not current, to apply
        the changes of a resumed connection to).
    """

    name = "OVN Southbound"
    #: answers come from a replica kept current by the server's notifications: a TTL
    #: cache in front would only make them stale
    answers_from_memory = True

    def __init__(
        self,
        reactor: Any,
        remotes: Sequence[Remote],
        *,
        tls_options: Any = None,
        timeout: float = 180.0,
        probe_interval: float = 60.0,
        retry_max_interval: float = 180.0,
        monitor_factory: Any = None,
        local: bool = False,
        chassis: str = "",
        name_source: Any = None,
        local_retry_interval: float = 5.0,
        rows_per_slice: int = ROWS_PER_SLICE,
    ) -> None:
        self._reactor = reactor
        self._rows_per_slice = rows_per_slice
        self._remotes = tuple(remotes)
        self._local = local or bool(chassis)
        self._name_source = name_source
        self._started = False
        self._store: RowStore | None = None
        self.index: OvnIndex | None = None
        # the index while it is current, else None: what lookups answer from
        self._live: OvnIndex | None = None
        # a full copy's index being built in slices, the changes that came meanwhile
        # (applied to it in order once built), and whether the replica is current
        self._building: Deferred[None] | None = None
        self._pending: list[list[RowChange]] = []
        self._current = False
        self._not_live = (
            f"OVN Southbound not synchronised yet (connecting to {', '.join(map(str, remotes))})"
        )
        self._warned: dict[tuple[str, tuple[str, ...], str], tuple[str, ...]] = {}
        callbacks = dict(
            on_sync=self._synchronised,
            on_changes=self._changed,
            on_down=self._down,
            on_resumed=self._resumed,
        )
        columns, conditions = SB_COLUMNS, SB_CONDITIONS
        if self._local:
            # this chassis's row only, until the scope knows more
            columns, conditions = SB_LOCAL_COLUMNS, local_conditions(chassis, None, (), ())
        if monitor_factory is None:
            self.monitor: Any = OvsdbMonitor(
                reactor,
                remotes,
                DATABASE,
                columns,
                conditions=conditions,
                tls_options=tls_options,
                timeout=timeout,
                probe_interval=probe_interval,
                retry_max_interval=retry_max_interval,
                **callbacks,
            )
        elif self._local:
            self.monitor = monitor_factory(columns=columns, conditions=conditions, **callbacks)
        else:
            self.monitor = monitor_factory(**callbacks)
        #: what this chassis needs (the chassis-local replica), else None
        self.scope: ChassisScope | None = None
        if self._local:
            self.scope = ChassisScope(
                reactor, self.monitor, chassis, retry_interval=local_retry_interval, log=log
            )
            if not chassis:
                self._not_live = "OVN Southbound: waiting for this chassis's name (system-id)"

    # lifecycle (ManagedBackend)

    def start(self) -> None:
        self._started = True
        if self._name_source is not None:
            self._name_source.start()
        if self.scope is not None and not self.scope.name:
            return  # use_chassis starts the Southbound monitor
        self._start_monitor()

    def _start_monitor(self) -> None:
        scope = "" if self.scope is None else f" (the replica of chassis {self.scope.name})"
        log.info(
            "Connecting to OVN Southbound at {remotes}{scope}",
            remotes=", ".join(map(str, self._remotes)),
            scope=scope,
        )
        self.monitor.start()

    def use_chassis(self, name: str) -> None:
        """Hold what chassis C{name} needs from now on (the chassis-local replica)."""
        scope = self.scope
        if scope is None or name == scope.name:
            return
        first = not scope.name
        scope.name = name
        scope.localports.clear()
        if first:
            self.monitor.set_conditions(scope.initial())
            if self._started:
                self._start_monitor()
        elif self._store is not None:
            scope.refresh(self._store.tables)
        else:
            self.monitor.set_conditions(scope.initial())

    def stop(self) -> Deferred[None]:
        self._started = False
        self._stop_building()
        if self.scope is not None:
            self.scope.stop()
        if self._name_source is not None:
            self._name_source.stop()
        return self.monitor.stop()

    def ready(self) -> bool:
        return self._live is not None

    def describe(self) -> str:
        where = ", ".join(map(str, self._remotes))
        index = self.index
        if index is None:
            return f"OVN Southbound at {where} (not synchronised yet)"
        if self.scope is not None:
            where = f"{where}, chassis {self.scope.name} only"
        state = "" if self._live is not None else "; not current, answering 503"
        return (
            f"OVN Southbound at {where} ({index.bound_ports} bound ports on "
            f"{index.networks} networks, {index.chassis} chassis{state})"
        )

    def metric_samples(self) -> list[Any]:
        """The Southbound connection's metrics (L{metaproxy.ovsdb.samples})."""
        return monitor_samples(DATABASE, self.monitor)

    # monitor callbacks

    def _synchronised(self, store: RowStore) -> None:
        # a large copy is indexed a slice of rows per reactor turn: lookups answer 503
        # until it is whole, and the changes that come meanwhile wait for it
        self._stop_building()
        self._store = store
        self._live = None
        self._not_live = self._indexing()
        self._current = True
        self._warned.clear()
        if self.scope is not None:
            self.scope.refresh(store.tables)
        index = OvnIndex()
        building = run_in_slices(self._reactor, index.fill(store, self._rows_per_slice))
        if not building.called:
            self._building = building
        building.addCallback(lambda _: self._built(building, index))
        building.addErrback(self._build_failed, building)

    def _indexing(self) -> str:
        return (
            f"OVN Southbound: indexing the full copy from {self.monitor.remote}; "
            "answering once it is whole"
        )

    def _stop_building(self) -> None:
        """Drop the index being built (a newer full copy replaces it, or stopped)."""
        if self._building is not None:
            building, self._building = self._building, None
            building.cancel()
        self._pending = []

    def _build_failed(self, failure: Any, building: Deferred[None]) -> None:
        if failure.check(CancelledError):
            return  # a newer full copy replaced it, or the backend stopped
        if self._building is building:
            self._building = None
        # the last index built is older than the replica now: never answered from (nor
        # made live by a resumption); a full copy is asked for again
        self.index = self._live = None
        self._pending = []
        self._not_live = "OVN Southbound: the full copy could not be indexed; resynchronising"
        log.failure("OVN Southbound: the index of the full copy could not be built", failure)
        self.monitor.resynchronise("the index of the full copy could not be built")

    def _built(self, building: Deferred[None], index: OvnIndex) -> None:
        if self._building is building:
            self._building = None
        pending, self._pending = self._pending, []
        for changes in pending:
            index.apply(changes)
        self.index = index
        if self._current:
            self._live = index
        log.info(
            "OVN Southbound synchronised from {remote}: {ports} bound ports on "
            "{networks} networks, {chassis} chassis",
            remote=str(self.monitor.remote),
            ports=self.index.bound_ports,
            networks=self.index.networks,
            chassis=self.index.chassis,
        )

    def _changed(self, changes: list[RowChange]) -> None:
        if self._building is not None:
            self._pending.append(changes)
        elif self.index is not None:
            self.index.apply(changes)
        if self.scope is not None and self._store is not None:
            self.scope.refresh(self._store.tables, changes)

    def _resumed(self, changes: list[RowChange]) -> None:
        self._current = True
        if self._building is not None:
            # the index of the full copy these changes follow is not built yet
            self._pending.append(changes)
            self._not_live = self._indexing()
            if self.scope is not None and self._store is not None:
                self.scope.refresh(self._store.tables, changes)
            return
        index = self.index
        if index is None:  # its full copy could not be indexed: another one follows
            return
        index.apply(changes)
        self._live = index
        if self.scope is not None and self._store is not None:
            self.scope.refresh(self._store.tables, changes)
        log.info(
            "OVN Southbound resumed from {remote}: {changes} changed rows since the last "
            "transaction seen (no full copy); {ports} bound ports on {networks} networks",
            remote=str(self.monitor.remote),
            changes=len(changes),
            ports=index.bound_ports,
            networks=index.networks,
        )

    def _down(self, reason: str) -> None:
        self._live = None
        self._current = False
        self._not_live = f"OVN Southbound not current: {reason}; waiting for a usable member"
        log.warn(
            "OVN Southbound {reason}; answering 503 until a usable member is synchronised",
            reason=reason,
        )

    # lookups (PortBackend)

    def _unavailable(self) -> Deferred[Any]:
        return fail(LookupUnavailable(self._not_live))

    # The Deferred lookups are the in-memory answers below, or 503 while not current.

    def router_networks(self, router_id: str) -> Deferred[tuple[str, ...]]:
        found = self.router_networks_now(router_id)
        return self._unavailable() if found is None else succeed(found)

    def ports_by_ip(self, networks: Sequence[str], ip: str) -> Deferred[list[Port]]:
        found = self.ports_by_ip_now(networks, ip)
        return self._unavailable() if found is None else succeed(found)

    def ports_by_mac(self, networks: Sequence[str], mac: str) -> Deferred[list[Port]]:
        found = self.ports_by_mac_now(networks, mac)
        return self._unavailable() if found is None else succeed(found)

    # The same answers without a Deferred (metaproxy.resolve.cache, "Answers now"); None
    # while the replica is not current, so that the Deferred path answers 503.

    def router_networks_now(self, router_id: str) -> tuple[str, ...] | None:
        index = self._live
        return None if index is None else index.router_networks(router_id)

    def ports_by_ip_now(self, networks: Sequence[str], ip: str) -> list[Port] | None:
        index = self._live
        if index is None:
            return None
        found = index.ports_by_ip(networks, ip)
        if len(found) > 1:
            self._several(networks, "IP address", ip, found)
        return found

    def ports_by_mac_now(self, networks: Sequence[str], mac: str) -> list[Port] | None:
        index = self._live
        if index is None:
            return None
        found = index.ports_by_mac(networks, mac)
        if len(found) > 1:
            self._several(networks, "MAC address", mac, found)
        return found

    def _several(self, networks: Sequence[str], what: str, value: str, found: list[Port]) -> None:
        key = (what, tuple(networks), value)
        ids = tuple(sorted(port.id for port in found))
        if self._warned.get(key) == ids:
            return  # said already for these ports
        if len(self._warned) >= 10_000:
            self._warned.clear()
        self._warned[key] = ids
        log.error(
            "More than one port found in network {networks} with {what} {value}. "
            "{advice}. OVN Port uuids: {ids}",
            networks=", ".join(networks),
            what=what,
            value=value,
            advice=_SYNC_ADVICE,
            ids=", ".join(ids),
        )
