"""metaproxy.chassis.agent: identity from Open_vSwitch, then the Southbound monitor and
the registration, with in-memory monitors."""

from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from metaproxy.chassis.agent import ChassisAgent
from metaproxy.ovsdb.data import RowChange
from metaproxy.ovsdb.remote import parse_remotes


class FakeStore:
    def __init__(self, tables):
        self.tables = tables


class FakeMonitor:
    def __init__(self, remotes, database, columns, conditions, on_sync, on_changes, on_down):
        self.remotes, self.database = remotes, database
        self.columns, self.conditions = columns, conditions
        self.on_sync, self.on_changes = on_sync, on_changes
        self.synchronised = False
        self.started = self.stopped = False
        self.transactions = []

    def start(self):
        self.started = True

    def stop(self):
        self.stopped = True
        return succeed(None)

    def sync(self, tables):
        self.synchronised = True
        self.store = FakeStore(tables)
        self.on_sync(self.store)

    def change(self, *changes):
        """Apply to the store first, as the real monitor does, then notify."""
        for c in changes:
            rows = self.store.tables.setdefault(c.table, {})
            if c.new is None:
                rows.pop(c.uuid, None)
            else:
                rows[c.uuid] = c.new
        self.on_changes(list(changes))

    def transact(self, ops, must_match=()):
        self.transactions.append(ops)
        return succeed([{"count": 1}] * len(ops))


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
            for _column, mutator, value in op["mutations"]:
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
    before = h.states
    h.sb.change(RowChange("SB_Global", "g1", {"nb_cfg": 4}, {"nb_cfg": 5}))
    assert h.states == before
    h.sb.change(RowChange("Port_Binding", "pb1", None, {"logical_port": "p"}))
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
