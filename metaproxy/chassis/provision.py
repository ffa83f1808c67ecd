"""Provisioning: make the host's C{ovnmeta-} namespaces what the Southbound copy says.

    provisioner = Provisioner(reactor, agent, NetlinkHost(reactor))
    # agent.on_state now asks for a pass; nothing else to call

A pass (L{Provisioner.reconcile}) plans every network (L{metaproxy.chassis.plan}),
observes the host, then for each network:

  - not planned but its namespace exists (the last instance left, or a namespace left
    from before a restart: the first pass after start removes those): the OVS port is
    unplugged, the veth and the namespace deleted;
  - planned: the netlink steps (L{metaproxy.chassis.steps.network_steps}) and the OVSDB
    steps (L{metaproxy.chassis.steps.ovs_steps}) that make it as planned, if any;

and finally the metadata veths Open_vSwitch still has on a bridge that no namespace
needs (a reboot removes namespaces and veths, not the database's ports) are unplugged.

Passes never overlap: a request during a pass makes one more pass after it, however many
requests came. A pass that fails for a network logs why and leaves the other networks
done; another pass follows after a backoff (1 s doubling to 30 s) until one succeeds.
Nothing runs before both databases are synchronised and the chassis is known.

C{on_provisioned(plan)} and C{on_removed(network_id)} tell the listener (the
namespace's socket) when a namespace is ready to serve or about to go; a namespace that
had to be made again (someone deleted it) gets C{on_removed} then C{on_provisioned}.
"""

from __future__ import annotations

import inspect
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from metaproxy.chassis import localovs
from metaproxy.chassis.plan import (
    NS_PREFIX,
    NetworkPlan,
    metadata_logical_ports,
    namespace_for,
    plan_networks,
    veth_names,
)
from metaproxy.chassis.steps import (
    CreateNamespace,
    CreateVeth,
    Plug,
    SetIfaceId,
    Unplug,
    network_steps,
    orphan_port_steps,
    ovs_steps,
    teardown_steps,
)

__all__ = ["Provisioner", "host_has_ipv6", "ovs_operations"]

log = Logger("metaproxy.chassis")


def host_has_ipv6() -> bool:
    """IPv6 is enabled on this host (as upstream checks before planning IPv6 addresses)."""
    try:
        with open("/proc/sys/net/ipv6/conf/default/disable_ipv6") as f:
            return f.read().strip() == "0" and socket.has_ipv6
    except OSError:
        return False


def ovs_operations(step: object) -> tuple[list[dict[str, Any]], list[int]]:
    """The OVSDB operations of an OVS step, and the indexes that must match a row."""
    if isinstance(step, Plug):
        return localovs.plug_operations(step.bridge, step.name, step.iface_id), [2]
    if isinstance(step, SetIfaceId):
        return localovs.set_iface_id_operations(step.port, step.iface_id), []
    if isinstance(step, Unplug):
        return localovs.unplug_operations(step.port), []
    raise TypeError(f"not an OVS step: {step!r}")


class _NetworkFailed(Exception):
    pass


class Provisioner:
    """Runs the passes described in the module docstring.

    @param agent: a L{metaproxy.chassis.agent.ChassisAgent} (C{ready}, C{identity},
        C{sb_tables}, C{ovs_tables}, C{ovs_monitor.transact}, C{on_state}).
    @param host: C{observe(network_ids) -> Deferred[HostState]},
        C{apply(steps) -> Deferred}, C{prefix} (L{metaproxy.chassis.netlink.NetlinkHost}).
    """

    def __init__(
        self,
        clock: Any,
        agent: Any,
        host: Any,
        *,
        ipv6_enabled: bool | None = None,
        retry_min: float = 1.0,
        retry_max: float = 30.0,
    ) -> None:
        self._clock = clock
        self._agent = agent
        self._host = host
        self._ipv6 = host_has_ipv6() if ipv6_enabled is None else ipv6_enabled
        self._retry_min, self._retry_max = retry_min, retry_max
        self._failures = 0
        self._running = False
        self._again = False
        self._call: Any = None
        self._stopped = False
        self._idle: list[Deferred[None]] = []
        #: the networks provisioned by the last pass, by id
        self.provisioned: dict[str, NetworkPlan] = {}
        #: passes run, and those of them that left a network not as planned
        self.passes = 0
        self.failed_passes = 0
        self.on_provisioned: Callable[[NetworkPlan], Any] = lambda plan: None
        self.on_removed: Callable[[str], Any] = lambda network_id: None
        agent.on_state = self.request

    def request(self) -> None:
        """Ask for a pass (soon; after the current one if one runs)."""
        if self._stopped:
            return
        if self._running:
            self._again = True
        elif self._call is None or not self._call.active():
            self._call = self._clock.callLater(0, self._start_pass)

    def stop(self) -> None:
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()

    @property
    def settled(self) -> bool:
        """A pass has run and the last one made every network as planned."""
        return self.passes > 0 and self._failures == 0

    def idle(self) -> Deferred[None]:
        """Fires when no pass runs or is due (tests wait on it)."""
        if not self._running and (self._call is None or not self._call.active()):
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def _start_pass(self) -> None:
        self._call = None
        if self._stopped or not self._agent.ready:
            self._notify_idle()
            return
        self._running = True
        self._again = False
        d = ensureDeferred(self.reconcile())
        d.addCallbacks(self._pass_done, self._pass_failed)

    def _pass_done(self, ok: bool) -> None:
        self._running = False
        self.passes += 1
        if not ok:
            self.failed_passes += 1
            self._failures += 1
            delay = min(self._retry_max, self._retry_min * 2 ** (self._failures - 1))
            self._call = self._clock.callLater(delay, self._start_pass)
            return
        self._failures = 0
        if self._again:
            self.request()
        else:
            self._notify_idle()

    def _pass_failed(self, failure: Failure) -> None:
        log.failure("Provisioning pass failed unexpectedly", failure)
        self._pass_done(False)

    def _notify_idle(self) -> None:
        if self._running or (self._call is not None and self._call.active()):
            return
        waiting, self._idle = self._idle, []
        for d in waiting:
            d.callback(None)

    # -- one pass ------------------------------------------------------------------------

    async def reconcile(self) -> bool:
        """One pass; True when every network is as planned."""
        agent = self._agent
        identity = agent.identity
        ovs_tables = agent.ovs_tables
        plans = plan_networks(agent.sb_tables, identity.name, ipv6_enabled=self._ipv6)
        if identity.bridge not in localovs.bridge_names(ovs_tables):
            log.warn(
                "The OVN bridge {bridge} cannot be found in the local Open_vSwitch "
                "database: no metadata namespace can be plugged; retrying",
                bridge=identity.bridge,
            )
            return False
        host = await self._host.observe(plans)
        checksum_fill = localovs.bridge_datapath_type(ovs_tables, identity.bridge) == "netdev"
        ok = True
        present = {ns[len(NS_PREFIX) :] for ns in host.namespaces}
        # the ports as this pass began: each network's steps read its own port only,
        # which no other network's steps change (read once: not once per network)
        ports = localovs.ports_by_name(ovs_tables)
        for network in sorted(present - set(plans)):
            ok &= await self._teardown(network, host, ports)
        for _network, plan in sorted(plans.items()):
            ok &= await self._provision(plan, host, checksum_fill, ports)
        ok &= await self._unplug_orphans(set(plans) | present)
        return ok

    async def _unplug_orphans(self, networks: set[str]) -> bool:
        """Unplug metadata veths of networks other than C{networks} (those planned, and
        those whose namespace this pass found: their teardown unplugged theirs)."""
        ports = localovs.ports_by_name(self._agent.ovs_tables)
        keep = {veth_names(network)[0] for network in networks}
        steps = orphan_port_steps(ports, metadata_logical_ports(self._agent.sb_tables), keep)
        for step in steps:
            log.info(
                "Removing OVS port {port}, a metadata port no namespace needs anymore",
                port=step.port.name,
            )
        try:
            await self._ovs(steps)
        except Exception as e:
            log.error("Cannot remove unneeded metadata OVS ports: {why}", why=str(e))
            return False
        return True

    async def _teardown(self, network: str, host: Any, ports: dict[str, Any]) -> bool:
        namespace = namespace_for(network)
        log.info(
            "Cleaning up {namespace} namespace which is not needed anymore", namespace=namespace
        )
        try:
            self.provisioned.pop(network, None)
            await _maybe_async(self.on_removed(network))
            await self._ovs(ovs_steps(network, None, ports, self._agent.identity.bridge))
            await self._host.apply(teardown_steps(network, host))
        except Exception as e:
            log.error(
                "Error unable to destroy namespace {namespace}: {why}",
                namespace=namespace,
                why=str(e),
            )
            return False
        return True

    async def _provision(
        self, plan: NetworkPlan, host: Any, checksum_fill: bool, ports: dict[str, Any]
    ) -> bool:
        steps = network_steps(plan, host, checksum_fill=checksum_fill, ipv6=self._ipv6)
        new_veth = any(isinstance(step, CreateVeth) for step in steps)
        plugs = ovs_steps(
            plan.network_id, plan, ports, self._agent.identity.bridge, replug=new_veth
        )
        if steps or plugs:
            log.info("Provisioning metadata for network {network}", network=plan.network_id)
        try:
            if plan.network_id in self.provisioned and (
                new_veth or any(isinstance(step, CreateNamespace) for step in steps)
            ):
                # the namespace (or its veth) went away behind our back: what listened
                # in the old one listens nowhere useful; close it, serve the new one
                del self.provisioned[plan.network_id]
                await _maybe_async(self.on_removed(plan.network_id))
            if steps:
                await self._host.apply(steps)
            await self._ovs(plugs)
        except Exception as e:
            log.error(
                "Provisioning metadata for network {network} failed: {why}",
                network=plan.network_id,
                why=str(e),
            )
            return False
        if self.provisioned.get(plan.network_id) != plan:
            try:
                await _maybe_async(self.on_provisioned(plan))
            except Exception as e:
                log.error(
                    "Network {network} is provisioned but not served: {why}; retrying",
                    network=plan.network_id,
                    why=str(e),
                )
                return False
            self.provisioned[plan.network_id] = plan
        return True

    async def _ovs(self, steps: list[object]) -> None:
        for step in steps:
            operations, must_match = ovs_operations(step)
            if operations:
                await self._agent.ovs_monitor.transact(operations, must_match)


async def _maybe_async(value: Any) -> Any:
    """The value of a listener's answer: awaited when it is a Deferred or a coroutine."""
    if inspect.isawaitable(value):
        return await value
    return value
