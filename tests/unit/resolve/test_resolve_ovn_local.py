"""metaproxy.resolve.ovn_local: the chassis-local conditions, written from the OVSDB
semantics (ovsdb-server(7)): a row is monitored when any clause of its table's "where"
holds; an empty "where" means every row, so "no row" is [false]; a uuid value is
["uuid", U]; "includes" on a set column holds when the set contains the value; the
clauses of a select's "where" must all hold."""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from metaproxy.ovsdb.data import RowChange
from metaproxy.resolve.ovn_local import (
    ChassisScope,
    local_conditions,
    localport_selects,
    needed_datapaths,
    system_id,
)

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


def test_system_id_is_the_chassis_name() -> None:
    assert system_id({"Open_vSwitch": {"o": {"external_ids": {"system-id": " ch-1 "}}}}) == "ch-1"
    assert system_id({"Open_vSwitch": {"o": {"external_ids": {}}}}) == ""
    assert system_id({}) == ""


class FakeMonitor:
    def __init__(self):
        self.conditions = None
        self.asked: list[tuple[list, Deferred]] = []

    def set_conditions(self, conditions):
        self.conditions = conditions

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
