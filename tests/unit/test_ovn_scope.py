"""metaproxy.ovn_scope: the chassis-local conditions, written from the OVSDB
semantics (ovsdb-server(7)): a row is monitored when any clause of its table's "where"
holds; an empty "where" means every row, so "no row" is [false]; a uuid value is
["uuid", U]; "includes" on a set column holds when the set contains the value; the
clauses of a select's "where" must all hold."""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from metaproxy.ovn_scope import (
    ChassisScope,
    local_conditions,
    localport_selects,
    needed_datapaths,
)
from metaproxy.ovsdb.data import RowChange

HERE = "c0000000-0000-0000-0000-000000000001"


def test_before_the_chassis_row_is_known_only_that_row_is_monitored() -> None:
    assert local_conditions("here", None, (), ()) == {
        "Chassis": [["name", "==", "here"]],
        "Port_Binding": [False],
        "Datapath_Binding": [False],
    }


def test_bound_here_or_migrating_here_and_the_localports_and_datapaths_by_uuid() -> None:
    conditions = local_conditions("here", HERE, {"d2", "d1"}, {"l1"})
    assert conditions["Port_Binding"] == [
        ["chassis", "==", ["uuid", HERE]],
        ["additional_chassis", "includes", ["uuid", HERE]],
        ["_uuid", "==", ["uuid", "l1"]],
    ]
    assert conditions["Datapath_Binding"] == [
        ["_uuid", "==", ["uuid", "d1"]],
        ["_uuid", "==", ["uuid", "d2"]],
    ]


def test_named_logical_ports_are_monitored_too_known_chassis_or_not() -> None:
    before = local_conditions("here", None, (), (), {"lp-b", "lp-a"})
    assert before["Port_Binding"] == [
        ["logical_port", "==", "lp-a"],
        ["logical_port", "==", "lp-b"],
    ]
    after = local_conditions("here", HERE, (), (), {"lp-a"})
    assert after["Port_Binding"] == [
        ["chassis", "==", ["uuid", HERE]],
        ["additional_chassis", "includes", ["uuid", HERE]],
        ["logical_port", "==", "lp-a"],
    ]


def test_localports_are_selected_with_both_clauses_holding() -> None:
    assert localport_selects(["d1"]) == [
        {
            "op": "select",
            "table": "Port_Binding",
            "where": [["datapath", "==", ["uuid", "d1"]], ["type", "==", "localport"]],
            "columns": ["_uuid"],
        }
    ]


def test_needed_datapaths_are_those_of_ports_bound_or_migrating_here() -> None:
    tables = {
        "Port_Binding": {
            "p1": {"datapath": "d1", "chassis": HERE, "additional_chassis": ()},
            "p2": {"datapath": "d2", "chassis": "other", "additional_chassis": (HERE,)},
            "p3": {"datapath": "d3", "chassis": "other", "additional_chassis": ()},
            "p4": {"datapath": "d4", "chassis": (), "additional_chassis": ()},
        }
    }
    assert needed_datapaths(tables, HERE) == {"d1", "d2"}
    assert needed_datapaths(tables, None) == set()


class FakeMonitor:
    """Conditions are acknowledged when the test says so (L{ack})."""

    def __init__(self):
        self.conditions = None
        self.conditions_acknowledged = True
        self.asked: list[tuple[list, Deferred]] = []

    def set_conditions(self, conditions):
        if conditions != self.conditions:
            self.conditions = conditions
            self.conditions_acknowledged = False

    def ack(self, scope):
        self.conditions_acknowledged = True
        scope.acknowledged()

    def transact(self, operations):
        d = Deferred()
        self.asked.append((operations, d))
        return d


def tables_with(ports):
    return {"Chassis": {HERE: {"name": "here"}}, "Port_Binding": ports}


def test_a_new_datapath_brings_its_localports_and_a_missing_one_is_asked_again() -> None:
    clock, monitor = Clock(), FakeMonitor()
    scope = ChassisScope(clock, monitor, "here", retry_interval=5)
    tables = tables_with({"p1": {"datapath": "d1", "chassis": HERE}})
    scope.refresh(tables)
    assert monitor.conditions["Datapath_Binding"] == [["_uuid", "==", ["uuid", "d1"]]]
    ((operations, d),) = monitor.asked
    assert operations == localport_selects(["d1"])
    scope.refresh(tables)  # asked already: not again
    assert len(monitor.asked) == 1
    d.callback([{"rows": [{"_uuid": ["uuid", "l1"]}]}])
    assert ["_uuid", "==", ["uuid", "l1"]] in monitor.conditions["Port_Binding"]
    # a second network without a localport yet: asked again after the retry interval
    tables["Port_Binding"]["p2"] = {"datapath": "d2", "chassis": HERE}
    scope.refresh(tables)
    monitor.asked[-1][1].callback([{"rows": []}])
    assert len(monitor.asked) == 2
    clock.advance(5)
    assert monitor.asked[-1][0] == localport_selects(["d2"])
    # the localport of d1 deleted: asked again at once
    del tables["Port_Binding"]["p1"]
    tables["Port_Binding"]["p3"] = {"datapath": "d1", "chassis": HERE}
    scope.refresh(tables, [RowChange("Port_Binding", "l1", {"type": "localport"}, None)])
    assert ["_uuid", "==", ["uuid", "l1"]] not in monitor.conditions["Port_Binding"]
    assert monitor.asked[-1][0] == localport_selects(["d1"])


def test_a_datapath_no_longer_needed_leaves_with_its_localports() -> None:
    monitor = FakeMonitor()
    scope = ChassisScope(Clock(), monitor, "here")
    tables = tables_with({"p1": {"datapath": "d1", "chassis": HERE}})
    scope.refresh(tables)
    monitor.asked[0][1].callback([{"rows": [{"_uuid": ["uuid", "l1"]}]}])
    tables["Port_Binding"]["p1"] = {"datapath": "d1", "chassis": "other"}
    scope.refresh(tables)
    assert monitor.conditions["Datapath_Binding"] == [False]
    assert monitor.conditions["Port_Binding"] == [
        ["chassis", "==", ["uuid", HERE]],
        ["additional_chassis", "includes", ["uuid", HERE]],
    ]


def test_settled_once_every_needed_datapath_was_asked_and_the_conditions_acknowledged() -> None:
    clock, monitor, settled = Clock(), FakeMonitor(), []
    scope = ChassisScope(clock, monitor, "here", on_settled=lambda: settled.append(1))
    tables = tables_with({"p1": {"datapath": "d1", "chassis": HERE}})
    scope.refresh(tables)
    monitor.ack(scope)
    # d1's localports not known yet: a pass now would think the network has none
    assert not scope.settled and settled == []
    monitor.asked[0][1].callback([{"rows": [{"_uuid": ["uuid", "l1"]}]}])
    assert not scope.settled  # asking for l1: its row has not come yet
    monitor.ack(scope)
    assert scope.settled and settled == [1]
    monitor.ack(scope)  # said once per settling
    assert settled == [1]
    # a network without a localport: settled once asked; asking again later keeps it so
    tables["Port_Binding"]["p2"] = {"datapath": "d2", "chassis": HERE}
    scope.refresh(tables)
    monitor.ack(scope)
    assert not scope.settled
    monitor.asked[-1][1].callback([{"rows": []}])
    monitor.ack(scope)
    assert scope.settled and settled == [1, 1]
    clock.advance(5)
    assert monitor.asked[-1][0] == localport_selects(["d2"])
    assert scope.settled
    monitor.asked[-1][1].callback([{"rows": []}])
    assert settled == [1, 1]


def test_a_failed_select_leaves_it_unsettled_and_is_asked_again() -> None:
    clock, monitor = Clock(), FakeMonitor()
    scope = ChassisScope(clock, monitor, "here", retry_interval=5)
    scope.refresh(tables_with({"p1": {"datapath": "d1", "chassis": HERE}}))
    monitor.ack(scope)
    monitor.asked[0][1].errback(RuntimeError("transaction failed"))
    assert not scope.settled
    clock.advance(5)
    assert len(monitor.asked) == 2 and monitor.asked[1][0] == localport_selects(["d1"])
    monitor.asked[1][1].callback([{"rows": [{"_uuid": ["uuid", "l1"]}]}])
    monitor.ack(scope)
    assert scope.settled


def test_changed_logical_ports_are_in_the_next_conditions() -> None:
    monitor = FakeMonitor()
    scope = ChassisScope(Clock(), monitor, "here")
    scope.logical_ports = {"meta-1"}
    assert scope.initial()["Port_Binding"] == [["logical_port", "==", "meta-1"]]
    scope.refresh(tables_with({}))
    assert monitor.conditions["Port_Binding"] == [
        ["chassis", "==", ["uuid", HERE]],
        ["additional_chassis", "includes", ["uuid", HERE]],
        ["logical_port", "==", "meta-1"],
    ]
