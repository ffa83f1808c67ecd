"""Northbound rows shaped the way Neutron's ML2/OVN driver writes them.

  - a network is a C{Logical_Switch} C{neutron-<network id>} whose C{external_ids} carry
    C{neutron:network_name}, C{neutron:mtu} and C{neutron:revision_number};
  - a subnet is a C{DHCP_Options} row whose C{classless_static_route} sends
    169.254.169.254/32 to the metadata port's address (how a guest reaches metadata);
  - the metadata port is a C{localport} with C{addresses=["MAC IP"]}, no port security,
    and C{neutron:device_owner=network:distributed},
    C{neutron:device_id=ovnmeta-<network id>}, C{neutron:cidrs=IP/prefix};
  - a VM port has C{addresses} and C{port_security} C{["MAC IP"]},
    C{options:requested-chassis=<host>}, and C{neutron:device_id},
    C{neutron:device_owner=compute:nova}, C{neutron:project_id}, C{neutron:cidrs}.

No ACL is written: the ports keep port security but no stateful security group, so no
traffic goes through the userspace datapath's conntrack.
"""

from __future__ import annotations

import ipaddress
import secrets
import uuid
from typing import Any

import attrs

from bench.ovnsandbox.ovsdbsync import omap, oset

__all__ = [
    "Network",
    "VmPort",
    "network_operations",
    "vm_port_operations",
    "new_id",
    "new_ids",
    "new_mac",
]

METADATA_IP = "169.254.169.254"


def new_id(tag: str) -> str:
    """A UUID-shaped id starting with C{tag} (the sandbox's), random after it, so that
    C{id[:10]} (the tap device names' part) differs from other sandboxes' ids (between
    many ids of one sandbox, only with L{new_ids})."""
    text = str(uuid.uuid4())
    return tag + text[len(tag) :]


def new_ids(tag: str, count: int) -> list[str]:
    """C{count} ids of L{new_id}, no two alike in C{id[:10]}: after a 4-digit tag only
    5 hex digits of it are random, so 1,000 ids share a tap device name more often
    than not (a birthday collision: about 38%), and the second network's veth cannot be
    made (C{EEXIST})."""
    ids: list[str] = []
    taken: set[str] = set()
    while len(ids) < count:
        found = new_id(tag)
        if found[:10] not in taken:
            taken.add(found[:10])
            ids.append(found)
    return ids


def new_mac() -> str:
    return "fa:16:3e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


@attrs.frozen
class Network:
    """One Neutron network with an IPv4 subnet (and an IPv6 one when C{cidr6} is set)
    and its metadata port."""

    id: str
    cidr: str
    mtu: int = 1442
    cidr6: str = ""
    project_id: str = "project-sandbox"
    metadata_port_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    metadata_mac: str = attrs.field(factory=new_mac)
    subnet_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))

    @property
    def switch(self) -> str:
        return f"neutron-{self.id}"

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.cidr).prefixlen

    def host(self, n: int) -> str:
        """The C{n}th address of the subnet (1 is the gateway, 2 the metadata port)."""
        return str(ipaddress.ip_network(self.cidr).network_address + n)

    @property
    def gateway(self) -> str:
        return self.host(1)

    @property
    def metadata_ip(self) -> str:
        return self.host(2)

    def host6(self, n: int) -> str:
        """The C{n}th address of the IPv6 subnet ("" without one)."""
        if not self.cidr6:
            return ""
        return str(ipaddress.ip_network(self.cidr6).network_address + n)

    @property
    def metadata_addresses(self) -> str:
        """The metadata port's C{"MAC IP [IP6]"}."""
        return " ".join(filter(None, (self.metadata_mac, self.metadata_ip, self.host6(2))))

    @property
    def metadata_cidrs(self) -> str:
        """The metadata port's C{neutron:cidrs}."""
        cidrs = [f"{self.metadata_ip}/{self.prefixlen}"]
        if self.cidr6:
            cidrs.append(f"{self.host6(2)}/{ipaddress.ip_network(self.cidr6).prefixlen}")
        return " ".join(cidrs)


@attrs.frozen
class VmPort:
    """One instance's port on C{network}."""

    network: Network
    ip: str
    id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    mac: str = attrs.field(factory=new_mac)
    device_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    project_id: str = "project-sandbox"
    ip6: str = ""

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.network.prefixlen}"

    @property
    def cidr6(self) -> str:
        if not self.ip6:
            return ""
        return f"{self.ip6}/{ipaddress.ip_network(self.network.cidr6).prefixlen}"

    @property
    def addresses(self) -> str:
        """C{"MAC IP [IP6]"}, as C{addresses} and C{port_security} hold it."""
        return " ".join(filter(None, (self.mac, self.ip, self.ip6)))


def _port_external_ids(
    network: Network, device_id: str, owner: str, project: str, cidr: str
) -> dict[str, str]:
    return {
        "neutron:cidrs": cidr,
        "neutron:device_id": device_id,
        "neutron:device_owner": owner,
        "neutron:network_name": network.switch,
        "neutron:port_name": "",
        "neutron:project_id": project,
        "neutron:revision_number": "1",
        "neutron:security_group_ids": "",
        "neutron:mtu": str(network.mtu),
        "neutron:vnic_type": "normal",
    }


def network_operations(network: Network) -> list[dict[str, Any]]:
    """The NB operations creating the network, its subnet's DHCP options and its
    metadata port (one transaction)."""
    return [
        {
            "op": "insert",
            "table": "DHCP_Options",
            "uuid-name": "dhcp",
            "row": {
                "cidr": network.cidr,
                "options": omap(
                    {
                        "classless_static_route": (
                            f"{{{METADATA_IP}/32,{network.metadata_ip}, "
                            f"0.0.0.0/0,{network.gateway}}}"
                        ),
                        "lease_time": "43200",
                        "mtu": str(network.mtu),
                        "router": network.gateway,
                        "server_id": network.gateway,
                        "server_mac": network.metadata_mac,
                    }
                ),
                "external_ids": omap(
                    {"subnet_id": network.subnet_id, "neutron:revision_number": "1"}
                ),
            },
        },
        {
            "op": "insert",
            "table": "Logical_Switch_Port",
            "uuid-name": "mdport",
            "row": {
                "name": network.metadata_port_id,
                "type": "localport",
                "addresses": oset([network.metadata_addresses]),
                "port_security": oset([]),
                "external_ids": omap(
                    _port_external_ids(
                        network,
                        f"ovnmeta-{network.id}",
                        "network:distributed",
                        network.project_id,
                        network.metadata_cidrs,
                    )
                ),
            },
        },
        {
            "op": "insert",
            "table": "Logical_Switch",
            "row": {
                "name": network.switch,
                "ports": oset([["named-uuid", "mdport"]]),
                "external_ids": omap(
                    {
                        "neutron:network_name": f"sandbox-{network.id[:8]}",
                        "neutron:mtu": str(network.mtu),
                        "neutron:revision_number": "1",
                        "neutron:availability_zone_hints": "",
                    }
                ),
                "other_config": omap({"mcast_snoop": "false", "mcast_flood_unregistered": "false"}),
            },
        },
    ]


def vm_port_operations(port: VmPort, host: str, dhcp_uuid: str | None) -> list[dict[str, Any]]:
    """The NB operations adding C{port} to its network's switch, requested on C{host}."""
    address = port.addresses
    row: dict[str, Any] = {
        "name": port.id,
        "addresses": oset([address]),
        "port_security": oset([address]),
        "options": omap({"requested-chassis": host}),
        "external_ids": omap(
            _port_external_ids(
                port.network,
                port.device_id,
                "compute:nova",
                port.project_id,
                " ".join(filter(None, (port.cidr, port.cidr6))),
            )
        ),
    }
    if dhcp_uuid:
        row["dhcpv4_options"] = ["uuid", dhcp_uuid]
    return [
        {"op": "insert", "table": "Logical_Switch_Port", "uuid-name": "vmport", "row": row},
        {
            "op": "mutate",
            "table": "Logical_Switch",
            "where": [["name", "==", port.network.switch]],
            "mutations": [["ports", "insert", oset([["named-uuid", "vmport"]])]],
        },
    ]


def delete_port_operations(port_id: str, switch: str, port_uuid: str) -> list[dict[str, Any]]:
    """The NB operations removing a port (the switch's reference; the row goes with it)."""
    return [
        {
            "op": "mutate",
            "table": "Logical_Switch",
            "where": [["name", "==", switch]],
            "mutations": [["ports", "delete", oset([["uuid", port_uuid]])]],
        },
    ]
