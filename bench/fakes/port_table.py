"""neutron-server's C{get_ports} over the fleet's port table: the ports as Neutron shows
them, its filter semantics, and an index for the three filter shapes a metadata agent sends.

The fake neutron-server (L{bench.fakes.neutronserver}) answers from it, and so does
upstream's agent when the bench replaces its RPC lookup (L{bench.compare.upstream_launch}).
That launcher runs in upstream's own interpreter, isolated from this repository
(C{python -I}), and loads this file by its path: so this module imports the standard
library only, never metaproxy or the rest of the bench.
"""

from __future__ import annotations

import ipaddress
import json

__all__ = ["load_ports", "select_ports", "PortIndex"]

#: Port keys upstream reads (and neutron-server would return, among others).
_ROUTER_INTERFACE_OWNER = "network:router_interface"


def _normalise_ip(value: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return value
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.compressed


def _normalise_mac(value: str) -> str:
    return value.lower().replace("-", ":")


def load_ports(path: str) -> list[dict]:
    """The table's ports as neutron-server's C{get_ports} would return them.

    Router interfaces come from ports with a router interface owner (as in the table) and
    from the table's C{routers} map, which lists a router's networks: each becomes a
    synthesised C{network:router_interface} port owned by the router, after the real
    ports (the order metaproxy's table uses for a router's networks).
    """
    with open(path, "rb") as f:
        document = json.loads(f.read().decode("utf-8-sig"))
    ports = []
    for index, entry in enumerate(document.get("ports", [])):
        project = entry.get("project_id", "")
        ports.append(
            {
                "id": entry.get("id", f"port-{index}"),
                "network_id": entry["network_id"],
                "mac_address": _normalise_mac(entry["mac_address"]),
                "fixed_ips": [{"ip_address": _normalise_ip(ip)} for ip in entry["fixed_ips"]],
                "device_id": entry.get("device_id", ""),
                "device_owner": entry.get("device_owner", ""),
                "project_id": project,
                "tenant_id": project,
            }
        )
    for router_id, networks in document.get("routers", {}).items():
        for i, network_id in enumerate(networks):
            ports.append(
                {
                    "id": f"{router_id}-if-{i}",
                    "network_id": network_id,
                    "mac_address": "fa:16:3f:00:00:00",
                    "fixed_ips": [],
                    "device_id": router_id,
                    "device_owner": _ROUTER_INTERFACE_OWNER,
                    "project_id": "",
                    "tenant_id": "",
                }
            )
    return ports


def _matches(port: dict, key: str, wanted) -> bool:
    if key == "fixed_ips":
        if not isinstance(wanted, dict) or set(wanted) - {"ip_address"}:
            raise ValueError(f"unsupported fixed_ips filter {wanted!r}")
        addresses = {_normalise_ip(ip) for ip in wanted.get("ip_address", ())}
        return any(ip["ip_address"] in addresses for ip in port["fixed_ips"])
    if key not in port:
        raise ValueError(f"unsupported port filter {key!r}")
    if key == "mac_address":
        return port[key] in {_normalise_mac(v) for v in wanted}
    return port[key] in set(wanted)


def select_ports(ports: list[dict], filters: dict) -> list[dict]:
    """Neutron's C{get_ports(filters=...)}: ports matching every key of C{filters}."""
    return [
        _copy(port)
        for port in ports
        if all(_matches(port, key, wanted) for key, wanted in filters.items())
    ]


def _copy(port: dict) -> dict:
    return dict(port, fixed_ips=[dict(ip) for ip in port["fixed_ips"]])


class PortIndex:
    """C{select_ports} in constant time for the three filter shapes upstream sends.

    neutron-server answers these from its database in another process, so the lookup
    must cost the agent (whose CPU the bench measures) next to nothing: a linear scan of a
    1,000-instance table here would add milliseconds per request that upstream never
    spends. Other shapes fall back to the scan.
    """

    def __init__(self, ports: list[dict]) -> None:
        self.ports = ports
        self.by_device: dict[str, list[dict]] = {}
        self.by_network_ip: dict[tuple[str, str], list[dict]] = {}
        self.by_network_mac: dict[tuple[str, str], list[dict]] = {}
        for port in ports:
            self.by_device.setdefault(port["device_id"], []).append(port)
            for ip in port["fixed_ips"]:
                self.by_network_ip.setdefault((port["network_id"], ip["ip_address"]), []).append(
                    port
                )
            self.by_network_mac.setdefault((port["network_id"], port["mac_address"]), []).append(
                port
            )

    def select(self, filters: dict) -> list[dict]:
        keys = set(filters)
        if keys == {"device_id", "device_owner"}:
            owners = set(filters["device_owner"])
            found = [
                p
                for d in filters["device_id"]
                for p in self.by_device.get(d, ())
                if p["device_owner"] in owners
            ]
        elif keys == {"network_id", "fixed_ips"} and set(filters["fixed_ips"]) == {"ip_address"}:
            found = [
                p
                for n in dict.fromkeys(filters["network_id"])
                for ip in filters["fixed_ips"]["ip_address"]
                for p in self.by_network_ip.get((n, _normalise_ip(ip)), ())
            ]
        elif keys == {"network_id", "mac_address"}:
            found = [
                p
                for n in dict.fromkeys(filters["network_id"])
                for mac in filters["mac_address"]
                for p in self.by_network_mac.get((n, _normalise_mac(mac)), ())
            ]
        else:
            return select_ports(self.ports, filters)
        # in table order and once each, as the scan (and a database query) returns them
        unique = {id(p): p for p in found}
        order = {id(p): i for i, p in enumerate(self.ports)} if len(unique) > 1 else {}
        return [_copy(p) for p in sorted(unique.values(), key=lambda p: order.get(id(p), 0))]
