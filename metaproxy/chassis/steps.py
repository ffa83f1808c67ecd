"""From what a metadata namespace must be to what must be done: pure decisions.

The host's state (L{HostState}: the C{ovnmeta-} namespaces, the link in each and the
bridge-side links) and the plans (L{metaproxy.chassis.plan}) give the netlink steps
(L{network_steps}, L{teardown_steps}); the local OVS copy gives the OVSDB steps
(L{ovs_steps}). A network already as planned gives no step, so running the decisions
again after the steps have been done gives nothing: the reconciliation is idempotent.

Addresses inside the namespace are made exactly the planned ones, except the kernel's
own IPv6 link-local address (C{fe80::/64} derived from the MAC), which is left alone
when not planned: it answers nothing metaproxy serves, and removing it would only make
it come back when the link flaps.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import attrs

from metaproxy.chassis.localovs import OvsPort
from metaproxy.chassis.plan import NetworkPlan, namespace_for, veth_names

__all__ = [
    "LinkState",
    "HostState",
    "CreateNamespace",
    "DeleteNamespace",
    "CreateVeth",
    "DeleteLink",
    "SetLink",
    "AddAddress",
    "DeleteAddress",
    "ChecksumFill",
    "Plug",
    "SetIfaceId",
    "Unplug",
    "network_steps",
    "teardown_steps",
    "ovs_steps",
    "orphan_port_steps",
]


@attrs.frozen
class LinkState:
    name: str
    mac: str = ""
    mtu: int = 0
    up: bool = False
    addresses: frozenset[str] = frozenset()


@attrs.frozen
class HostState:
    """The C{ovnmeta-} namespaces (in scope), the veth end in each (by namespace) and
    the bridge-side ends in the root namespace (by name)."""

    namespaces: frozenset[str] = frozenset()
    inside: Mapping[str, LinkState] = attrs.field(factory=dict)
    outside: Mapping[str, LinkState] = attrs.field(factory=dict)


# -- netlink steps ----------------------------------------------------------------------


@attrs.frozen
class CreateNamespace:
    namespace: str


@attrs.frozen
class DeleteNamespace:
    namespace: str


@attrs.frozen
class CreateVeth:
    outside: str
    inside: str
    namespace: str


@attrs.frozen
class DeleteLink:
    name: str
    namespace: str | None = None


@attrs.frozen
class SetLink:
    """Set what is not None, and bring the link up."""

    name: str
    namespace: str | None = None
    mac: str | None = None
    mtu: int | None = None


@attrs.frozen
class AddAddress:
    namespace: str
    link: str
    cidr: str


@attrs.frozen
class DeleteAddress:
    namespace: str
    link: str
    cidr: str


@attrs.frozen
class ChecksumFill:
    """Fill TCP checksums leaving the namespace (C{netdev} bridges leave them partial):
    IPv4 always, and IPv6 when C{ipv6} (the host has IPv6: the namespace may answer on
    C{fe80::a9fe:a9fe}, whose TCP answers are left partial the same way)."""

    namespace: str
    ipv6: bool = False


# -- OVSDB steps --------------------------------------------------------------------------


@attrs.frozen
class Plug:
    bridge: str
    name: str
    iface_id: str


@attrs.frozen
class SetIfaceId:
    port: OvsPort
    iface_id: str


@attrs.frozen
class Unplug:
    port: OvsPort


def _kernel_link_local(cidr: str) -> bool:
    interface = ipaddress.ip_interface(cidr)
    return (
        interface.version == 6
        and interface.network.prefixlen == 64
        and (interface.ip.is_link_local)
    )


def network_steps(
    plan: NetworkPlan, host: HostState, *, checksum_fill: bool, ipv6: bool = False
) -> list[object]:
    """The netlink steps that make C{plan}'s namespace as planned; C{checksum_fill} on a
    C{netdev} bridge (C{ipv6}: for IPv6 too)."""
    steps: list[object] = []
    ns = plan.namespace
    inside = host.inside.get(ns) if ns in host.namespaces else None
    outside = host.outside.get(plan.outside)
    if inside is None:
        if ns not in host.namespaces:
            steps.append(CreateNamespace(ns))
        if outside is not None:  # one end left alone: start again
            steps.append(DeleteLink(plan.outside))
        steps.append(CreateVeth(plan.outside, plan.inside, ns))
        inside, outside = LinkState(plan.inside), LinkState(plan.outside)
        if checksum_fill:
            steps.append(ChecksumFill(ns, ipv6))
    elif outside is None:  # cannot be: a veth's ends go together; start again
        steps += [DeleteLink(plan.inside, ns), CreateVeth(plan.outside, plan.inside, ns)]
        inside, outside = LinkState(plan.inside), LinkState(plan.outside)
        if checksum_fill:
            steps.append(ChecksumFill(ns, ipv6))
    mtu = plan.mtu or None
    set_inside = SetLink(
        plan.inside,
        ns,
        mac=plan.mac if inside.mac.lower() != plan.mac else None,
        mtu=mtu if mtu and inside.mtu != mtu else None,
    )
    if set_inside.mac or set_inside.mtu or not inside.up:
        steps.append(set_inside)
    if (mtu and outside.mtu != mtu) or not outside.up:
        steps.append(SetLink(plan.outside, None, mtu=mtu if mtu and outside.mtu != mtu else None))
    for cidr in sorted(inside.addresses - plan.addresses):
        if not _kernel_link_local(cidr):
            steps.append(DeleteAddress(ns, plan.inside, cidr))
    for cidr in sorted(plan.addresses - inside.addresses):
        steps.append(AddAddress(ns, plan.inside, cidr))
    return steps


def teardown_steps(network_id: str, host: HostState) -> list[object]:
    """The netlink steps that remove a network's namespace and veth."""
    ns = namespace_for(network_id)
    outside, _inside = veth_names(network_id)
    steps: list[object] = []
    if outside in host.outside:
        steps.append(DeleteLink(outside))
    if ns in host.namespaces:
        steps.append(DeleteNamespace(ns))
    return steps


def ovs_steps(
    network_id: str,
    plan: NetworkPlan | None,
    ports: Mapping[str, OvsPort],
    bridge: str,
    *,
    replug: bool = False,
) -> list[object]:
    """The OVSDB steps for a network's bridge-side port: plugged into C{bridge} only,
    with the metadata port's C{iface-id}, when planned; unplugged when not.

    C{replug}: the veth was just made again, so a port already in the database is
    unplugged and plugged anew (Open vSwitch's userspace datapath keeps reading the
    device it opened, which is gone, until the port is re-created)."""
    outside, _inside = veth_names(network_id)
    port = ports.get(outside)
    if plan is None:
        return [Unplug(port)] if port is not None and port.bridges else []
    if replug and port is not None and port.bridges:
        return [Unplug(port), Plug(bridge, outside, plan.logical_port)]
    if port is None or bridge not in port.bridges:
        steps: list[object] = []
        if port is not None and port.bridges:  # on another bridge (the OVN bridge changed)
            steps.append(Unplug(port))
        steps.append(Plug(bridge, outside, plan.logical_port))
        return steps
    if len(port.bridges) > 1:
        others = attrs.evolve(port, bridges=tuple(b for b in port.bridges if b != bridge))
        return [Unplug(others)] + (
            [SetIfaceId(port, plan.logical_port)]
            if set(port.iface_ids) != {plan.logical_port}
            else []
        )
    if set(port.iface_ids) != {plan.logical_port}:
        return [SetIfaceId(port, plan.logical_port)]
    return []


def orphan_port_steps(
    ports: Mapping[str, OvsPort], metadata_ports: set[str], keep: set[str]
) -> list[object]:
    """Unplug the metadata veths the database still has on a bridge but no namespace
    needs (after a reboot, namespaces and veths are gone while Open_vSwitch keeps the
    ports): ports whose C{iface-id} is a metadata port's, other than those in C{keep}."""
    return [
        Unplug(port)
        for name, port in sorted(ports.items())
        if port.bridges and name not in keep and set(port.iface_ids) & metadata_ports
    ]
