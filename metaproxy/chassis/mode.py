"""The chassis mode assembled: what the service starts when the node is an ML2/OVN
chassis metaproxy is the metadata agent of.

    mode = ChassisMode(
        reactor,
        service.listeners,               # metaproxy.http.listeners.Listeners
        ovs_remotes=parse_remotes(conf.ovs.ovsdb_connection),
        sb_remotes=parse_remotes(conf.ovn.ovn_sb_connection),
        agent_down_time=conf.agent_down_time,
    )
    mode.start()          # identity, registration, provisioning, serving
    ...
    await mode.stop()     # listeners closed; namespaces stay (the next start adopts them)

Parts, in order of the data: L{ChassisAgent} (the two databases, the registration) ->
L{Provisioner} (namespaces, veths, OVS ports, through L{NetlinkHost}) ->
L{NamespaceServing} (169.254.169.254:80 in each namespace, on the service's listeners).

Stopping leaves the namespaces in place, as upstream's agent does: instances keep their
addresses, and the next start finds them as planned (or removes those no longer
needed) in its first pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred

from metaproxy.chassis.agent import ChassisAgent
from metaproxy.chassis.leftovers import HaproxyLeftovers
from metaproxy.chassis.netlink import NetlinkHost
from metaproxy.chassis.plan import NS_PREFIX
from metaproxy.chassis.provision import Provisioner
from metaproxy.chassis.serving import METADATA_PORT, NamespaceServing, TCPListeners
from metaproxy.chassis.shapes import METADATA_AGENT, AgentKeys
from metaproxy.ops.metrics import Sample
from metaproxy.ovsdb.remote import Remote

__all__ = ["ChassisMode"]


class ChassisMode:
    """The chassis's OVN metadata agent (see the module docstring).

    @param listeners: the service's listeners, which open and close each namespace's
        TCP listener (L{metaproxy.http.listeners.Listeners.add_tcp}).
    @param namespace_prefix: the namespaces this mode owns (tests narrow it; on a node
        it is C{ovnmeta-}, every one of them, as upstream).
    @param port: where the namespaces listen (80; tests may use another).
    @param agent_keys: the agent registered as: the deployment shape's
        (L{metaproxy.chassis.shapes}).
    @param external_pids: where the replaced agent kept its haproxies' pid files: those
        left running are stopped before their namespace is served
        (L{metaproxy.chassis.leftovers}); None: none is looked for.
    """

    def __init__(
        self,
        reactor: Any,
        listeners: TCPListeners,
        *,
        ovs_remotes: Sequence[Remote],
        sb_remotes: Sequence[Remote],
        agent_down_time: int = 75,
        sb_tls_options: Any = None,
        ovs_timeout: float = 180.0,
        sb_timeout: float = 180.0,
        probe_interval: float = 60.0,
        retry_max_interval: float = 180.0,
        namespace_prefix: str = NS_PREFIX,
        port: int = METADATA_PORT,
        ipv6_enabled: bool | None = None,
        agent_keys: AgentKeys = METADATA_AGENT,
        external_pids: str | None = None,
    ) -> None:
        self.agent = ChassisAgent(
            reactor,
            ovs_remotes,
            sb_remotes,
            agent_down_time=agent_down_time,
            sb_tls_options=sb_tls_options,
            ovs_timeout=ovs_timeout,
            sb_timeout=sb_timeout,
            probe_interval=probe_interval,
            retry_max_interval=retry_max_interval,
            agent_keys=agent_keys,
        )
        self.host = NetlinkHost(reactor, prefix=namespace_prefix)
        self.provisioner = Provisioner(reactor, self.agent, self.host, ipv6_enabled=ipv6_enabled)
        self.leftovers = (
            HaproxyLeftovers(reactor, external_pids) if external_pids is not None else None
        )
        self.serving = NamespaceServing(listeners, port=port, leftovers=self.leftovers)
        self.provisioner.on_provisioned = self.serving.provisioned
        self.provisioner.on_removed = self.serving.removed

    def start(self) -> None:
        self.agent.start()

    def check(self) -> tuple[bool, str]:
        """Ready (the /healthz check, systemd's READY): both databases synchronised,
        the chassis registered, and a provisioning pass made every network as planned;
        with a line saying so, or what is awaited."""
        agent = self.agent
        identity = agent.identity
        if identity is None:
            return False, "OVN chassis: reading this node's chassis from Open_vSwitch"
        name = f"OVN chassis {identity.name}"
        if not agent.ready:
            return False, f"{name}: synchronising the Open_vSwitch and Southbound databases"
        registration = agent.registration
        if registration is None or not registration.registered:
            return False, f"{name}: not registered in Chassis_Private yet"
        if not self.provisioner.settled:
            return False, f"{name}: provisioning the metadata namespaces"
        return True, f"{name}: {len(self.serving.networks)} network(s) served"

    def metric_samples(self) -> list[Sample]:
        """What the mode counts (L{metaproxy.ops.metrics.Metrics.add_source})."""
        provisioner = self.provisioner
        registration = self.agent.registration
        ready, _ = self.check()
        return [
            Sample(
                "metaproxy_ovn_chassis_ready",
                "gauge",
                "1 when the OVN chassis mode is registered and every network provisioned.",
                (),
                1 if ready else 0,
            ),
            Sample(
                "metaproxy_ovn_chassis_networks",
                "gauge",
                "Networks whose ovnmeta- namespace metaproxy serves on this chassis.",
                (),
                len(self.serving.networks),
            ),
            Sample(
                "metaproxy_ovn_chassis_provisioning_passes_total",
                "counter",
                "Provisioning passes, by outcome (failed: a network not as planned).",
                (("outcome", "ok"),),
                provisioner.passes - provisioner.failed_passes,
            ),
            Sample(
                "metaproxy_ovn_chassis_provisioning_passes_total",
                "counter",
                "Provisioning passes, by outcome (failed: a network not as planned).",
                (("outcome", "failed"),),
                provisioner.failed_passes,
            ),
            Sample(
                "metaproxy_ovn_chassis_sb_writes_total",
                "counter",
                "Chassis_Private writes: registrations and nb_cfg followed.",
                (("kind", "register"),),
                registration.registered if registration is not None else 0,
            ),
            Sample(
                "metaproxy_ovn_chassis_sb_writes_total",
                "counter",
                "Chassis_Private writes: registrations and nb_cfg followed.",
                (("kind", "follow"),),
                registration.followed if registration is not None else 0,
            ),
            Sample(
                "metaproxy_ovn_chassis_stale_haproxy_stopped_total",
                "counter",
                "haproxies the previous metadata agent left in ovnmeta- namespaces, stopped.",
                (),
                self.leftovers.stopped if self.leftovers is not None else 0,
            ),
            Sample(
                "metaproxy_ovn_chassis_address_in_use_total",
                "counter",
                "Namespace listenings that found 169.254.169.254:80 taken by another process.",
                (),
                self.serving.address_in_use,
            ),
        ]

    async def stop(self) -> None:
        self.provisioner.stop()
        await self.serving.stop()
        await self.agent.stop()
        self.host.stop()

    def stop_deferred(self) -> Deferred[None]:
        """L{stop} as a Deferred (for C{IService.stopService})."""
        return Deferred.fromCoroutine(self.stop())
