"""metaproxy.chassis.provision: passes over in-memory host and OVS doubles: converging,
idempotent, tearing down, coalescing, retrying."""

import attrs
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock

from metaproxy.chassis.identity import ChassisIdentity
from metaproxy.chassis.provision import Provisioner
from metaproxy.chassis.steps import (
    AddAddress,
    ChecksumFill,
    CreateNamespace,
    CreateVeth,
    DeleteAddress,
    DeleteLink,
    DeleteNamespace,
    HostState,
    LinkState,
    SetLink,
)

NET = "aaaa0000-1111-2222-3333-444455556666"
NS, OUT, IN = f"ovnmeta-{NET}", "tapaaaa0000-10", "tapaaaa0000-11"


class MemoryHost:
    """The kernel's side, in memory: applies netlink steps to its state."""

    prefix = "ovnmeta-"

    def __init__(self):
        self.namespaces, self.inside, self.outside = set(), {}, {}
        self.applied, self.fail_with = [], None

    def observe(self, network_ids):
        return succeed(HostState(frozenset(self.namespaces), dict(self.inside), dict(self.outside)))

    def apply(self, steps):
        if self.fail_with:
            return fail(RuntimeError(self.fail_with))
        for step in steps:
            self.applied.append(step)
            if isinstance(step, CreateNamespace):
                self.namespaces.add(step.namespace)
            elif isinstance(step, DeleteNamespace):
                self.namespaces.discard(step.namespace)
                self.inside.pop(step.namespace, None)
            elif isinstance(step, CreateVeth):
                self.inside[step.namespace] = LinkState(step.inside, "fa:16:3e:ff:ff:ff", 1500)
                self.outside[step.outside] = LinkState(step.outside, "", 1500)
            elif isinstance(step, DeleteLink):
                self.outside.pop(step.name, None)
                self.inside = {k: v for k, v in self.inside.items() if not k.endswith(NET)}
            elif isinstance(step, SetLink):
                table = self.inside if step.namespace else self.outside
                key = step.namespace or step.name
                link = table[key]
                table[key] = attrs.evolve(
                    link, up=True, mac=step.mac or link.mac, mtu=step.mtu or link.mtu
                )
            elif isinstance(step, AddAddress):
                link = self.inside[step.namespace]
                self.inside[step.namespace] = attrs.evolve(
                    link, addresses=link.addresses | {step.cidr}
                )
            elif isinstance(step, DeleteAddress):
                link = self.inside[step.namespace]
                self.inside[step.namespace] = attrs.evolve(
                    link, addresses=link.addresses - {step.cidr}
                )
        return succeed(None)


class MemoryOvs:
    """The local Open_vSwitch copy, with transactions applied to it."""

    def __init__(self):
        self.tables = {
            "Open_vSwitch": {"o": {"external_ids": {"system-id": "compute-1"}}},
            "Bridge": {"b": {"name": "br-int", "datapath_type": "netdev", "ports": ()}},
            "Port": {},
            "Interface": {},
        }
        self.transactions = []
        self.synchronised = True

    def transact(self, ops, must_match=()):
        self.transactions.append(ops)
        n = len(self.tables["Port"])
        for op in ops:
            if op["op"] == "insert" and op["table"] == "Interface":
                iface = {
                    "name": op["row"]["name"],
                    "external_ids": dict(op["row"]["external_ids"][1]),
                }
                self.tables["Interface"][f"i{n}"] = iface
            elif op["op"] == "insert" and op["table"] == "Port":
                self.tables["Port"][f"p{n}"] = {"name": op["row"]["name"], "interfaces": (f"i{n}",)}
            elif op["op"] == "mutate" and op["table"] == "Bridge":
                (_col, mutator, value) = op["mutations"][0]
                bridge = self.tables["Bridge"]["b"]
                if mutator == "insert":
                    bridge["ports"] = tuple(bridge["ports"]) + (f"p{n}",)
                else:
                    gone = {ref[1] for ref in value[1]}
                    bridge["ports"] = tuple(p for p in bridge["ports"] if p not in gone)
        return succeed([{"count": 1}] * len(ops))


class MemoryAgent:
    def __init__(self, sb_tables):
        self.identity = ChassisIdentity("compute-1", "br-int")
        self.sb_tables = sb_tables
        self.ovs_monitor = MemoryOvs()
        self.ready = True
        self.on_state = lambda: None

    @property
    def ovs_tables(self):
        return self.ovs_monitor.tables


def sb(vm_here=True):
    ports = {
        "md": {
            "logical_port": "md-port",
            "datapath": "dp",
            "chassis": (),
            "mac": ("fa:16:3e:00:00:02 10.0.0.2",),
            "type": "localport",
            "external_ids": {
                "neutron:cidrs": "10.0.0.2/24",
                "neutron:device_owner": "network:distributed",
                "neutron:mtu": "1400",
            },
        }
    }
    if vm_here:
        ports["vm"] = {
            "logical_port": "vm-port",
            "datapath": "dp",
            "chassis": ("ch",),
            "mac": ("fa:16:3e:00:00:11 10.0.0.11",),
            "type": "",
            "external_ids": {},
        }
    return {
        "Chassis": {"ch": {"name": "compute-1"}},
        "Datapath_Binding": {"dp": {"external_ids": {"name": f"neutron-{NET}"}}},
        "Port_Binding": ports,
    }


def harness(vm_here=True):
    clock, host, agent = Clock(), MemoryHost(), MemoryAgent(sb(vm_here))
    provisioner = Provisioner(clock, agent, host, ipv6_enabled=True, retry_min=1, retry_max=4)
    events = []
    provisioner.on_provisioned = lambda plan: events.append(("up", plan.network_id))
    provisioner.on_removed = lambda network: events.append(("down", network))
    return clock, host, agent, provisioner, events


def test_a_pass_provisions_and_plugs_and_a_second_pass_changes_nothing() -> None:
    clock, host, agent, provisioner, events = harness()
    agent.on_state()  # the agent asks
    clock.advance(0)
    assert NS in host.namespaces
    assert host.inside[NS].addresses == {"10.0.0.2/24", "169.254.169.254/32"}
    assert host.inside[NS].mac == "fa:16:3e:00:00:02" and host.inside[NS].mtu == 1400
    assert ChecksumFill(NS, ipv6=True) in host.applied  # br-int is netdev; IPv6 host
    [iface] = agent.ovs_tables["Interface"].values()
    assert iface == {"name": OUT, "external_ids": {"iface-id": "md-port"}}
    assert events == [("up", NET)]

    applied, transactions = len(host.applied), len(agent.ovs_monitor.transactions)
    provisioner.request()
    clock.advance(0)
    assert len(host.applied) == applied and len(agent.ovs_monitor.transactions) == transactions
    assert events == [("up", NET)]


def test_the_last_vm_leaving_tears_the_namespace_down() -> None:
    clock, host, agent, provisioner, events = harness()
    provisioner.request()
    clock.advance(0)
    del agent.sb_tables["Port_Binding"]["vm"]
    provisioner.request()
    clock.advance(0)
    assert NS not in host.namespaces and OUT not in host.outside
    assert agent.ovs_tables["Bridge"]["b"]["ports"] == ()
    assert events == [("up", NET), ("down", NET)]


def test_a_stale_namespace_is_removed_by_the_first_pass() -> None:
    clock, host, agent, provisioner, events = harness(vm_here=False)
    host.namespaces.add("ovnmeta-stale")
    provisioner.request()
    clock.advance(0)
    assert host.namespaces == set()
    assert DeleteNamespace("ovnmeta-stale") in host.applied


def test_requests_during_a_pass_make_one_more_pass() -> None:
    clock, host, agent, provisioner, events = harness()
    passes = []
    real = provisioner.reconcile

    async def counting():
        passes.append(1)
        if len(passes) == 1:  # asked twice more during the first pass
            provisioner.request()
            provisioner.request()
        return await real()

    provisioner.reconcile = counting
    provisioner.request()
    provisioner.request()
    clock.advance(0)
    assert len(passes) == 2 and provisioner.passes == 2


def test_a_failing_pass_is_retried_with_backoff_until_it_succeeds() -> None:
    clock, host, agent, provisioner, events = harness()
    host.fail_with = "Operation not permitted"
    provisioner.request()
    clock.advance(0)
    assert provisioner.passes == 1 and NS not in host.namespaces
    clock.advance(1)
    assert provisioner.passes == 2
    clock.advance(1.9)
    assert provisioner.passes == 2  # backoff doubled to 2 s
    host.fail_with = None
    clock.advance(0.1)
    assert provisioner.passes == 3 and NS in host.namespaces


def test_nothing_runs_before_the_agent_is_ready_or_without_the_bridge() -> None:
    clock, host, agent, provisioner, events = harness()
    agent.ready = False
    provisioner.request()
    clock.advance(0)
    assert provisioner.passes == 0 and host.applied == []
    agent.ready = True
    agent.ovs_tables["Bridge"]["b"]["name"] = "br-other"
    provisioner.request()
    clock.advance(0)
    assert provisioner.passes == 1 and host.applied == []


def test_a_namespace_deleted_behind_our_back_is_made_again_and_served_again() -> None:
    clock, host, agent, provisioner, events = harness()
    provisioner.request()
    clock.advance(0)
    host.namespaces.discard(NS)  # ip netns delete, by someone else
    host.inside.pop(NS)
    host.outside.pop(OUT)
    provisioner.request()
    clock.advance(0)
    assert NS in host.namespaces
    assert events == [("up", NET), ("down", NET), ("up", NET)]


def test_a_metadata_port_left_on_the_bridge_after_a_reboot_is_unplugged() -> None:
    clock, host, agent, provisioner, events = harness(vm_here=False)
    ovs = agent.ovs_monitor
    ovs.transact(
        [
            {
                "op": "insert",
                "table": "Interface",
                "row": {"name": OUT, "external_ids": ["map", [["iface-id", "md-port"]]]},
            },
            {"op": "insert", "table": "Port", "row": {"name": OUT}},
            {"op": "mutate", "table": "Bridge", "mutations": [["ports", "insert", ["set", []]]]},
        ]
    )
    other = {"name": "vm-tap", "external_ids": {"iface-id": "vm-port"}}
    agent.ovs_tables["Interface"]["i9"] = other
    agent.ovs_tables["Port"]["p9"] = {"name": "vm-tap", "interfaces": ("i9",)}
    agent.ovs_tables["Bridge"]["b"]["ports"] += ("p9",)
    assert len(agent.ovs_tables["Bridge"]["b"]["ports"]) == 2
    provisioner.request()
    clock.advance(0)
    assert agent.ovs_tables["Bridge"]["b"]["ports"] == ("p9",)  # the instance's stays
