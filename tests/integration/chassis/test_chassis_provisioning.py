"""Provisioning on a real chassis: the first instance of a network gets its metadata
namespace, plugged into br-int and reachable through OVN; the last one leaving removes
it; namespaces left from before a start are removed."""

from __future__ import annotations

import ipaddress
import subprocess
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from bench.ovnsandbox.daemons import SandboxError, link_exists, netns_list
from metaproxy.chassis.agent import ChassisAgent
from metaproxy.chassis.netlink import NetlinkHost
from metaproxy.chassis.provision import Provisioner
from metaproxy.ovsdb.remote import parse_remotes
from tests.integration.chassis.conftest import needs_ovn, until

pytestmark = [needs_ovn, pytest.mark.slow]


class Chassis:
    """The agent and its provisioner on the sandbox, scoped to the sandbox's namespaces."""

    def __init__(self, sandbox):
        self.agent = ChassisAgent(
            reactor,
            parse_remotes(sandbox.remote("ovs")),
            parse_remotes(sandbox.remote("sb", "tcp")),
            ovs_timeout=10,
            sb_timeout=10,
            probe_interval=0,
            retry_max_interval=1,
        )
        self.host = NetlinkHost(reactor, prefix=f"ovnmeta-{sandbox.tag}")
        self.provisioner = Provisioner(reactor, self.agent, self.host, retry_min=0.2)
        self.agent.start()

    async def stop(self):
        self.provisioner.stop()
        await self.agent.stop()
        self.host.stop()


def ns_addresses(namespace: str, link: str) -> set[str]:
    out = subprocess.run(
        ["ip", "-n", namespace, "-o", "addr", "show", "dev", link],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split()[3] for line in out.splitlines()}


def link_field(namespace: str, link: str, field: str) -> str:
    words = subprocess.run(
        ["ip", "-n", namespace, "-o", "link", "show", "dev", link],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return words[words.index(field) + 1]


def iface_id(sandbox, name: str) -> str | None:
    rows = sandbox.ovs_select("Interface", [["name", "==", name]], ["external_ids"])
    return rows[0]["external_ids"].get("iface-id") if rows else None


def on_bridge(sandbox, name: str) -> bool:
    [bridge] = sandbox.ovs_select("Bridge", [["name", "==", "br-int"]], ["ports"])
    ports = bridge["ports"] if isinstance(bridge["ports"], list) else [bridge["ports"]]
    names = {
        row["name"]
        for row in sandbox.ovs_select("Port", [], ["name", "_uuid"])
        if row["_uuid"] in ports
    }
    return name in names


@pytest_twisted.ensureDeferred
async def test_first_instance_provisions_and_last_one_tears_down(sandbox, cloud) -> None:
    net = cloud.add_network("10.6.0.0/24", mtu=1400)
    namespace = f"ovnmeta-{net.id}"
    outside, inside = f"tap{net.id[:10]}0", f"tap{net.id[:10]}1"
    chassis = Chassis(sandbox)
    try:
        await until(lambda: chassis.agent.ready)
        await chassis.provisioner.idle()
        assert namespace not in netns_list()  # no instance here yet: nothing to serve

        a = cloud.add_instance(net)
        cloud.wait_bound(a)
        bound_at = time.monotonic()
        await until(lambda: iface_id(sandbox, outside) == net.metadata_port_id)
        provisioned_in = time.monotonic() - bound_at
        print(f"port bound -> namespace provisioned and plugged: {provisioned_in * 1000:.0f} ms")

        assert namespace in netns_list()
        assert ns_addresses(namespace, inside) >= {"10.6.0.2/24", "169.254.169.254/32"}
        assert not {a for a in ns_addresses(namespace, inside) if not a.startswith("fe80:")} - {
            "10.6.0.2/24",
            "169.254.169.254/32",
        }
        assert link_field(namespace, inside, "link/ether") == net.metadata_mac
        assert link_field(namespace, inside, "mtu") == "1400"
        # its loopback is up, as upstream's agent leaves it
        assert "UP" in link_field(namespace, "lo", "lo:").strip("<>").split(",")
        assert on_bridge(sandbox, outside)
        rules = subprocess.run(
            ["ip", "netns", "exec", namespace, "iptables", "-t", "mangle", "-S"],
            capture_output=True,
            text=True,
        ).stdout
        assert "CHECKSUM --checksum-fill" in rules  # br-int is netdev

        # the instance reaches 169.254.169.254 through OVN (route via the metadata port)
        sandbox.sync()
        assert cloud.probe(a, "ping", "169.254.169.254").returncode == 0

        b = cloud.add_instance(net)
        cloud.wait_bound(b)
        await deferLater(reactor, 0.3, lambda: None)
        await chassis.provisioner.idle()
        cloud.remove_instance(a)
        await deferLater(reactor, 0.5, lambda: None)
        await chassis.provisioner.idle()
        assert namespace in netns_list()  # b is still here

        cloud.remove_instance(b)
        removed_at = time.monotonic()
        await until(lambda: namespace not in netns_list())
        print(
            f"last port gone -> namespace removed: {(time.monotonic() - removed_at) * 1000:.0f} ms"
        )
        await until(lambda: not on_bridge(sandbox, outside))
        assert not link_exists(outside)
    finally:
        await chassis.stop()


@pytest_twisted.ensureDeferred
async def test_stale_namespaces_are_removed_at_start(sandbox, cloud) -> None:
    stale = f"ovnmeta-{sandbox.tag}0000-dead-beef-0000-000000000000"
    sandbox.record_namespace(stale)
    subprocess.run(["ip", "netns", "add", stale], check=True)
    net = cloud.add_network("10.7.0.0/24")
    vm = cloud.add_instance(net)
    cloud.wait_bound(vm)
    chassis = Chassis(sandbox)
    try:
        await until(lambda: stale not in netns_list())
        await until(lambda: f"ovnmeta-{net.id}" in netns_list())
    finally:
        await chassis.stop()


@pytest_twisted.ensureDeferred
async def test_subnet_addresses_follow_the_ports_in_use(sandbox, cloud) -> None:
    net = cloud.add_network("10.8.0.0/24")
    vm = cloud.add_instance(net)
    cloud.wait_bound(vm)
    chassis = Chassis(sandbox)
    namespace, inside = f"ovnmeta-{net.id}", f"tap{net.id[:10]}1"
    try:
        await until(lambda: "10.8.0.2/24" in _safe_addresses(namespace, inside))
        # a second subnet on the metadata port, and no port of it here: not configured
        [md] = sandbox.nb_select(
            "Logical_Switch_Port", [["name", "==", net.metadata_port_id]], ["_uuid"]
        )
        sandbox.nb_transact(
            [
                {
                    "op": "mutate",
                    "table": "Logical_Switch_Port",
                    "where": [["_uuid", "==", ["uuid", md["_uuid"]]]],
                    "mutations": [
                        ["external_ids", "delete", ["set", ["neutron:cidrs"]]],
                        [
                            "external_ids",
                            "insert",
                            ["map", [["neutron:cidrs", "10.8.0.2/24 10.9.0.2/24"]]],
                        ],
                    ],
                }
            ]
        )
        await deferLater(reactor, 0.5, lambda: None)
        await chassis.provisioner.idle()
        assert "10.9.0.2/24" not in _safe_addresses(namespace, inside)
        assert ipaddress.ip_interface("10.8.0.2/24")
    finally:
        await chassis.stop()


def _safe_addresses(namespace, link):
    try:
        return ns_addresses(namespace, link)
    except subprocess.CalledProcessError:
        return set()


@pytest_twisted.ensureDeferred
async def test_changes_made_while_the_southbound_was_away_are_applied_after_reconnecting(
    sandbox, cloud
) -> None:
    kept, dropped = cloud.add_network("10.14.0.0/24"), cloud.add_network("10.15.0.0/24")
    vm_kept, vm_dropped = cloud.add_instance(kept), cloud.add_instance(dropped)
    cloud.wait_bound(vm_kept)
    cloud.wait_bound(vm_dropped)
    chassis = Chassis(sandbox)
    try:
        await until(lambda: set(chassis.provisioner.provisioned) == {kept.id, dropped.id})
        syncs = chassis.agent.sb_monitor.syncs
        sandbox.stop_database("sb")
        cloud.unplug(vm_dropped)  # the instance goes while the Southbound is down
        await deferLater(reactor, 0.3, lambda: None)
        assert f"ovnmeta-{dropped.id}" in netns_list()  # nothing known yet
        sandbox.start_database("sb")
        await until(lambda: chassis.agent.sb_monitor.syncs > syncs)
        await until(lambda: f"ovnmeta-{dropped.id}" not in netns_list())
        assert f"ovnmeta-{kept.id}" in netns_list()
        assert chassis.agent.registration.registered >= 2  # registered again on resync
    finally:
        await chassis.stop()


@pytest_twisted.ensureDeferred
async def test_what_someone_else_undoes_is_put_back(sandbox, cloud) -> None:
    net = cloud.add_network("10.18.0.0/24")
    vm = cloud.add_instance(net)
    cloud.wait_bound(vm)
    chassis = Chassis(sandbox)
    namespace, outside, inside = f"ovnmeta-{net.id}", f"tap{net.id[:10]}0", f"tap{net.id[:10]}1"
    try:
        await until(lambda: iface_id(sandbox, outside) == net.metadata_port_id)
        sandbox.ovs_vsctl("del-port", "br-int", outside)  # an operator's mistake
        await until(lambda: iface_id(sandbox, outside) == net.metadata_port_id)
        assert on_bridge(sandbox, outside)

        # an address removed by hand comes back at the next pass (any change asks for one)
        subprocess.run(
            ["ip", "-n", namespace, "addr", "del", "169.254.169.254/32", "dev", inside], check=True
        )
        cloud.add_instance(net)
        await until(lambda: "169.254.169.254/32" in _safe_addresses(namespace, inside))
    finally:
        await chassis.stop()


@pytest_twisted.ensureDeferred
async def test_after_a_reboot_ports_of_namespaces_no_longer_needed_are_unplugged(
    sandbox, cloud
) -> None:
    gone, staying = cloud.add_network("10.21.0.0/24"), cloud.add_network("10.22.0.0/24")
    vm_gone, vm_staying = cloud.add_instance(gone), cloud.add_instance(staying)
    cloud.wait_bound(vm_gone)
    cloud.wait_bound(vm_staying)
    chassis = Chassis(sandbox)
    try:
        await until(lambda: set(chassis.provisioner.provisioned) == {gone.id, staying.id})
    finally:
        await chassis.stop()
    # "reboot": namespaces and veths vanish, the Open_vSwitch database keeps its ports;
    # one instance does not come back
    for net in (gone, staying):
        subprocess.run(["ip", "netns", "delete", f"ovnmeta-{net.id}"], check=True)
    cloud.remove_instance(vm_gone)
    assert on_bridge(sandbox, f"tap{gone.id[:10]}0")
    chassis = Chassis(sandbox)
    try:
        await until(lambda: not on_bridge(sandbox, f"tap{gone.id[:10]}0"))
        await until(lambda: f"ovnmeta-{staying.id}" in netns_list())
        assert f"ovnmeta-{gone.id}" not in netns_list()
        assert on_bridge(sandbox, f"tap{staying.id[:10]}0")
        tap = f"tap{staying.id[:10]}1"
        await until(lambda: "169.254.169.254/32" in _safe_addresses(f"ovnmeta-{staying.id}", tap))
        sandbox.sync()
        # the probe blocks this reactor (the chassis's too) while it waits: give the
        # chassis a turn between tries, as a booting instance's retries would
        for attempt in range(3):
            try:
                assert cloud.probe(vm_staying, "ping", "169.254.169.254").returncode == 0
                break
            except SandboxError:
                if attempt == 2:
                    raise
                await deferLater(reactor, 1.0, lambda: None)
    finally:
        await chassis.stop()
