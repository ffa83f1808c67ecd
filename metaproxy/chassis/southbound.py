"""What the chassis reads from the OVN Southbound database, and questions on that copy.

Monitored (L{sb_columns}; L{sb_conditions} are the first conditions, then
L{metaproxy.ovn_scope.ChassisScope} keeps them on what this chassis needs, so that the
copy, and the provisioning's work on it, follow this chassis's ports, not the cloud's):

  - C{Chassis} and C{Chassis_Private}: this chassis's rows only (by name);
  - C{SB_Global}: C{nb_cfg}, which the liveness report follows;
  - C{Port_Binding}: the ports bound here (C{chassis} or C{additional_chassis}: the
    instances' ports, a live migration's destination included), the localports of
    their networks (each network's metadata port), and the ports named by an
    C{iface-id} on this node's bridges (a metadata veth left on a bridge is known by
    its port's row even when its network is no longer served here);
  - C{Datapath_Binding}: the networks of the ports bound here, C{external_ids:name}
    (C{neutron-<network id>}).

The questions take the store's tables (C{table -> uuid -> row}, plain values: see
L{metaproxy.ovsdb.data}) and never change them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from metaproxy.ovn_scope import local_conditions

__all__ = [
    "DATABASE",
    "VIF_PORT_TYPES",
    "sb_columns",
    "sb_conditions",
    "own_chassis_uuid",
    "own_chassis_private",
    "sb_global_nb_cfg",
]

DATABASE = "OVN_Southbound"
#: Port_Binding types that carry an instance's or a network's metadata port.
VIF_PORT_TYPES = ("", "localport", "external")

Tables = Mapping[str, Mapping[str, Mapping[str, Any]]]


def sb_columns() -> dict[str, list[str]]:
    return {
        "Chassis": ["name", "hostname"],
        "Chassis_Private": ["name", "chassis", "nb_cfg", "external_ids"],
        "SB_Global": ["nb_cfg"],
        "Port_Binding": [
            "logical_port",
            "datapath",
            "chassis",
            "additional_chassis",
            "mac",
            "type",
            "external_ids",
        ],
        "Datapath_Binding": ["external_ids"],
    }


def sb_conditions(chassis: str, logical_ports: Iterable[str] = ()) -> dict[str, list[Any]]:
    """The conditions before this chassis's row is known: its rows, and the ports named
    by C{logical_ports} (the bridges' C{iface-id}s)."""
    return {
        **local_conditions(chassis, None, (), (), logical_ports),
        "Chassis_Private": [["name", "==", chassis]],
    }


def own_chassis_uuid(tables: Tables, chassis: str) -> str | None:
    for uuid, row in tables.get("Chassis", {}).items():
        if row.get("name") == chassis:
            return uuid
    return None


def own_chassis_private(tables: Tables, chassis: str) -> Mapping[str, Any] | None:
    for row in tables.get("Chassis_Private", {}).values():
        if row.get("name") == chassis:
            return row
    return None


def sb_global_nb_cfg(tables: Tables) -> int | None:
    for row in tables.get("SB_Global", {}).values():
        return int(row.get("nb_cfg", 0))
    return None
