"""What the chassis reads from, and writes to, the local Open_vSwitch database.

Monitored (L{OVS_COLUMNS}): the C{Open_vSwitch} row's C{external_ids} (the chassis's
name and bridge), and the bridges, ports and interfaces (which ports the metadata
namespaces have on the integration bridge, and whether it is a C{netdev} bridge).

The writes are OVSDB transactions built here (pure functions returning operations):

  - L{plug_operations}: add port C{name} with one interface of the same name to the
    bridge, with C{external_ids:iface-id} (what ovn-controller binds by);
  - L{set_iface_id_operations}: correct the C{iface-id} of a port that exists;
  - L{unplug_operations}: remove a port from the bridges that hold it (the Port and
    Interface rows go with it: they are not root rows).

They go through the project's own OVSDB client (C{OvsdbMonitor.transact}, on the
connection that keeps the copy), not the C{ovs} library's IDL: it runs on the reactor
with no thread, shares the reconnection and probing of the monitor, and each write is
decided on the copy that connection has just brought.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from metaproxy.chassis.identity import ChassisIdentity, identity_from_external_ids
from metaproxy.ovsdb.operations import map_set, named_ref, uuid_ref, wire_map, wire_set

__all__ = [
    "DATABASE",
    "OVS_COLUMNS",
    "OvsPort",
    "identity_from_tables",
    "bridge_datapath_type",
    "bridge_names",
    "iface_ids",
    "ports_by_name",
    "plug_operations",
    "set_iface_id_operations",
    "unplug_operations",
]

DATABASE = "Open_vSwitch"
OVS_COLUMNS: dict[str, list[str]] = {
    "Open_vSwitch": ["external_ids"],
    "Bridge": ["name", "datapath_type", "ports"],
    "Port": ["name", "interfaces"],
    "Interface": ["name", "external_ids"],
}

Tables = Mapping[str, Mapping[str, Mapping[str, Any]]]


@attrs.frozen
class OvsPort:
    """A port as the local database has it: its uuid, bridges, and interfaces' iface-ids."""

    name: str
    uuid: str
    bridges: tuple[str, ...]
    iface_ids: tuple[str, ...]
    interface_uuids: tuple[str, ...]


def identity_from_tables(tables: Tables) -> ChassisIdentity:
    """@raise metaproxy.chassis.identity.IdentityError: no system-id (or no row yet)."""
    rows = list(tables.get("Open_vSwitch", {}).values())
    return identity_from_external_ids(rows[0].get("external_ids", {}) if rows else {})


def bridge_names(tables: Tables) -> set[str]:
    return {row["name"] for row in tables.get("Bridge", {}).values()}


def bridge_datapath_type(tables: Tables, bridge: str) -> str | None:
    """The bridge's C{datapath_type} (C{""} is the kernel's), None when no such bridge."""
    for row in tables.get("Bridge", {}).values():
        if row.get("name") == bridge:
            return row.get("datapath_type", "")
    return None


def iface_ids(tables: Tables) -> set[str]:
    """The C{external_ids:iface-id} of every interface (the logical ports plugged here)."""
    found = set()
    for row in tables.get("Interface", {}).values():
        iface_id = row.get("external_ids", {}).get("iface-id", "")
        if iface_id:
            found.add(str(iface_id))
    return found


def ports_by_name(tables: Tables) -> dict[str, OvsPort]:
    """Every port by name, with the bridges that hold it."""
    holders: dict[str, list[str]] = {}
    for row in tables.get("Bridge", {}).values():
        for port_uuid in row.get("ports", ()):
            holders.setdefault(port_uuid, []).append(row["name"])
    interfaces = tables.get("Interface", {})
    found = {}
    for uuid, row in tables.get("Port", {}).items():
        iface_uuids = tuple(row.get("interfaces", ()))
        iface_ids = tuple(
            interfaces[i].get("external_ids", {}).get("iface-id", "")
            for i in iface_uuids
            if i in interfaces
        )
        found[row["name"]] = OvsPort(
            row["name"], uuid, tuple(sorted(holders.get(uuid, ()))), iface_ids, iface_uuids
        )
    return found


def plug_operations(bridge: str, name: str, iface_id: str) -> list[dict[str, Any]]:
    """Add port C{name} to C{bridge}; operation 2 must match (the bridge exists)."""
    return [
        {
            "op": "insert",
            "table": "Interface",
            "uuid-name": "iface",
            "row": {"name": name, "external_ids": wire_map({"iface-id": iface_id})},
        },
        {
            "op": "insert",
            "table": "Port",
            "uuid-name": "port",
            "row": {"name": name, "interfaces": named_ref("iface")},
        },
        {
            "op": "mutate",
            "table": "Bridge",
            "where": [["name", "==", bridge]],
            "mutations": [["ports", "insert", wire_set([named_ref("port")])]],
        },
    ]


def set_iface_id_operations(port: OvsPort, iface_id: str) -> list[dict[str, Any]]:
    return [
        map_set("Interface", [["_uuid", "==", uuid_ref(u)]], "external_ids", {"iface-id": iface_id})
        for u in port.interface_uuids
    ]


def unplug_operations(port: OvsPort) -> list[dict[str, Any]]:
    """Remove C{port} from every bridge holding it."""
    return [
        {
            "op": "mutate",
            "table": "Bridge",
            "where": [["name", "==", bridge]],
            "mutations": [["ports", "delete", wire_set([uuid_ref(port.uuid)])]],
        }
        for bridge in port.bridges
    ]
