# -*- test-case-name: tests.bench.load.test_fleet -*-
"""A fleet of instances for the boot storm: the lookup table and what each should get.

    fleet = make_fleet(1000, 50, seed=0)
    fleet.write("ports.json")            # for the agent (lookup_table) and the fake Nova
    for instance in fleet.instances:     # where it boots from, and the answers it must get
        instance.namespace, instance.ip, instance.instance_id, instance.user_data

Layout (pure, deterministic for a seed). The instances are dealt round robin over the
I{boot domains}: C{routers} router namespaces (C{qrouter-<id>}), then C{dhcp_networks}
DHCP namespaces (C{qdhcp-<id>}) and C{ovn_networks} OVN namespaces (C{ovnmeta-<id>}).
A router has C{networks_per_router} networks; its network C{j} is C{10.j.0.0/16} and every
router reuses the same subnets, so the k-th instance behind every router has the same
address: the lookups must tell them apart by namespace, as in a real cloud with
overlapping tenant networks. DHCP and OVN networks are C{10.0.0.0/16} too. Instances get
host numbers from 10 (C{.1} is the router interface, C{.2} the DHCP port).

Even-numbered routers are attached to their networks by C{network:router_interface}
ports (as Neutron knows them), odd-numbered ones through the table's C{routers} map: both
ways the table backend finds a router's networks are exercised.

User data, by instance index modulo 5: 0, 1, 4 a C{#cloud-config} text; 2 none (Nova
answers 404, which cloud-init accepts); 3 gzipped binary (C{user_data_gzip_base64},
served byte for byte). Every instance but those with index modulo 6 == 5 has a keypair.
"""

from __future__ import annotations

import base64
import copy
import gzip
import ipaddress
import json
import os
import random
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from metaproxy.namespace import Namespace, NamespaceKind

__all__ = ["FleetInstance", "Fleet", "make_fleet", "rename_routers", "boot_length"]

#: Where instance addresses start on every network (.1 router, .2 DHCP port).
FIRST_HOST = 10


@attrs.frozen
class FleetInstance:
    """One instance of the fleet and what a correct answer to it looks like.

    @ivar index: its position in the fleet (boot order).
    @ivar namespace: the namespace its metadata requests come from.
    @ivar ip: its fixed IPv4 address (C{X-Forwarded-For}; Nova's C{local-ipv4}).
    @ivar user_data: the bytes C{user_data} must answer, or L{None} for a 404.
    @ivar public_keys: C{(name, OpenSSH key)} pairs, in order; empty: no keypair.
    """

    index: int
    instance_id: str
    project_id: str
    hostname: str
    ip: str
    mac: str
    network_id: str
    namespace: Namespace
    user_data: bytes | None
    public_keys: tuple[tuple[str, str], ...] = ()

    @property
    def ec2_instance_id(self) -> str:
        """The C{/latest/meta-data/instance-id} value: Nova's EC2 id for this uuid."""
        from bench.fakes.novatree import InstanceRecord

        return InstanceRecord(self.instance_id, self.project_id, self.hostname).ec2_instance_id


@attrs.frozen(eq=False)
class Fleet:
    """A generated fleet: the lookup table and the instances with their expected answers.

    @ivar table: the C{ports.json} document (C{routers}, C{ports}, C{instances}).
    @ivar namespaces: every boot domain, routers first, then DHCP, then OVN namespaces.
    """

    table: dict[str, Any]
    instances: tuple[FleetInstance, ...]
    namespaces: tuple[Namespace, ...]
    routers: int
    networks_per_router: int
    dhcp_networks: int
    ovn_networks: int
    seed: int

    def __len__(self) -> int:
        return len(self.instances)

    def namespace_names(self) -> list[str]:
        return [namespace.name for namespace in self.namespaces]

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the table as JSON (the agent's C{lookup_table}, the fake Nova's C{--table})."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.table, f, indent=1)
            f.write("\n")

    def describe(self) -> str:
        parts = [
            f"{len(self.instances)} instances",
            f"{self.routers} routers"
            + (f" x {self.networks_per_router} networks" if self.networks_per_router > 1 else ""),
        ]
        if self.dhcp_networks:
            parts.append(f"{self.dhcp_networks} DHCP networks")
        if self.ovn_networks:
            parts.append(f"{self.ovn_networks} OVN networks")
        return ", ".join(parts)


def make_fleet(
    instances: int,
    routers: int,
    *,
    networks_per_router: int = 1,
    dhcp_networks: int = 0,
    ovn_networks: int = 0,
    seed: int = 0,
) -> Fleet:
    """Build a fleet (see the module docstring for the layout).

    @raise ValueError: no boot domain, a negative count, or more instances per network
        than a /16 holds.
    """
    for name, value in (
        ("instances", instances),
        ("routers", routers),
        ("dhcp_networks", dhcp_networks),
        ("ovn_networks", ovn_networks),
    ):
        if value < 0:
            raise ValueError(f"{name} must not be negative")
    if networks_per_router < 1 or networks_per_router > 255:
        raise ValueError("networks_per_router must be between 1 and 255")
    domains = routers + dhcp_networks + ovn_networks
    if domains == 0:
        raise ValueError("a fleet needs at least one router, DHCP or OVN network")
    per_network = -(-instances // domains)  # ceil: the busiest router's first network
    if per_network + FIRST_HOST > 65534:
        raise ValueError(f"{per_network} instances on one network do not fit in a /16")

    rng = random.Random(seed)

    def new_id() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    ports: list[dict[str, Any]] = []
    routers_map: dict[str, list[str]] = {}
    # Each boot domain: its namespace, its project, its networks (index j -> network id).
    domain_namespace: list[Namespace] = []
    domain_project: list[str] = []
    domain_networks: list[list[str]] = []
    port_number = 0

    def port_id() -> str:
        nonlocal port_number
        port_number += 1
        return str(uuid.UUID(int=(seed & 0xFFFFFFFF) << 64 | port_number, version=4))

    for r in range(routers):
        router_id = new_id()
        project = rng.getrandbits(128).to_bytes(16, "big").hex()
        networks = [new_id() for _ in range(networks_per_router)]
        if r % 2 == 0:
            for j, network in enumerate(networks):
                ports.append(
                    _port(
                        port_id(),
                        network,
                        _mac(0xFE, r, j),
                        f"10.{j}.0.1",
                        router_id,
                        project,
                        "network:router_interface",
                    )
                )
        else:
            routers_map[router_id] = list(networks)
        domain_namespace.append(Namespace(NamespaceKind.ROUTER, router_id))
        domain_project.append(project)
        domain_networks.append(networks)
    for kind, count in ((NamespaceKind.NETWORK, dhcp_networks), (NamespaceKind.OVN, ovn_networks)):
        for d in range(count):
            network = new_id()
            project = rng.getrandbits(128).to_bytes(16, "big").hex()
            if kind is NamespaceKind.NETWORK:  # as Neutron names them
                owner, device = "network:dhcp", f"dhcp{network}"
            else:
                owner, device = "network:distributed", f"ovnmeta-{network}"
            ports.append(
                _port(
                    port_id(),
                    network,
                    _mac(0xFD, len(domain_namespace), d),
                    "10.0.0.2",
                    device,
                    project,
                    owner,
                )
            )
            domain_namespace.append(Namespace(kind, network))
            domain_project.append(project)
            domain_networks.append([network])

    fleet_instances: list[FleetInstance] = []
    entries: dict[str, dict[str, Any]] = {}
    for i in range(instances):
        domain, k = i % domains, i // domains
        networks = domain_networks[domain]
        j = k % len(networks)
        host = FIRST_HOST + k // len(networks)
        ip = str(ipaddress.IPv4Address(f"10.{j}.0.0") + host)
        instance_id = new_id()
        project = domain_project[domain]
        hostname = f"vm-{i:05d}"
        mac = _mac(i >> 16, (i >> 8) & 0xFF, i & 0xFF)
        ports.append(_port(port_id(), networks[j], mac, ip, instance_id, project, "compute:nova"))
        entry: dict[str, Any] = {"hostname": hostname}
        user_data: bytes | None
        variant = i % 5
        if variant == 2:
            user_data = None
        elif variant == 3:
            user_data = gzip.compress(
                b"#cloud-config\nwrite_files:\n  - path: /etc/bench\n    encoding: b64\n"
                b"    content: " + base64.b64encode(rng.randbytes(48)) + b"\n" + rng.randbytes(32),
                mtime=0,
            )
            entry["user_data_gzip_base64"] = base64.b64encode(user_data).decode("ascii")
        else:
            text = (
                f"#cloud-config\nhostname: {hostname}\nruncmd:\n"
                f"  - echo booted {rng.getrandbits(64):016x}\n"
            )
            user_data = text.encode("utf-8")
            entry["user_data"] = text
        keys: tuple[tuple[str, str], ...] = ()
        if i % 6 != 5:
            key = (
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"
                + base64.b64encode(rng.randbytes(32)).decode("ascii").rstrip("=")
                + f" bench@{hostname}"
            )
            keys = ((f"key-{i}", key),)
            entry["public_keys"] = dict(keys)
        entries[instance_id] = entry
        fleet_instances.append(
            FleetInstance(
                index=i,
                instance_id=instance_id,
                project_id=project,
                hostname=hostname,
                ip=ip,
                mac=mac,
                network_id=networks[j],
                namespace=domain_namespace[domain],
                user_data=user_data,
                public_keys=keys,
            )
        )

    table = {"routers": routers_map, "ports": ports, "instances": entries}
    return Fleet(
        table=table,
        instances=tuple(fleet_instances),
        namespaces=tuple(domain_namespace),
        routers=routers,
        networks_per_router=networks_per_router,
        dhcp_networks=dhcp_networks,
        ovn_networks=ovn_networks,
        seed=seed,
    )


def rename_routers(fleet: Fleet, ids: Sequence[str]) -> Fleet:
    """The same fleet with its routers' ids replaced, in order, by C{ids}: in the table
    (the C{routers} map and the router interface ports) and in every namespace.

    A storm through the kernel's own router namespaces (C{--target namespaces-tcp}) needs
    them: the agent takes the router from the namespace's name, and the namespaces carry
    the run's tag (L{bench.load.netns.Topology.id}) where the fleet has uuids.

    @raise ValueError: not one new id per router, or two alike.
    """
    olds = [ns.id for ns in fleet.namespaces if ns.kind is NamespaceKind.ROUTER]
    if len(ids) != len(olds) or len(set(ids)) != len(ids):
        raise ValueError(f"the fleet has {len(olds)} routers: give as many distinct ids")
    new = dict(zip(olds, ids, strict=True))
    table = copy.deepcopy(fleet.table)
    table["routers"] = {new.get(k, k): v for k, v in table["routers"].items()}
    for port in table["ports"]:
        if port["device_id"] in new and port["device_owner"] == "network:router_interface":
            port["device_id"] = new[port["device_id"]]

    def renamed(namespace: Namespace) -> Namespace:
        if namespace.kind is NamespaceKind.ROUTER:
            return Namespace(NamespaceKind.ROUTER, new[namespace.id])
        return namespace

    return attrs.evolve(
        fleet,
        table=table,
        instances=tuple(attrs.evolve(i, namespace=renamed(i.namespace)) for i in fleet.instances),
        namespaces=tuple(renamed(ns) for ns in fleet.namespaces),
    )


def _port(
    port_id: str, network: str, mac: str, ip: str, device_id: str, project: str, owner: str
) -> dict[str, Any]:
    return {
        "id": port_id,
        "network_id": network,
        "mac_address": mac,
        "fixed_ips": [ip],
        "device_id": device_id,
        "project_id": project,
        "device_owner": owner,
    }


def _mac(a: int, b: int, c: int) -> str:
    return f"fa:16:3e:{a & 0xFF:02x}:{b & 0xFF:02x}:{c & 0xFF:02x}"


def boot_length(fleet: Fleet, instances: Iterable[FleetInstance] | None = None) -> list[int]:
    """How many requests cloud-init makes for each instance when every answer is right:
    its boot sequence replayed against Nova's tree (L{bench.fakes.novatree}) for the fleet's
    table, without any process. A storm through the agent must make exactly as many."""
    from bench.fakes.nova.instances import instances_from_table
    from bench.fakes.novatree import lookup
    from bench.load.cloudinit import boot_sequence

    records = instances_from_table(fleet.table)
    lengths = []
    for instance in fleet.instances if instances is None else instances:
        record = records[instance.instance_id]
        sequence = boot_sequence()
        path, count = next(sequence), 0
        while True:
            count += 1
            status, _, body = lookup(record, path, address=instance.ip)
            try:
                path = sequence.send((status, body))
            except StopIteration:
                break
        lengths.append(count)
    return lengths
