"""metaproxy.chassis.localovs: ports by name from the Open_vSwitch copy, and the
transactions that plug and unplug them."""

from metaproxy.chassis.localovs import (
    OvsPort,
    bridge_datapath_type,
    iface_ids,
    plug_operations,
    ports_by_name,
    set_iface_id_operations,
    unplug_operations,
)

TABLES = {
    "Bridge": {
        "b1": {"name": "br-int", "datapath_type": "netdev", "ports": ("p1", "p2")},
        "b2": {"name": "br-ex", "datapath_type": "", "ports": ("p3",)},
    },
    "Port": {
        "p1": {"name": "br-int", "interfaces": ("i1",)},
        "p2": {"name": "tapabc0", "interfaces": ("i2",)},
        "p3": {"name": "eth1", "interfaces": ("i3",)},
    },
    "Interface": {
        "i1": {"name": "br-int", "external_ids": {}},
        "i2": {"name": "tapabc0", "external_ids": {"iface-id": "md"}},
        "i3": {"name": "eth1", "external_ids": {}},
    },
}


def test_ports_know_their_bridge_and_iface_id() -> None:
    ports = ports_by_name(TABLES)
    assert ports["tapabc0"] == OvsPort("tapabc0", "p2", ("br-int",), ("md",), ("i2",))
    assert ports["eth1"].bridges == ("br-ex",)
    assert bridge_datapath_type(TABLES, "br-int") == "netdev"
    assert bridge_datapath_type(TABLES, "br-ex") == ""
    assert bridge_datapath_type(TABLES, "br-none") is None


def test_plug_inserts_interface_and_port_and_adds_it_to_the_bridge() -> None:
    ops = plug_operations("br-int", "tapabc0", "md")
    assert ops[0]["row"] == {"name": "tapabc0", "external_ids": ["map", [["iface-id", "md"]]]}
    assert ops[1]["row"] == {"name": "tapabc0", "interfaces": ["named-uuid", "iface"]}
    assert ops[2]["where"] == [["name", "==", "br-int"]]
    assert ops[2]["mutations"] == [["ports", "insert", ["set", [["named-uuid", "port"]]]]]


def test_unplug_removes_the_port_from_each_bridge_and_iface_id_is_set_in_place() -> None:
    port = OvsPort("tapabc0", "p2", ("br-int", "br-old"), ("x",), ("i2",))
    assert [op["where"] for op in unplug_operations(port)] == [
        [["name", "==", "br-int"]],
        [["name", "==", "br-old"]],
    ]
    assert unplug_operations(port)[0]["mutations"] == [
        ["ports", "delete", ["set", [["uuid", "p2"]]]]
    ]
    [op] = set_iface_id_operations(port, "md")
    assert op["where"] == [["_uuid", "==", ["uuid", "i2"]]]
    assert op["mutations"][1] == ["external_ids", "insert", ["map", [["iface-id", "md"]]]]


def test_iface_ids_are_the_interfaces_logical_ports() -> None:
    tables = {
        "Interface": {
            "i1": {"name": "tap1", "external_ids": {"iface-id": "port-1"}},
            "i2": {"name": "br-int", "external_ids": {}},
            "i3": {"name": "tap2", "external_ids": {"iface-id": ""}},
            "i4": {"name": "tapmeta0", "external_ids": {"iface-id": "meta-1"}},
        }
    }
    assert iface_ids(tables) == {"port-1", "meta-1"}
    assert iface_ids({}) == set()
