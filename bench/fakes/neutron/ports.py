"""Neutron's ports for a port table, and Neutron's answer to a port query: its filters
(repeated keys: any of the values; different keys: all of them; C{fixed_ips=ip_address=})
and C{fields}, from an index (L{select_ports})."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from metaproxy.resolve.table import parse_table

__all__ = ["FilterError", "PortIndex", "neutron_ports", "select_ports"]


#: The filters this fake knows (Neutron knows more; metaproxy uses these).
_FILTERS = (
    "id",
    "network_id",
    "device_id",
    "device_owner",
    "mac_address",
    "fixed_ips",
    "project_id",
    "tenant_id",
    "status",
)


class FilterError(ValueError):
    """A query Neutron would answer 400 to."""


def _port_dict(
    port_id: str,
    network: str,
    mac: str,
    ips: Sequence[str],
    device_id: str,
    project: str,
    owner: str,
) -> dict[str, Any]:
    """A port as Neutron's API shows it (the fields it has, not only those used)."""
    return {
        "id": port_id,
        "name": "",
        "network_id": network,
        "tenant_id": project,
        "project_id": project,
        "mac_address": mac,
        "admin_state_up": True,
        "status": "ACTIVE",
        "device_id": device_id,
        "device_owner": owner,
        "fixed_ips": [{"subnet_id": f"subnet-{network}", "ip_address": ip} for ip in ips],
        "allowed_address_pairs": [],
        "extra_dhcp_opts": [],
        "security_groups": [],
        "description": "",
        "binding:vnic_type": "normal",
        "port_security_enabled": True,
        "tags": [],
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "revision_number": 1,
    }


def neutron_ports(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Neutron's ports for a table document: its ports, then one interface port per
    network of each router in its C{routers} map.

    @raise metaproxy.resolve.table.TableError: the table is not valid.
    """
    table = parse_table(document)
    ports = [
        _port_dict(
            p.id,
            p.network_id,
            p.mac_address,
            p.fixed_ips,
            p.device_id,
            p.project_id,
            p.device_owner,
        )
        for p in table.ports
    ]
    for r, (router, networks) in enumerate(sorted(document.get("routers", {}).items())):
        for i, network in enumerate(networks):
            mac = f"fa:16:3f:{(r >> 8) & 0xFF:02x}:{r & 0xFF:02x}:{i & 0xFF:02x}"
            ports.append(
                _port_dict(
                    f"{router}-if{i}", network, mac, (), router, "admin", "network:router_interface"
                )
            )
    return ports


def _ips(port: dict[str, Any]) -> list[str]:
    return [entry["ip_address"] for entry in port["fixed_ips"]]


class PortIndex:
    """The ports, indexed by the filters that narrow a query most."""

    def __init__(self, ports: list[dict[str, Any]]) -> None:
        self.ports = ports
        self.order = {id(port): i for i, port in enumerate(ports)}
        self.by: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for port in ports:
            for key in ("id", "device_id", "mac_address", "network_id"):
                self.by.setdefault((key, port[key]), []).append(port)
            for ip in _ips(port):
                self.by.setdefault(("ip_address", ip), []).append(port)


def _ip_filters(values: list[str]) -> list[str]:
    ips = []
    for value in values:
        key, _, ip = value.partition("=")
        if key == "ip_address":
            try:
                ips.append(ipaddress.ip_address(ip).compressed)
            except ValueError:
                raise FilterError(
                    f"Invalid input for fixed_ips. Reason: '{ip}' is not a valid IP address."
                ) from None
        elif key not in ("subnet_id", "ip_address_substr"):
            raise FilterError(f"Invalid input for fixed_ips: {value!r}")
    return ips


def select_ports(index: PortIndex, query: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Neutron's answer to C{GET /v2.0/ports?<query>}: the matching ports, each with only
    the C{fields} asked for (all fields when none is).

    @raise FilterError: an unknown filter or a bad value.
    """
    filters: dict[str, list[str]] = {}
    fields: list[str] = []
    for key, value in query:
        if key == "fields":
            fields.append(value)
        elif key in _FILTERS:
            filters.setdefault(key, []).append(value)
        else:
            raise FilterError(f"[{key}] is invalid attribute for filtering")
    ips = _ip_filters(filters.pop("fixed_ips", []))
    if "mac_address" in filters:
        filters["mac_address"] = [m.lower() for m in filters["mac_address"]]
    # start from the narrowest index
    candidates: list[dict[str, Any]] | None = None
    for key, values in [("ip_address", ips)] + [
        (k, filters.get(k, [])) for k in ("id", "device_id", "mac_address", "network_id")
    ]:
        if values:
            found: dict[int, dict[str, Any]] = {}
            for value in values:
                for port in index.by.get((key, value), ()):
                    found[id(port)] = port
            candidates = sorted(found.values(), key=lambda p: index.order[id(p)])
            break
    if candidates is None:
        candidates = index.ports
    result = []
    for port in candidates:
        if ips and not set(ips) & set(_ips(port)):
            continue
        if any(str(port.get(k)) not in values for k, values in filters.items()):
            continue
        result.append({f: port[f] for f in fields if f in port} if fields else dict(port))
    return result
