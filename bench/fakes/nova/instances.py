# -*- test-case-name: tests.bench.fakes.test_fakenova -*-
"""The instances of a metaproxy lookup table (the C{ports.json} format), as the fake
Nova serves them (L{instances_from_table}), and reading such a table (L{load_table})."""

from __future__ import annotations

import base64
import binascii
import gzip
import ipaddress
import json
from collections.abc import Mapping, Sequence
from typing import Any

from bench.fakes.novatree import InstanceRecord

__all__ = ["instances_from_table", "load_table"]


def _fixed_ips(port: Mapping[str, Any]) -> list[str]:
    ips = []
    for item in port.get("fixed_ips") or ():
        ips.append(item["ip_address"] if isinstance(item, Mapping) else str(item))
    return ips


def _network_data(ports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    links, networks = [], []
    for index, port in enumerate(ports):
        port_id = str(port.get("id") or "port-%d" % index)
        link_id = "tap" + port_id[:11]
        links.append(
            {
                "id": link_id,
                "vif_id": port_id,
                "type": "ovs",
                "mtu": 1450,
                "ethernet_mac_address": port.get("mac_address", ""),
            }
        )
        for ip in _fixed_ips(port):
            version = ipaddress.ip_address(ip).version
            networks.append(
                {
                    "id": "network%d" % len(networks),
                    "type": "ipv4_dhcp" if version == 4 else "ipv6_dhcpv6-stateful",
                    "link": link_id,
                    "network_id": port.get("network_id", ""),
                }
            )
    return {"links": links, "networks": networks, "services": []}


_INSTANCE_KEYS = frozenset(
    {
        "hostname",
        "name",
        "project_id",
        "user_data",
        "user_data_base64",
        "user_data_gzip_base64",
        "public_keys",
        "floating_ip",
        "availability_zone",
        "password",
        "meta",
        "vendor_data",
        "instance_type",
        "launch_index",
        "security_groups",
    }
)


def _user_data(instance_id: str, entry: Mapping[str, Any]) -> bytes | None:
    keys = ("user_data", "user_data_base64", "user_data_gzip_base64")
    given = [k for k in keys if entry.get(k) is not None]
    if len(given) > 1:
        raise ValueError(f"instance {instance_id}: more than one of {', '.join(given)}")
    if not given:
        return None
    key = given[0]
    if key == "user_data":
        return str(entry[key]).encode("utf-8")
    try:
        data = base64.b64decode(entry[key], validate=True)
    except (binascii.Error, TypeError) as e:
        raise ValueError(f"instance {instance_id}: {key} is not base64: {e}") from None
    if key == "user_data_gzip_base64":
        try:
            gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ValueError(f"instance {instance_id}: {key} is not gzip: {e}") from None
    return data


def instances_from_table(table: Mapping[str, Any]) -> dict[str, InstanceRecord]:
    """The instances of a metaproxy lookup table (the C{ports.json} format).

    Every port with a C{device_id} whose C{device_owner} is not C{network:*} belongs to
    an instance; the project is the first such port's, C{local-ipv4} the first IPv4 on
    the instance's ports. The optional C{instances} section adds what Neutron does not
    know (hostname, user data, keys...); an instance with no entry gets a hostname from
    its id, no user data and no keys. An C{instances} entry with no port needs a
    C{project_id}. Gzipped user data (C{user_data_gzip_base64}) and other binary user
    data (C{user_data_base64}) are served byte for byte.

    @raise ValueError: an inconsistent or misspelt table.
    """
    ports_by_device: dict[str, list[Mapping[str, Any]]] = {}
    for port in table.get("ports") or ():
        device_id = port.get("device_id") or ""
        owner = port.get("device_owner") or ""
        if device_id and not owner.startswith("network:"):
            ports_by_device.setdefault(device_id, []).append(port)
    entries: Mapping[str, Any] = table.get("instances") or {}
    instance_ids = list(ports_by_device) + [i for i in entries if i not in ports_by_device]

    records = {}
    for instance_id in instance_ids:
        entry = entries.get(instance_id) or {}
        unknown = set(entry) - _INSTANCE_KEYS
        if unknown:
            raise ValueError(f"instance {instance_id}: unknown keys {sorted(unknown)}")
        ports = ports_by_device.get(instance_id, [])
        project_id = entry.get("project_id") or (ports[0].get("project_id") if ports else None)
        if not project_id:
            raise ValueError(f"instance {instance_id}: no port and no project_id")
        ipv4 = [
            ip for port in ports for ip in _fixed_ips(port) if ipaddress.ip_address(ip).version == 4
        ]
        records[instance_id] = InstanceRecord(
            instance_id=instance_id,
            project_id=project_id,
            hostname=entry.get("hostname") or "server-" + instance_id,
            local_ipv4=ipv4[0] if ipv4 else "",
            user_data=_user_data(instance_id, entry),
            public_keys=entry.get("public_keys") or {},
            floating_ip=entry.get("floating_ip") or "",
            availability_zone=entry.get("availability_zone") or "nova",
            name=entry.get("name") or "",
            launch_index=int(entry.get("launch_index", 0)),
            instance_type=entry.get("instance_type") or "m1.small",
            security_groups=entry.get("security_groups") or ("default",),
            password=entry.get("password") or "",
            meta=entry.get("meta") or {},
            vendor_data=entry.get("vendor_data") or {},
            network_data=_network_data(ports),
        )
    return records


def load_table(path: str) -> dict[str, Any]:
    """Read a lookup table file (JSON)."""
    with open(path, encoding="utf-8") as f:
        table = json.load(f)
    if not isinstance(table, dict):
        raise ValueError(f"{path}: the table must be a JSON object")
    return table
