"""Which networks need a metadata namespace on this chassis, and what it must hold: the
OVN metadata agent's provisioning rules, as a pure function of the Southbound copy.

A network is served on this chassis when:

  - a VIF port (type C{""}, C{localport} or C{external}) of its datapath is bound here:
    C{Port_Binding.chassis} is this chassis, or C{additional_chassis} holds it (a live
    migration's destination is provisioned before the instance lands);
  - its datapath names a Neutron network (C{external_ids:name = neutron-<id>});
  - it has a metadata port: a C{localport} of the datapath whose
    C{neutron:device_owner} is C{network:distributed}, with a valid MAC first in its
    C{mac} column;
  - the ports bound here have at least one address (an IPv4 one, or any IPv6 one).

Its namespace C{ovnmeta-<network>} then holds the veth end C{tap<network[:10]>1} with:

  - the metadata port's MAC, and its C{neutron:mtu} when set (not 0);
  - the metadata port's C{neutron:cidrs} of the subnets in use here (those holding an
    IPv4 address of a port bound here), and 169.254.169.254/32;
  - when a port bound here has an IPv6 address and the host has IPv6:
    C{fe80::a9fe:a9fe/128} and the link-local address of the metadata MAC (C{/64}).

The other end, C{tap<network[:10]>0}, is on the integration bridge with
C{external_ids:iface-id} = the metadata port's logical port.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from twisted.logger import Logger

from metaproxy.chassis.southbound import VIF_PORT_TYPES, own_chassis_uuid

__all__ = [
    "NS_PREFIX",
    "METADATA_CIDR",
    "METADATA_V6_CIDR",
    "NetworkPlan",
    "plan_networks",
    "namespace_for",
    "veth_names",
    "link_local_for",
    "normalise_cidr",
    "metadata_logical_ports",
]

log = Logger("metaproxy.chassis")

NS_PREFIX = "ovnmeta-"
METADATA_CIDR = "169.254.169.254/32"
METADATA_V6_CIDR = "fe80::a9fe:a9fe/128"
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_UNKNOWN = "unknown"


def namespace_for(network_id: str) -> str:
    return NS_PREFIX + network_id


def veth_names(network_id: str) -> tuple[str, str]:
    """(on the bridge, in the namespace): C{tap<network[:10]>0} and C{...1}."""
    return f"tap{network_id[:10]}0", f"tap{network_id[:10]}1"


def link_local_for(mac: str) -> str:
    """The EUI-64 IPv6 link-local address of C{mac}, with its C{/64}."""
    raw = bytearray(int(part, 16) for part in mac.split(":"))
    raw[0] ^= 0x02
    iid = bytes(raw[:3]) + b"\xff\xfe" + bytes(raw[3:])
    address = ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid)
    return f"{address}/64"


def normalise_cidr(text: str) -> str | None:
    """C{ADDRESS/PREFIX} in canonical form, None when it is not one."""
    try:
        return ipaddress.ip_interface(text.strip()).with_prefixlen
    except ValueError:
        return None


@attrs.frozen
class NetworkPlan:
    """One network's namespace as it must be."""

    network_id: str
    logical_port: str
    mac: str
    mtu: int
    addresses: frozenset[str]

    @property
    def namespace(self) -> str:
        return namespace_for(self.network_id)

    @property
    def outside(self) -> str:
        return veth_names(self.network_id)[0]

    @property
    def inside(self) -> str:
        return veth_names(self.network_id)[1]


Tables = Mapping[str, Mapping[str, Mapping[str, Any]]]


def _network_of(datapath: Mapping[str, Any] | None) -> str:
    if datapath is None:
        return ""
    name = datapath.get("external_ids", {}).get("name", "")
    return name.removeprefix("neutron-") if name.startswith("neutron-") else ""


def _addresses(row: Mapping[str, Any]) -> tuple[list[str], bool] | None:
    """(IPv4 addresses, has IPv6) of a port's first C{mac} entry; None if it has none."""
    macs = row.get("mac") or ()
    if not macs or list(macs) == [_UNKNOWN]:
        return None
    ip4, any_ip6 = [], False
    for token in str(macs[0]).split()[1:]:
        try:
            address = ipaddress.ip_address(token)
        except ValueError:
            continue
        if address.version == 4:
            ip4.append(address)
        else:
            any_ip6 = True
    return ip4, any_ip6


def _refs(value: Any) -> tuple[str, ...]:
    """An optional reference column (a set of at most one) or a set, as a tuple."""
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _metadata_port(rows: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    for row in rows:
        if (
            row.get("type") == "localport"
            and row.get("external_ids", {}).get("neutron:device_owner") == "network:distributed"
        ):
            return row
    return None


def plan_networks(
    tables: Tables, chassis: str, *, ipv6_enabled: bool = True
) -> dict[str, NetworkPlan]:
    """Every network that needs a namespace here, by network id (rules: module doc)."""
    chassis_uuid = own_chassis_uuid(tables, chassis)
    if chassis_uuid is None:
        return {}
    datapaths = tables.get("Datapath_Binding", {})
    by_datapath: dict[str, list[Mapping[str, Any]]] = {}
    here: dict[str, list[Mapping[str, Any]]] = {}
    for row in tables.get("Port_Binding", {}).values():
        if row.get("type", "") not in VIF_PORT_TYPES:
            continue
        datapath = row.get("datapath") or ""
        by_datapath.setdefault(datapath, []).append(row)
        if chassis_uuid in _refs(row.get("chassis")) or chassis_uuid in _refs(
            row.get("additional_chassis")
        ):
            here.setdefault(datapath, []).append(row)
    plans = {}
    for datapath, ports in here.items():
        network = _network_of(datapaths.get(datapath))
        if not network:
            continue
        plan = _plan(network, by_datapath.get(datapath, ()), ports, ipv6_enabled)
        if plan is not None:
            plans[network] = plan
    return plans


def _plan(
    network: str,
    datapath_ports: Iterable[Mapping[str, Any]],
    ports_here: Iterable[Mapping[str, Any]],
    ipv6_enabled: bool,
) -> NetworkPlan | None:
    metadata = _metadata_port(datapath_ports)
    if metadata is None or not metadata.get("mac"):
        return None
    mac = str(metadata["mac"][0]).split()[0] if str(metadata["mac"][0]).split() else ""
    if not _MAC.match(mac):
        log.error(
            "The metadata port of network {network} has no valid MAC address ({mac!r}); "
            "no metadata namespace for it",
            network=network,
            mac=mac,
        )
        return None
    external = metadata.get("external_ids", {})
    cidrs = [
        (cidr, ipaddress.ip_interface(cidr).network)
        for cidr in filter(None, map(normalise_cidr, external.get("neutron:cidrs", "").split()))
    ]
    try:
        mtu = int(external.get("neutron:mtu", "0") or 0)
    except ValueError:
        mtu = 0
    ip4: list[Any] = []
    any_ip6 = False
    for row in ports_here:
        found = _addresses(row)
        if found is None:
            continue
        ip4.extend(found[0])
        any_ip6 = any_ip6 or found[1]
    if not ip4 and not any_ip6:
        return None
    addresses = {METADATA_CIDR}
    for address in ip4:
        for cidr, subnet in cidrs:
            if address in subnet:
                addresses.add(cidr)
                break
    if any_ip6 and ipv6_enabled:
        addresses.update((METADATA_V6_CIDR, link_local_for(mac)))
    return NetworkPlan(
        network, str(metadata.get("logical_port", "")), mac.lower(), mtu, frozenset(addresses)
    )


def metadata_logical_ports(tables: Tables) -> set[str]:
    """The logical ports of every network's metadata port (what a metadata veth's
    C{iface-id} names)."""
    return {
        str(row.get("logical_port", ""))
        for row in tables.get("Port_Binding", {}).values()
        if row.get("type") == "localport"
        and row.get("external_ids", {}).get("neutron:device_owner") == "network:distributed"
    }
