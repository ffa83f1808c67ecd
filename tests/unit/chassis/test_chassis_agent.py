"""metaproxy.chassis.agent: identity from Open_vSwitch, then the Southbound monitor and
the registration, with in-memory monitors."""

from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from metaproxy.chassis.agent import ChassisAgent
from metaproxy.chassis.plan import metadata_logical_ports, plan_networks
from metaproxy.ovsdb.data import RowChange
from metaproxy.ovsdb.remote import parse_remotes


class FakeStore:
    def __init__(self, tables):
        self.tables = tables


def _value(value):
    return value[1] if isinstance(value, list) and value[:1] == ["uuid"] else value


def _refs(value):
    if value in ((), None, ""):
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def holds(uuid, row, clause):
    """One monitor-condition clause on a row (ovsdb-server(7)): C{true}/C{false}, C{==}
    on a column (a reference is C{["uuid", U]}; an optional one matches its only
    element), C{includes} on a set."""
    if clause in (True, False):
        return clause
    column, function, value = clause
    have = uuid if column == "_uuid" else row.get(column)
    want = _value(value)
    if function == "==":
        return have == want or _refs(have) == (want,)
    if function == "includes":
        return want in _refs(have)
    raise AssertionError(f"the fake does not know {function}")


class FakeMonitor:
    """A Southbound (or Open_vSwitch) session: C{server} holds every row; the replica
    holds those that the acknowledged conditions select (a table without conditions:
    all its rows; with: the rows for which any clause holds). A condition change takes
    effect when the test says the server answered it (L{ack})."""

    def __init__(
        self,
        remotes,
        database,
        columns,
        conditions,
        on_sync,
        on_changes,
        on_down,
        on_conditions=lambda: None,
    ):
        self.remotes, self.database = remotes, database
        self.columns, self.conditions = columns, dict(conditions or {})
        self.acked = dict(self.conditions)
        self.on_sync, self.on_changes = on_sync, on_changes
        self.on_conditions = on_conditions
        self.synchronised = False
        self.started = self.stopped = False
        self.transactions = []
        self.server = {}

    def start(self):
        self.started = True

    def stop(self):
        self.stopped = True
        return succeed(None)

    @property
    def conditions_acknowledged(self):
        return self.synchronised and self.acked == self.conditions

    def set_conditions(self, conditions):
        self.conditions = {**self.conditions, **conditions}

    def _selected(self):
        return {
            table: {
                uuid: dict(row)
                for uuid, row in rows.items()
                if table not in self.acked
                or not self.acked[table]
                or any(holds(uuid, row, c) for c in self.acked[table])
            }
            for table, rows in self.server.items()
        }

    def _follow(self):
        """The rows that entered or left the replica, as one notification."""
        new = self._selected()
        changes = []
        for table in new:
            old_rows = self.store.tables.setdefault(table, {})
            for uuid in old_rows.keys() - new[table].keys():
                changes.append(RowChange(table, uuid, old_rows.pop(uuid), None))
            for uuid, row in new[table].items():
                if old_rows.get(uuid) != row:
                    changes.append(RowChange(table, uuid, old_rows.get(uuid), row))
                    old_rows[uuid] = row
        if changes:
            self.on_changes(changes)

    def sync(self, tables):
        """A full copy of C{tables} (the server's rows) with the conditions asked."""
        self.server = {table: dict(rows) for table, rows in tables.items()}
        self.acked = dict(self.conditions)
        self.synchronised = True
        self.store = FakeStore(self._selected())
        self.on_sync(self.store)

    def ack(self):
        """The server answers the condition change: rows enter and leave, then the
        reply."""
        while self.acked != self.conditions:
            self.acked = dict(self.conditions)
            self._follow()
            self.on_conditions()

    def change(self, *changes):
        """Rows change on the server: the replica follows for the rows selected."""
        for c in changes:
            rows = self.server.setdefault(c.table, {})
            if c.new is None:
                rows.pop(c.uuid, None)
            else:
                rows[c.uuid] = c.new
        self._follow()

    def transact(self, ops, must_match=()):
        self.transactions.append(ops)
        results = []
        for op in ops:
            if op["op"] == "select":
                rows = self.server.get(op["table"], {})
                found = [
                    {"_uuid": ["uuid", uuid]}
                    for uuid, row in rows.items()
                    if all(holds(uuid, row, c) for c in op["where"])
                ]
                results.append({"rows": found})
            else:
                results.append({"count": 1})
        return succeed(results)


class Harness:
    def __init__(self):
        self.monitors = []
        self.clock = Clock()
        self.states = 0

        def factory(*args, **kw):
            monitor = FakeMonitor(*args, **kw)
            self.monitors.append(monitor)
            return monitor

        self.agent = ChassisAgent(
            self.clock,
            parse_remotes("unix:/run/ovs.sock"),
            parse_remotes("tcp:127.0.0.1:6642"),
            monitor_factory=factory,
            randint=lambda a, b: 0,
        )
        self.agent.on_state = self.count
        self.agent.start()

    def count(self):
        self.states += 1

    @property
    def ovs(self):
        return self.monitors[0]

    @property
    def sb(self):
        return self.monitors[-1]


def ovs_tables(**external_ids):
    return {
        "Open_vSwitch": {"o1": {"external_ids": external_ids}},
        "Bridge": {},
        "Port": {},
        "Interface": {},
    }


def sb_tables(nb_cfg=4):
    return {
        "Chassis": {"c1": {"name": "compute-1", "hostname": "compute-1"}},
        "Chassis_Private": {
            "p1": {"name": "compute-1", "chassis": "c1", "nb_cfg": nb_cfg, "external_ids": {}}
        },
        "SB_Global": {"g1": {"nb_cfg": nb_cfg}},
        "Port_Binding": {},
        "Datapath_Binding": {},
    }


def sb_cfg_written(monitor):
    written = []
    for ops in monitor.transactions:
        for op in ops:
            for _column, mutator, value in op.get("mutations", ()):
                if mutator == "insert":
                    written.extend(v for k, v in value[1] if k == "neutron:ovn-metadata-sb-cfg")
    return written


def test_without_system_id_the_southbound_is_not_monitored() -> None:
    h = Harness()
    assert h.ovs.database == "Open_vSwitch" and h.ovs.started
    h.ovs.sync(ovs_tables(hostname="x"))
    assert len(h.monitors) == 1 and h.agent.identity is None and not h.agent.ready


def test_the_southbound_is_monitored_for_this_chassis_and_registration_follows() -> None:
    h = Harness()
    h.ovs.sync(ovs_tables(**{"system-id": "compute-1"}))
    assert h.sb.database == "OVN_Southbound" and h.sb.started
    assert h.sb.conditions["Chassis_Private"] == [["name", "==", "compute-1"]]
    h.sb.sync(sb_tables(nb_cfg=4))
    # the chassis's uuid is known now: the ports bound to it are asked for next
    assert not h.agent.ready
    h.sb.ack()
    assert h.agent.ready
    assert sb_cfg_written(h.sb) == ["4"]

    h.sb.change(RowChange("SB_Global", "g1", {"nb_cfg": 4}, {"nb_cfg": 5}))
    h.clock.advance(0)
    assert sb_cfg_written(h.sb) == ["4", "5"]

    # ovn-controller re-created its row: registered again, with the new row's nb_cfg
    row = {"name": "compute-1", "chassis": "c1", "nb_cfg": 0, "external_ids": {}}
    h.sb.change(RowChange("Chassis_Private", "p2", None, row))
    assert sb_cfg_written(h.sb) == ["4", "5", "0"]


def test_port_changes_ask_for_provisioning_and_nb_cfg_changes_do_not() -> None:
    h = Harness()
    h.ovs.sync(ovs_tables(**{"system-id": "compute-1"}))
    h.sb.sync(sb_tables())
    h.sb.ack()
    before = h.states
    h.sb.change(RowChange("SB_Global", "g1", {"nb_cfg": 4}, {"nb_cfg": 5}))
    assert h.states == before
    h.sb.change(RowChange("Port_Binding", "pb1", None, {"logical_port": "p", "chassis": "c1"}))
    assert h.states == before + 1


def test_a_new_chassis_name_restarts_the_southbound_monitor() -> None:
    h = Harness()
    h.ovs.sync(ovs_tables(**{"system-id": "compute-1"}))
    first = h.sb
    new = {"external_ids": {"system-id": "compute-2", "ovn-bridge": "br-x"}}
    h.ovs.change(RowChange("Open_vSwitch", "o1", {"external_ids": {}}, new))
    assert first.stopped and h.sb is not first
    assert h.sb.conditions["Chassis"] == [["name", "==", "compute-2"]]
    assert h.agent.identity.bridge == "br-x"


# The chassis-local copy: the Southbound holds a cloud; the agent's copy holds this
# chassis's ports, their networks' localports and datapaths, and the ports the bridge's
# interfaces name. Rows as the monitor hands them: references are uuid strings, an
# optional reference () when empty.

NET_A, NET_B, NET_C = "aaaaaaaa-0000-0000-0000-000000000001", "bbbb", "cccc"


def vif(datapath, chassis=(), additional=(), mac="fa:16:3e:00:00:01 10.0.0.5", name="vm"):
    return {
        "logical_port": name,
        "datapath": datapath,
        "chassis": chassis,
        "additional_chassis": additional,
        "mac": [mac],
        "type": "",
        "external_ids": {},
    }


def metadata_port(datapath, name):
    return {
        "logical_port": name,
        "datapath": datapath,
        "chassis": (),
        "additional_chassis": (),
        "mac": ["fa:16:3e:11:11:11 10.0.0.2"],
        "type": "localport",
        "external_ids": {
            "neutron:device_owner": "network:distributed",
            "neutron:cidrs": "10.0.0.2/24",
        },
    }


def cloud():
    tables = sb_tables()
    tables["Chassis"]["c2"] = {"name": "compute-2", "hostname": "compute-2"}
    tables["Chassis_Private"]["p9"] = {
        "name": "compute-2",
        "chassis": "c2",
        "nb_cfg": 4,
        "external_ids": {},
    }
    tables["Datapath_Binding"] = {
        dp: {"external_ids": {"name": f"neutron-{net}"}}
        for dp, net in (("dA", NET_A), ("dB", NET_B), ("dC", NET_C))
    }
    tables["Port_Binding"] = {
        "vmA": vif("dA", chassis="c1", name="vm-a"),
        "vmB": vif("dB", chassis="c2", name="vm-b"),
        "vmC": vif("dC", chassis="c2", name="vm-c"),
        "mA": metadata_port("dA", "meta-a"),
        "mB": metadata_port("dB", "meta-b"),
        "mC": metadata_port("dC", "meta-c"),
    }
    return tables


def settled_harness(interfaces=None):
    h = Harness()
    tables = ovs_tables(**{"system-id": "compute-1"})
    tables["Interface"] = interfaces or {}
    h.ovs.sync(tables)
    h.sb.sync(cloud())
    h.sb.ack()
    return h


def test_the_copy_holds_this_chassiss_ports_their_localports_and_datapaths_only() -> None:
    h = settled_harness()
    assert h.agent.ready
    tables = h.agent.sb_tables
    assert set(tables["Port_Binding"]) == {"vmA", "mA"}
    assert set(tables["Datapath_Binding"]) == {"dA"}
    assert set(tables["Chassis"]) == {"c1"}
    assert set(tables["Chassis_Private"]) == {"p1"}
    assert set(tables["SB_Global"]) == {"g1"}
    assert set(plan_networks(tables, "compute-1")) == {NET_A}


def test_a_port_bound_here_is_planned_once_its_network_has_come() -> None:
    h = settled_harness()
    before = h.states
    h.sb.change(RowChange("Port_Binding", "vmB", None, vif("dB", chassis="c1", name="vm-b")))
    # its network's datapath and localport are asked for: no pass on the half copy
    assert not h.agent.ready
    h.sb.ack()
    assert h.agent.ready and h.states > before
    assert set(h.agent.sb_tables["Port_Binding"]) == {"vmA", "mA", "vmB", "mB"}
    assert set(plan_networks(h.agent.sb_tables, "compute-1")) == {NET_A, NET_B}


def test_a_live_migrations_destination_plans_the_network_before_the_instance_lands() -> None:
    h = settled_harness()
    moving = vif("dC", chassis="c2", additional=("c1",), name="vm-c")
    h.sb.change(RowChange("Port_Binding", "vmC", None, moving))
    h.sb.ack()
    assert h.agent.ready
    assert set(plan_networks(h.agent.sb_tables, "compute-1")) == {NET_A, NET_C}


def test_the_last_port_leaving_takes_its_network_away() -> None:
    h = settled_harness()
    h.sb.change(RowChange("Port_Binding", "vmA", None, vif("dA", chassis="c2", name="vm-a")))
    h.sb.ack()
    assert h.agent.ready
    assert h.agent.sb_tables["Port_Binding"] == {}
    assert h.agent.sb_tables["Datapath_Binding"] == {}
    assert plan_networks(h.agent.sb_tables, "compute-1") == {}


def test_a_metadata_veth_on_the_bridge_is_known_whatever_its_network() -> None:
    # a veth of network C left on the bridge (C is served elsewhere): its port's row is
    # in the copy, so the orphan is recognised as a metadata port
    h = settled_harness({"i1": {"name": "tapcccc0", "external_ids": {"iface-id": "meta-c"}}})
    assert h.agent.ready
    assert metadata_logical_ports(h.agent.sb_tables) == {"meta-a", "meta-c"}
    assert set(plan_networks(h.agent.sb_tables, "compute-1")) == {NET_A}
    # unplugged: its row leaves the copy
    h.ovs.change(RowChange("Interface", "i1", h.ovs.store.tables["Interface"]["i1"], None))
    assert not h.agent.ready
    h.sb.ack()
    assert metadata_logical_ports(h.agent.sb_tables) == {"meta-a"}
    # a veth plugged later is followed too
    row = {"name": "tapbbbb0", "external_ids": {"iface-id": "meta-b"}}
    h.ovs.change(RowChange("Interface", "i2", None, row))
    h.sb.ack()
    assert metadata_logical_ports(h.agent.sb_tables) == {"meta-a", "meta-b"}


def test_the_first_conditions_name_the_bridges_iface_ids() -> None:
    h = Harness()
    tables = ovs_tables(**{"system-id": "compute-1"})
    tables["Interface"] = {"i1": {"name": "tapcccc0", "external_ids": {"iface-id": "meta-c"}}}
    h.ovs.sync(tables)
    assert h.sb.conditions["Port_Binding"] == [["logical_port", "==", "meta-c"]]
    assert h.sb.conditions["Chassis"] == [["name", "==", "compute-1"]]
    assert h.sb.conditions["Datapath_Binding"] == [False]
    assert "SB_Global" not in h.sb.conditions  # its one row, whole


def test_a_full_copy_after_a_reconnect_keeps_the_conditions_and_is_ready_at_once() -> None:
    h = settled_harness()
    h.sb.synchronised = False
    assert not h.agent.ready
    h.sb.sync(cloud())  # a full copy asks with the newest conditions
    assert h.agent.ready
    assert set(h.agent.sb_tables["Port_Binding"]) == {"vmA", "mA"}
