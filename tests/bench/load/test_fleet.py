"""The boot storm's fleet: a valid lookup table, overlapping addresses, known answers."""

import collections
import gzip
import json

import pytest

from bench.fakes.nova import instances as fake_nova_instances
from bench.load.fleet import boot_length, make_fleet, rename_routers
from metaproxy.caller import Identity
from metaproxy.namespace import NamespaceKind
from metaproxy.resolve.base import Instance
from metaproxy.resolve.resolver import InstanceResolver
from metaproxy.resolve.table import load_table, parse_table
from metaproxy.testing import InMemoryPortBackend


def resolve(resolver, caller):
    results = []
    resolver.resolve(caller).addBoth(results.append)
    assert len(results) == 1, "the table backend answers at once"
    return results[0]


def test_addresses_overlap_across_routers():
    """The k-th instance behind every router has the same address: only the namespace
    tells them apart."""
    fleet = make_fleet(40, 4)
    by_namespace = collections.defaultdict(set)
    for instance in fleet.instances:
        by_namespace[instance.namespace].add(instance.ip)
    assert len(by_namespace) == 4
    address_sets = list(by_namespace.values())
    assert all(s == address_sets[0] for s in address_sets)
    assert len(address_sets[0]) == 10
    by_ip = collections.defaultdict(set)
    for instance in fleet.instances:
        by_ip[instance.ip].add(instance.instance_id)
    assert all(len(ids) == 4 for ids in by_ip.values())


def test_every_instance_resolves_to_itself_through_its_namespace():
    """Through the agent's own table parser and resolver, each instance's namespace and
    address find exactly that instance, for routers (interface ports and the routers
    map, several networks each), DHCP and OVN namespaces."""
    fleet = make_fleet(60, 4, networks_per_router=2, dhcp_networks=2, ovn_networks=2, seed=3)
    kinds = collections.Counter(ns.kind for ns in fleet.namespaces)
    assert kinds == {NamespaceKind.ROUTER: 4, NamespaceKind.NETWORK: 2, NamespaceKind.OVN: 2}
    resolver = InstanceResolver(InMemoryPortBackend(parse_table(fleet.table)))
    for instance in fleet.instances:
        found = resolve(
            resolver, Identity(instance.namespace, instance.ip, None, instance.ip.encode())
        )
        assert found == Instance(instance.instance_id, instance.project_id), instance
    # and another router's namespace finds its own instance at the same address
    first, other = fleet.instances[0], fleet.instances[1]
    assert first.ip == other.ip and first.namespace != other.namespace
    assert (
        resolve(resolver, Identity(other.namespace, first.ip, None, first.ip.encode())).instance_id
        == other.instance_id
    )


def test_both_ways_of_attaching_routers_are_used():
    fleet = make_fleet(10, 4)
    interface_routers = {
        p["device_id"]
        for p in fleet.table["ports"]
        if p["device_owner"] == "network:router_interface"
    }
    mapped_routers = set(fleet.table["routers"])
    routers = {ns.id for ns in fleet.namespaces}
    assert interface_routers and mapped_routers
    assert interface_routers | mapped_routers == routers
    assert not interface_routers & mapped_routers


def test_user_data_variants_and_keys_as_nova_serves_them():
    """Text, none and gzipped binary user data are all present, and the fake Nova's view
    of the table gives exactly the bytes the fleet expects."""
    fleet = make_fleet(20, 2)
    records = fake_nova_instances.instances_from_table(fleet.table)
    variants = collections.Counter()
    for instance in fleet.instances:
        record = records[instance.instance_id]
        assert record.user_data == instance.user_data
        assert record.hostname == instance.hostname
        assert record.local_ipv4 == instance.ip
        assert record.project_id == instance.project_id
        assert tuple(record.public_keys.items()) == instance.public_keys
        assert record.ec2_instance_id == instance.ec2_instance_id
        entry = fleet.table["instances"][instance.instance_id]
        if instance.user_data is None:
            variants["none"] += 1
        elif "user_data_gzip_base64" in entry:
            assert gzip.decompress(instance.user_data).startswith(b"#cloud-config")
            variants["gzip"] += 1
        else:
            assert instance.user_data.decode("utf-8") == entry["user_data"]
            variants["text"] += 1
    assert variants == {"text": 12, "none": 4, "gzip": 4}
    with_keys = sum(1 for i in fleet.instances if i.public_keys)
    assert with_keys == 17


def test_boot_lengths_follow_the_keypair():
    fleet = make_fleet(12, 2)
    lengths = boot_length(fleet)
    assert lengths == [28 if i.public_keys else 26 for i in fleet.instances]


def test_deterministic_for_a_seed():
    a, b = make_fleet(30, 3, seed=7), make_fleet(30, 3, seed=7)
    assert a.table == b.table and a.instances == b.instances
    c = make_fleet(30, 3, seed=8)
    assert c.table != a.table
    assert {i.instance_id for i in c.instances}.isdisjoint({i.instance_id for i in a.instances})


def test_write_is_a_table_both_the_agent_and_the_fake_nova_load(tmp_path):
    fleet = make_fleet(15, 3, dhcp_networks=1)
    path = tmp_path / "ports.json"
    fleet.write(path)
    assert json.loads(path.read_text()) == fleet.table
    table = load_table(path)
    assert len(table.ports) == len(fleet.table["ports"])
    assert (
        len(fake_nova_instances.instances_from_table(fake_nova_instances.load_table(str(path))))
        == 15
    )


def test_namespaces_are_the_boot_domains_in_order():
    fleet = make_fleet(5, 2, dhcp_networks=1, ovn_networks=1)
    names = fleet.namespace_names()
    assert [n.split("-", 1)[0] for n in names] == ["qrouter", "qrouter", "qdhcp", "ovnmeta"]
    assert [i.namespace for i in fleet.instances] == list(fleet.namespaces) + [fleet.namespaces[0]]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(instances=5, routers=0),
        dict(instances=-1, routers=1),
        dict(instances=5, routers=1, networks_per_router=0),
    ],
)
def test_bad_shapes_are_refused(kwargs):
    with pytest.raises(ValueError):
        make_fleet(**kwargs)


def test_renamed_routers_resolve_by_their_new_names_only():
    """C{rename_routers}: both ways of attaching a router follow the new ids; DHCP and
    OVN namespaces, instances and answers are unchanged; the old ids find nothing."""
    fleet = make_fleet(30, 3, networks_per_router=2, dhcp_networks=1, seed=5)
    ids = ["e2e0a1b2c3d-r0", "e2e0a1b2c3d-r1", "e2e0a1b2c3d-r2"]
    renamed = rename_routers(fleet, ids)
    routers = [ns for ns in renamed.namespaces if ns.kind is NamespaceKind.ROUTER]
    assert [ns.id for ns in routers] == ids
    assert renamed.namespaces[3:] == fleet.namespaces[3:]  # the DHCP network
    assert [i.instance_id for i in renamed.instances] == [i.instance_id for i in fleet.instances]
    resolver = InstanceResolver(InMemoryPortBackend(parse_table(renamed.table)))
    for instance in renamed.instances:
        found = resolve(
            resolver, Identity(instance.namespace, instance.ip, None, instance.ip.encode())
        )
        assert found == Instance(instance.instance_id, instance.project_id), instance
    old = fleet.instances[0]
    missing = resolve(resolver, Identity(old.namespace, old.ip, None, old.ip.encode()))
    assert missing.reason == "router has no interface ports"
    assert fleet.table["routers"] and set(fleet.table["routers"]) <= {
        ns.id for ns in fleet.namespaces
    }  # the original is untouched
    with pytest.raises(ValueError, match="has 3 routers"):
        rename_routers(fleet, ids[:2])
    with pytest.raises(ValueError, match="distinct"):
        rename_routers(fleet, [ids[0]] * 3)
