# -*- test-case-name: tests.bench.load.test_routerfront,tests.e2e.test_routers -*-
"""The storm's C{namespaces-tcp} target: metaproxy serving in the router namespaces
itself, no haproxy (C{[metaproxy] router_namespaces = serve}, docs/routers.md).

    topology = Topology()
    fleet = router_fleet(make_fleet(1000, 50), topology)     # router ids carry the tag
    stack = start_stack(fleet, extra_metaproxy=router_mode_config(topology))
    front = start_router_front(topology, fleet, 1000)        # waits until all answer
    try:
        result = run_storm(config, fleet, [stack.agent.pid], target=front.target)
    finally:
        front.stop()

What the L3 agent builds with C{enable_metadata_proxy = False}: per router of the fleet a
C{qrouter-} namespace with a C{qr-} port per network, the L3 agent's sysctls and its
metadata mark rule, and no redirect and no haproxy; per network one instance-side
namespace, as for the haproxy target (L{bench.load.nstarget}, whose plan and target this
reuses). The agent finds the namespaces itself (inotify on C{/run/netns}) and listens in
each on C{169.254.169.254:80}; the instances connect to it from their own address.

The agent takes the router from the namespace's name, so the kernel's namespace must be
C{qrouter-<the router id in the table>}; namespaces carry the run's tag, so the fleet's
routers are renamed to the topology's ids first (L{router_fleet}), and the agent is told
to serve only those (C{router_id_prefix}): other runs' routers on the same host are left
alone.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import attrs

from bench.load.fleet import Fleet, rename_routers
from bench.load.netns import METADATA_V4, Namespace, Topology, TopologyError
from bench.load.netns_host import ensure_neighbour_room
from bench.load.nstarget import FrontPlan, HaproxyNamespaces, plan_front, target_for
from metaproxy.namespace import NamespaceKind

__all__ = [
    "TARGET_NAME",
    "router_fleet",
    "router_mode_config",
    "RouterFront",
    "start_router_front",
    "wait_listening",
]

#: The storm target's name (C{--target namespaces-tcp}).
TARGET_NAME = "namespaces-tcp"


def router_fleet(fleet: Fleet, topology: Topology) -> Fleet:
    """C{fleet} with its routers named C{<topology tag>-r<n>}, so that the kernel's
    namespaces are the table's routers.

    @raise ValueError: the fleet has DHCP or OVN networks (they keep haproxy: only
        routers are served this way).
    """
    if fleet.dhcp_networks or fleet.ovn_networks:
        raise ValueError(
            f"--target {TARGET_NAME} serves router namespaces only; the fleet has DHCP or "
            "OVN networks"
        )
    return rename_routers(fleet, [topology.id(f"r{i}") for i in range(fleet.routers)])


def router_mode_config(topology: Topology) -> str:
    """The agent's C{[metaproxy]} lines: serve the routers of C{topology} only."""
    return f"router_namespaces = serve\nrouter_id_prefix = {topology.tag}-\n"


@attrs.define
class RouterFront:
    """A built front: its topology (removed by L{stop}), the target, set-up times."""

    topology: Topology
    plan: FrontPlan
    target: HaproxyNamespaces
    timings: dict[str, float]

    def stop(self) -> None:
        self.topology.cleanup()

    def proxy_pids(self) -> list[int]:
        """No proxy in front of the agent."""
        return []

    def describe_setup(self) -> str:
        t = self.timings
        return (
            f"router front {self.topology.tag}: {len(self.plan.domains)} router namespaces "
            f"without haproxy, {len(self.plan.sides)} instance-side namespaces for "
            f"{len(self.plan.placement)} instances; built in {t['namespaces']:.1f} s, "
            f"every router answering {t['listening']:.1f} s later"
        )


def start_router_front(
    topology: Topology,
    fleet: Fleet,
    count: int,
    *,
    adopt: Sequence[int] = (),
    timeout: float = 120.0,
) -> RouterFront:
    """Build in C{topology} the router namespaces of the first C{count} instances of
    C{fleet} (renamed by L{router_fleet}) and their instance sides, then wait until the
    agent, already running, listens in every one.

    @param adopt: processes to kill with the topology (the agent, the fake Nova).
    @raise TopologyError: a step failed, or a router was not listened in within
        C{timeout} seconds; whatever was built is removed.
    """
    plan = plan_front(fleet, count)
    raised = ensure_neighbour_room(count)
    if raised:
        print(f"bench: {raised}", file=sys.stderr, flush=True)
    try:
        for pid in adopt:
            topology.adopt(pid)
        t0 = time.monotonic()
        built: list[Namespace] = []
        for domain in plan.domains:
            if domain.namespace.kind is not NamespaceKind.ROUTER:
                raise TopologyError(f"{domain.namespace.name}: only routers are served here")
            if not domain.namespace.id.startswith(topology.tag):
                raise TopologyError(
                    f"{domain.namespace.name} is not one of this topology's routers: "
                    "rename the fleet's routers with router_fleet() first"
                )
            built.append(
                topology.add_router(domain.namespace.id, dict(domain.ports), metadata_proxy=False)
            )
        sides = []
        for side in plan.sides:
            group = topology.add_instance_group(
                side.key, (built[side.domain], side.network_id), side.addresses, side.mac
            )
            sides.append(group.namespace)
        t1 = time.monotonic()
        target = target_for(plan, sides, "routers", fleet.instances[:count], name=TARGET_NAME)
        first = {plan.placement[i.index]: target.places[i.index] for i in fleet.instances[:count]}
        wait_listening(list(first.values()), timeout)
        t2 = time.monotonic()
    except BaseException:
        topology.cleanup()
        raise
    return RouterFront(topology, plan, target, {"namespaces": t1 - t0, "listening": t2 - t1})


def wait_listening(places: Sequence[tuple[str, str]], timeout: float) -> None:
    """Wait until C{169.254.169.254:80} accepts a connection from each of C{places}
    (C{(namespace path, source address)}): the agent listens in each router.

    @raise TopologyError: not all within C{timeout} seconds.
    """
    from bench.load.nstarget import NetnsSockets

    sockets = NetnsSockets()
    waiting = list(places)
    deadline = time.monotonic() + timeout
    try:
        while waiting:
            left = []
            for netns, source in waiting:
                sock = sockets.socket(netns)
                try:
                    sock.settimeout(0.5)
                    sock.bind((source, 0))
                    sock.connect((METADATA_V4, 80))
                except OSError:
                    left.append((netns, source))
                finally:
                    sock.close()
            waiting = left
            if waiting:
                if time.monotonic() > deadline:
                    raise TopologyError(
                        f"{len(waiting)} router(s) not listened in after {timeout:g} s, "
                        f"e.g. from {waiting[0][0]}"
                    )
                time.sleep(0.1)
    finally:
        sockets.close()
