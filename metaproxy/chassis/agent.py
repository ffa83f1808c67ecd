"""The chassis's OVN metadata agent: who it is, its liveness, and (through a listener)
what it provisions.

    agent = ChassisAgent(reactor, ovs_remotes, sb_remotes, agent_down_time=75)
    agent.on_state = provisioner.request   # called when the SB or OVS copy changed
    agent.start()

  1. The local Open_vSwitch database is monitored; its C{Open_vSwitch} row names the
     chassis (L{metaproxy.chassis.identity}). Without a C{system-id} nothing else
     starts: one error line says what to configure, and the agent waits for it.
  2. With the name, the Southbound database is monitored (this chassis's rows,
     C{SB_Global}, and what this chassis needs: the ports bound here, their networks'
     localports and datapaths, the ports named by the bridges' C{iface-id}s: see
     L{metaproxy.chassis.southbound}; L{metaproxy.ovn_scope.ChassisScope} keeps the
     conditions on them as rows and interfaces come and go); at every synchronisation
     (the first and every reconnection's) the chassis registers
     (L{metaproxy.chassis.registration}) and C{on_state} is called; so also when
     ovn-controller re-creates C{Chassis_Private}.
  3. A changed name or bridge (the operator re-configured the node) restarts step 2.

The copy is L{ready} only while it is I{settled}: the rows that newly needed networks
bring (a condition change, a C{select} for their localports) have arrived. A
provisioning pass on a copy still filling would take a served network for one to tear
down; C{on_state} is called again when the copy settles.

The rows are the monitors' stores (L{ovs_tables}, L{sb_tables}): plain mappings that
the provisioning reads without copying.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from metaproxy.chassis import localovs, southbound
from metaproxy.chassis.identity import ChassisIdentity, IdentityError
from metaproxy.chassis.registration import Registration
from metaproxy.chassis.shapes import METADATA_AGENT, AgentKeys
from metaproxy.ovn_scope import ChassisScope
from metaproxy.ovsdb.data import RowChange, RowStore
from metaproxy.ovsdb.monitor import OvsdbMonitor
from metaproxy.ovsdb.remote import Remote

__all__ = ["ChassisAgent"]

log = Logger("metaproxy.chassis")

_EMPTY: dict[str, dict[str, dict[str, Any]]] = {}


class ChassisAgent:
    """Steps 1 to 3 of the module docstring.

    @param monitor_factory: C{(remotes, database, columns, conditions, **callbacks) ->
        monitor}; tests pass their own. Default: L{OvsdbMonitor} with the timeouts given.
    @param agent_keys: the agent registered as (L{metaproxy.chassis.shapes}).
    """

    def __init__(
        self,
        reactor: Any,
        ovs_remotes: Sequence[Remote],
        sb_remotes: Sequence[Remote],
        *,
        agent_down_time: int = 75,
        sb_tls_options: Any = None,
        ovs_timeout: float = 180.0,
        sb_timeout: float = 180.0,
        probe_interval: float = 60.0,
        retry_max_interval: float = 180.0,
        monitor_factory: Callable[..., Any] | None = None,
        randint: Callable[[int, int], int] | None = None,
        agent_keys: AgentKeys = METADATA_AGENT,
    ) -> None:
        self._reactor = reactor
        self.agent_keys = agent_keys
        self._sb_remotes = tuple(sb_remotes)
        self._agent_down_time = agent_down_time
        self._randint = randint
        if monitor_factory is None:

            def monitor_factory(remotes, database, columns, conditions, **callbacks):
                is_sb = database == southbound.DATABASE
                return OvsdbMonitor(
                    reactor,
                    remotes,
                    database,
                    columns,
                    conditions=conditions,
                    tls_options=sb_tls_options if is_sb else None,
                    timeout=sb_timeout if is_sb else ovs_timeout,
                    probe_interval=probe_interval,
                    retry_max_interval=retry_max_interval,
                    **callbacks,
                )

        self._monitor_factory = monitor_factory
        self.ovs_monitor = monitor_factory(
            tuple(ovs_remotes),
            localovs.DATABASE,
            localovs.OVS_COLUMNS,
            None,
            on_sync=self._ovs_synced,
            on_changes=self._ovs_changed,
            on_down=lambda reason: self._down("Open_vSwitch", reason),
        )
        self.sb_monitor: Any = None
        #: keeps the Southbound monitor's conditions on what this chassis needs
        self.scope: ChassisScope | None = None
        self.identity: ChassisIdentity | None = None
        self.registration: Registration | None = None
        self._ovs_store: RowStore | None = None
        self._sb_store: RowStore | None = None
        self._identity_error = ""
        self._stopping: list[Deferred[None]] = []
        #: called (no arguments) whenever the copies changed in a way provisioning reads
        self.on_state: Callable[[], None] = lambda: None

    # -- what the provisioning reads ----------------------------------------------------

    @property
    def ovs_tables(self) -> dict[str, dict[str, dict[str, Any]]]:
        return self._ovs_store.tables if self._ovs_store is not None else _EMPTY

    @property
    def sb_tables(self) -> dict[str, dict[str, dict[str, Any]]]:
        return self._sb_store.tables if self._sb_store is not None else _EMPTY

    @property
    def ready(self) -> bool:
        """Both copies are synchronised, the chassis is known and the Southbound copy
        holds all this chassis needs (settled)."""
        return (
            self.identity is not None
            and self._ovs_store is not None
            and self._sb_store is not None
            and self.ovs_monitor.synchronised
            and self.sb_monitor is not None
            and self.sb_monitor.synchronised
            and self.scope is not None
            and self.scope.settled
        )

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        log.info(
            "OVN chassis mode: reading this node's chassis from Open_vSwitch at {remotes}",
            remotes=", ".join(map(str, self.ovs_monitor.remotes)),
        )
        self.ovs_monitor.start()

    def stop(self) -> Deferred[Any]:
        if self.registration is not None:
            self.registration.stop()
        if self.scope is not None:
            self.scope.stop()
        stops = [self.ovs_monitor.stop()]
        if self.sb_monitor is not None:
            stops.append(self.sb_monitor.stop())
        return gatherResults(stops, consumeErrors=True)

    # -- Open_vSwitch ------------------------------------------------------------------

    def _ovs_synced(self, store: RowStore) -> None:
        self._ovs_store = store
        self._check_identity()
        self._follow_iface_ids()
        self.on_state()

    def _ovs_changed(self, changes: list[RowChange]) -> None:
        if any(change.table == "Open_vSwitch" for change in changes):
            self._check_identity()
        if any(change.table == "Interface" for change in changes):
            self._follow_iface_ids()
        self.on_state()

    def _follow_iface_ids(self) -> None:
        """Monitor the Southbound ports the bridges' interfaces name (their C{iface-id}):
        a metadata veth is then recognised whichever network it was for."""
        scope = self.scope
        if scope is None:
            return
        iface_ids = localovs.iface_ids(self.ovs_tables)
        if iface_ids != scope.logical_ports:
            scope.logical_ports = iface_ids
            scope.refresh(self.sb_tables)

    def _check_identity(self) -> None:
        try:
            identity = localovs.identity_from_tables(self.ovs_tables)
        except IdentityError as e:
            if str(e) != self._identity_error:
                log.error("OVN chassis mode cannot start: {why}", why=str(e))
            self._identity_error = str(e)
            return
        self._identity_error = ""
        if identity == self.identity:
            return
        if self.identity is not None:
            log.warn(
                "This node's chassis changed from {old} (bridge {old_bridge}) to {new} "
                "(bridge {new_bridge}): registering again",
                old=self.identity.name,
                old_bridge=self.identity.bridge,
                new=identity.name,
                new_bridge=identity.bridge,
            )
        self._use(identity)

    def _use(self, identity: ChassisIdentity) -> None:
        old_monitor, old_registration = self.sb_monitor, self.registration
        if old_registration is not None:
            old_registration.stop()
        if self.scope is not None:
            self.scope.stop()
        if old_monitor is not None:
            old_monitor.stop()
        self.identity = identity
        self._sb_store = None
        iface_ids = localovs.iface_ids(self.ovs_tables)
        monitor = self._monitor_factory(
            self._sb_remotes,
            southbound.DATABASE,
            southbound.sb_columns(),
            southbound.sb_conditions(identity.name, iface_ids),
            on_sync=self._sb_synced,
            on_changes=self._sb_changed,
            on_down=lambda reason: self._down("OVN Southbound", reason),
            on_conditions=self._sb_acknowledged,
        )
        self.sb_monitor = monitor
        self.scope = ChassisScope(
            self._reactor, monitor, identity.name, log=log, on_settled=self._sb_settled
        )
        self.scope.logical_ports = iface_ids
        self.registration = Registration(
            self._reactor,
            monitor.transact,
            identity,
            agent_down_time=self._agent_down_time,
            randint=self._randint,
            keys=self.agent_keys,
        )
        log.info(
            "OVN chassis {chassis} (bridge {bridge}): connecting to the Southbound at {remotes}",
            chassis=identity.name,
            bridge=identity.bridge,
            remotes=", ".join(map(str, self._sb_remotes)),
        )
        monitor.start()

    # -- Southbound ----------------------------------------------------------------------

    def _sb_synced(self, store: RowStore) -> None:
        self._sb_store = store
        if self.scope is not None:
            self.scope.refresh(store.tables)
        self._register()
        self.on_state()

    def _sb_acknowledged(self) -> None:
        if self.scope is not None:
            self.scope.acknowledged()

    def _sb_settled(self) -> None:
        """The copy holds what this chassis needs: a pass withheld while it was filling
        may run now."""
        self.on_state()

    def _register(self, row: Any = None) -> Deferred[None]:
        identity, registration = self.identity, self.registration
        if identity is None or registration is None:
            return succeed(None)
        if row is None:
            row = southbound.own_chassis_private(self.sb_tables, identity.name)
        if row is None:
            log.warn(
                "No Chassis_Private row {chassis} in the Southbound yet: is ovn-controller "
                "running on this node? Registering when it appears",
                chassis=identity.name,
            )
            return succeed(None)
        return registration.register(int(row.get("nb_cfg", 0)))

    def _sb_changed(self, changes: list[RowChange]) -> None:
        registration = self.registration
        if self.scope is not None:
            self.scope.refresh(self.sb_tables, changes)
        provisioning = False
        for change in changes:
            if change.table == "SB_Global":
                old, new = change.old, change.new
                if (
                    registration is not None
                    and new is not None
                    and old is not None
                    and old.get("nb_cfg") != new.get("nb_cfg")
                ):
                    registration.nb_cfg_changed(int(new.get("nb_cfg", 0)))
            elif change.table == "Chassis_Private":
                if change.old is None and change.new is not None:
                    log.info(
                        "Chassis_Private {chassis} created (ovn-controller restarted?): "
                        "registering again and resynchronising",
                        chassis=change.new.get("name"),
                    )
                    self._register(change.new)
                    provisioning = True
            else:
                provisioning = True
        if provisioning:
            self.on_state()

    def _down(self, database: str, reason: str) -> None:
        log.warn(
            "OVN chassis mode: {database} {reason}; resynchronising when it is back",
            database=database,
            reason=reason,
        )
