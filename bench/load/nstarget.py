# -*- test-case-name: tests.bench.load.test_nstarget,tests.e2e.test_storm_haproxy -*-
"""The storm's third target: real haproxy in network namespaces in front of the agent.

    front = start_haproxy_front(fleet, 1000, agent_config="run/agent.ini", socket="shared")
    try:
        result = run_storm(config, fleet, [agent.pid], target=front.target)
    finally:
        front.stop()

What Neutron's agents build on a network node, for the storm's fleet (L{bench.load.netns}):

  - per router of the fleet a C{qrouter-} namespace with a C{qr-} port per network and
    Neutron's iptables rules (169.254.169.254:80 redirected to haproxy on 9697); per
    DHCP or OVN network a C{qdhcp-}/C{ovnmeta-} namespace with 169.254.169.254 on its
    port;
  - in each, haproxy configured by C{metaproxy haproxy-config} (run in-process,
    L{render_haproxy_config}), forwarding to the agent's shared
    socket (C{socket="shared"}, the default: what Neutron's own haproxy does) or to that
    namespace's own socket (C{socket="namespaces"});
  - per network with instances, one I{instance-side} namespace whose C{eth0} (the peer
    of the router's or DHCP/OVN port) carries the address of every instance of that
    network (L{bench.load.netns.Topology.add_instance_group}).

Each request's connection is a TCP socket created inside its instance's instance-side
namespace, bound to the instance's own address and connected to 169.254.169.254:80:
through the router's iptables redirect (or the DHCP/OVN address) to haproxy, which adds
the namespace header and C{X-Forwarded-For}, so the target adds no header. A socket
stays in the namespace it was created in, so a generator worker creates sockets in any
namespace by switching its thread there with C{setns} around C{socket()} only
(L{NetnsSockets}) and connects from its asyncio loop as usual.

B{One instance-side namespace per network, not per instance.} The fleet reuses the same
subnets behind every router, so the k-th instance behind every router has the same
address: each network has its own namespace, so overlapping addresses never share one,
and within a network every instance's address is distinct. The agent sees exactly what
it would see from one namespace per instance: the namespace header and the source
address. One namespace per instance measured 71 ms of C{ip} commands each on the
development machine (about 70 s for 1,000 instances, plus a router port each); a group
costs one namespace and one C{ip -batch}. What a group lacks is a MAC per instance,
which only IPv6 link-local lookups need; the storm is IPv4.

Names: the kernel's namespaces carry the topology's tag (C{qrouter-e2e<hex>-r3},
C{mpe2e-<hex>-r3n0}) so that L{bench.load.netns.cleanup_leftovers} finds them after a crash,
while haproxy's configuration is rendered for the fleet's own namespace names
(C{qrouter-<router uuid>}: the header the agent reads and its per-namespace socket).

L{plan_front} is the plain part: which namespaces, which addresses, which instance
where. L{start_haproxy_front} builds it; L{HaproxyFront.stop} (also run at exit, and by
the next topology when this process died) removes everything.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import io
import ipaddress
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from bench.load.fleet import Fleet, FleetInstance
from bench.load.netns import METADATA_V4, Namespace, Topology, TopologyError
from bench.load.netns_host import ensure_neighbour_room, missing_prerequisites
from metaproxy.namespace import NamespaceKind

__all__ = [
    "SOCKET_KINDS",
    "Domain",
    "Side",
    "FrontPlan",
    "plan_front",
    "NetnsSockets",
    "HaproxyNamespaces",
    "HaproxyFront",
    "start_haproxy_front",
    "missing_line",
    "NETNS_DIR",
    "render_haproxy_config",
    "target_for",
]

#: Where C{ip netns} keeps its namespaces (C{/run/netns/<name>}).
NETNS_DIR = "/run/netns"
#: Where haproxy forwards: the agent's shared socket or each namespace's own.
SOCKET_KINDS = ("shared", "namespaces")
#: The fleet's networks are /16s: the router on C{.1}, the DHCP/OVN port on C{.2}
#: (L{bench.load.fleet}).
_PREFIX = 16
_KIND = {
    NamespaceKind.ROUTER: ("router", "r"),
    NamespaceKind.NETWORK: ("dhcp", "d"),
    NamespaceKind.OVN: ("ovn", "o"),
}
#: haproxy daemons started at once (each start waits for its pidfile).
_HAPROXY_PARALLEL = 4


def missing_line() -> str | None:
    """The one line C{--target haproxy} exits with when this host cannot run it."""
    missing = missing_prerequisites()
    if missing:
        return "--target haproxy needs root, ip, iptables and haproxy: missing " + ", ".join(
            missing
        )
    return None


# ---- the plan (plain data)


@attrs.frozen
class Domain:
    """One namespace Neutron's agents would make for the fleet.

    @ivar namespace: the fleet's namespace (C{qrouter-<router uuid>}): haproxy's
        configuration is rendered for it.
    @ivar kind: C{router}, C{dhcp} or C{ovn} (L{bench.load.netns.Namespace.kind}).
    @ivar key: short and unique in the run (C{r3}, C{d0}): the kernel namespace is
        C{qrouter-<tag>-r3}.
    @ivar ports: C{(network id, the namespace's address with prefix)} per network.
    """

    namespace: Any  # metaproxy.namespace.Namespace
    kind: str
    key: str
    ports: tuple[tuple[str, str], ...]


@attrs.frozen
class Side:
    """One instance-side namespace: every instance of one network of one domain.

    @ivar key: C{<domain key>n<network number>}, e.g. C{r3n0}.
    @ivar domain: index into L{FrontPlan.domains}.
    @ivar addresses: the instances' addresses, with prefix, in boot order.
    @ivar mac: the C{eth0} MAC (the first instance's).
    """

    key: str
    domain: int
    network_id: str
    addresses: tuple[str, ...]
    mac: str


@attrs.frozen
class FrontPlan:
    """What to build for a storm. C{placement}: instance index -> index of its L{Side}."""

    domains: tuple[Domain, ...]
    sides: tuple[Side, ...]
    placement: dict[int, int]

    def side_of(self, instance: FleetInstance) -> Side:
        return self.sides[self.placement[instance.index]]


def plan_front(fleet: Fleet, count: int) -> FrontPlan:
    """The namespaces for the first C{count} instances of C{fleet}: the domains that
    have one of them (in the fleet's order), one L{Side} per network with instances.

    @raise ValueError: C{count} is not within the fleet, or two instances of one network
        share an address (they could not be told apart by their source).
    """
    if not 1 <= count <= len(fleet.instances):
        raise ValueError(f"the fleet has {len(fleet.instances)} instances, not {count}")
    instances = fleet.instances[:count]
    by_domain: dict[Any, dict[str, list[FleetInstance]]] = {}
    for instance in instances:
        networks = by_domain.setdefault(instance.namespace, {})
        networks.setdefault(instance.network_id, []).append(instance)
    domains: list[Domain] = []
    sides: list[Side] = []
    placement: dict[int, int] = {}
    counters: dict[str, int] = {}
    for namespace in fleet.namespaces:
        networks = by_domain.get(namespace)
        if not networks:
            continue
        kind, letter = _KIND[namespace.kind]
        key = f"{letter}{counters.get(letter, 0)}"
        counters[letter] = counters.get(letter, 0) + 1
        host = 1 if kind == "router" else 2
        ports = []
        for n, (network_id, members) in enumerate(networks.items()):
            subnet = ipaddress.ip_network(f"{members[0].ip}/{_PREFIX}", strict=False)
            ports.append((network_id, f"{subnet[host]}/{_PREFIX}"))
            addresses = [f"{m.ip}/{_PREFIX}" for m in members]
            if len(set(addresses)) != len(addresses):
                raise ValueError(
                    f"two instances of network {network_id} in {namespace.name} share an address"
                )
            if any(ipaddress.ip_address(m.ip) not in subnet for m in members):
                raise ValueError(
                    f"network {network_id} in {namespace.name} spans more than one /{_PREFIX}"
                )
            for m in members:
                placement[m.index] = len(sides)
            sides.append(
                Side(f"{key}n{n}", len(domains), network_id, tuple(addresses), members[0].mac)
            )
        domains.append(Domain(namespace, kind, key, tuple(ports)))
    return FrontPlan(tuple(domains), tuple(sides), placement)


# ---- sockets in other namespaces

CLONE_NEWNET = 0x40000000


def _libc_setns() -> Callable[[int, int], None]:
    if hasattr(os, "setns"):  # Python 3.12
        return os.setns  # type: ignore[attr-defined]
    libc = ctypes.CDLL(None, use_errno=True)

    def setns(fd: int, nstype: int) -> None:
        if libc.setns(fd, nstype) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns: {os.strerror(errno)}")

    return setns


class NetnsSockets:
    """Creates sockets in other network namespaces from the calling thread.

    The thread enters the namespace (C{setns}), creates the socket, and goes back home
    at once; the socket stays in the namespace it was created in. Namespace file
    descriptors are opened once and kept. Not thread-safe: one per thread.
    """

    def __init__(
        self,
        *,
        setns: Callable[[int, int], None] | None = None,
        open_ns: Callable[[str], int] | None = None,
        new_socket: Callable[[int, int], socket.socket] = socket.socket,
    ) -> None:
        self._setns = setns or _libc_setns()
        self._open = open_ns or (lambda path: os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        self._new_socket = new_socket
        self._home = self._open("/proc/thread-self/ns/net")
        self._fds: dict[str, int] = {}

    def socket(
        self, netns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
    ) -> socket.socket:
        """A new socket in the namespace at path C{netns} (C{/run/netns/<name>}).

        @raise OSError: the namespace cannot be opened or entered, or no socket.
        @raise RuntimeError: the thread could not go back to its own namespace; it
            cannot go on.
        """
        fd = self._fds.get(netns)
        if fd is None:
            fd = self._fds[netns] = self._open(netns)
        self._setns(fd, CLONE_NEWNET)
        try:
            return self._new_socket(family, kind)
        finally:
            try:
                self._setns(self._home, CLONE_NEWNET)
            except OSError as e:
                raise RuntimeError(
                    f"cannot return to this thread's own network namespace "
                    f"after creating a socket in {netns}: {e}"
                ) from None

    def close(self) -> None:
        for fd in [*self._fds.values(), self._home]:
            os.close(fd)
        self._fds.clear()


_sockets: NetnsSockets | None = None


def _netns_sockets() -> NetnsSockets:
    """This process's L{NetnsSockets} (the storm's workers run one asyncio thread)."""
    global _sockets
    if _sockets is None:
        _sockets = NetnsSockets()
    return _sockets


@attrs.frozen
class HaproxyNamespaces:
    """The storm target: each connection from the instance's own namespace and address
    to 169.254.169.254:80, through haproxy. Adds no header: haproxy adds them.

    @ivar places: instance index -> (namespace path, source address).
    @ivar via: C{shared} or C{namespaces}: where haproxy forwards (for the report);
        C{routers}: no haproxy, the agent listens in the router namespaces.
    @ivar namespaces: how many namespaces run haproxy (for the report).
    @ivar address: where instances connect: C{(169.254.169.254, 80)}.
    """

    places: dict[int, tuple[str, str]]
    via: str
    namespaces: int
    name: str = "haproxy"
    address: tuple[str, int] = (METADATA_V4, 80)

    async def open(self, instance: FleetInstance) -> socket.socket:
        netns, source = self.places[instance.index]
        sock = _netns_sockets().socket(netns)
        try:
            sock.setblocking(False)
            sock.bind((source, 0))
            await asyncio.get_running_loop().sock_connect(sock, self.address)
        except BaseException:
            sock.close()
            raise
        return sock

    def headers(self, instance: FleetInstance) -> bytes:
        return b""

    def describe(self) -> str:
        sides = len({p for p, _ in self.places.values()})
        if self.via == "routers":
            return (
                f"metaproxy listening in {self.namespaces} router namespaces itself (no "
                "haproxy; the L3 agent's mark rule only); instances connect from their "
                f"own address in {sides} instance-side namespaces"
            )
        socket_kind = "the shared socket" if self.via == "shared" else "per-namespace sockets"
        return (
            f"haproxy in {self.namespaces} network namespaces (Neutron's iptables), "
            f"to {socket_kind}; instances connect from their own address in "
            f"{len({p for p, _ in self.places.values()})} instance-side namespaces"
        )


def target_for(
    plan: FrontPlan,
    side_namespaces: Sequence[str],
    via: str,
    instances: Sequence[FleetInstance],
    *,
    name: str = "haproxy",
) -> HaproxyNamespaces:
    """The target for C{instances}, whose sides are built as the kernel namespaces
    C{side_namespaces} (in the plan's order). C{via = "routers"} and C{name =
    "namespaces-tcp"}: the agent listens in the router namespaces itself
    (L{bench.load.routerfront})."""
    places = {}
    for instance in instances:
        side = plan.placement[instance.index]
        places[instance.index] = (os.path.join(NETNS_DIR, side_namespaces[side]), instance.ip)
    return HaproxyNamespaces(places, via, len(plan.domains), name=name)


# ---- building it


@attrs.define
class HaproxyFront:
    """A built front: its topology (removed by L{stop}), the target, set-up times."""

    topology: Topology
    plan: FrontPlan
    target: HaproxyNamespaces
    timings: dict[str, float]

    def stop(self) -> None:
        self.topology.cleanup()

    def proxy_pids(self) -> list[int]:
        """The haproxy daemons, one per namespace: their CPU and memory are the node's
        too (L{bench.load.storm.run_storm}'s C{proxy_pids})."""
        return [ns.haproxy.pid for ns in self.topology.namespaces.values() if ns.haproxy]

    def describe_setup(self) -> str:
        t = self.timings
        return (
            f"haproxy front {self.topology.tag}: {len(self.plan.domains)} namespaces "
            f"with haproxy, "
            f"{len(self.plan.sides)} instance-side namespaces for "
            f"{len(self.plan.placement)} instances; built in {t['namespaces']:.1f} s, "
            f"haproxy started in {t['haproxy']:.1f} s"
        )


def start_haproxy_front(
    fleet: Fleet,
    count: int,
    *,
    agent_config: str | os.PathLike | None = None,
    socket: str = "shared",
    socket_path: str | None = None,
    adopt: Sequence[int] = (),
) -> HaproxyFront:
    """Build the namespaces for the first C{count} instances of C{fleet} and start
    haproxy in each Neutron namespace, configured by C{metaproxy haproxy-config} from
    C{agent_config} (the running agent's file: where its sockets are).

    @param socket: C{shared} or C{namespaces}: where haproxy forwards.
    @param socket_path: forward every haproxy to this socket instead (another agent's
        shared socket: upstream's, say); C{agent_config} is then not needed.
    @param adopt: processes to kill with the topology if this process dies (the agent,
        the fake Nova): the next run's leftover clean-up then removes them too.
    @raise TopologyError: a step failed; whatever was built is removed.
    """
    if socket not in SOCKET_KINDS:
        raise ValueError(f"socket must be one of {', '.join(SOCKET_KINDS)}, not {socket!r}")
    if agent_config is None and socket_path is None:
        raise ValueError("haproxy needs the agent's configuration or a socket path")
    plan = plan_front(fleet, count)
    raised = ensure_neighbour_room(count)
    if raised:
        print(f"bench: {raised}", file=sys.stderr, flush=True)
    topology = Topology()
    try:
        for pid in adopt:
            topology.adopt(pid)
        t0 = time.monotonic()
        built: list[Namespace] = []
        for domain in plan.domains:
            ident = topology.id(domain.key)
            if domain.kind == "router":
                built.append(topology.add_router(ident, dict(domain.ports)))
            else:
                ((_, cidr),) = domain.ports
                add = topology.add_dhcp if domain.kind == "dhcp" else topology.add_ovn
                built.append(add(ident, cidr, ipv6=False))
        side_names = []
        for side in plan.sides:
            parent = built[side.domain]
            port_key = side.network_id if parent.kind == "router" else parent.id
            group = topology.add_instance_group(
                side.key, (parent, port_key), side.addresses, side.mac
            )
            side_names.append(group.namespace)
        t1 = time.monotonic()
        _start_all_haproxy(topology, plan, built, agent_config, socket, socket_path)
        t2 = time.monotonic()
    except BaseException:
        topology.cleanup()
        raise
    target = target_for(plan, side_names, socket, fleet.instances[:count])
    return HaproxyFront(topology, plan, target, {"namespaces": t1 - t0, "haproxy": t2 - t1})


def render_haproxy_config(
    namespace_name: str,
    *,
    agent_config: str | os.PathLike | None,
    pidfile: str | os.PathLike,
    shared: bool = False,
    socket_path: str | None = None,
) -> str:
    """What C{metaproxy haproxy-config NAMESPACE --config-file AGENT_CONFIG} prints (as
    root, with C{pidfile}; C{--shared} for the shared socket, C{--socket} for
    C{socket_path}), run in this process: the command's own code, without a Python
    start-up per namespace (about 15 ms each instead of 0.3 to 0.8 s).

    @raise TopologyError: the command failed; its message says why.
    """
    from metaproxy import cli

    argv = [
        "haproxy-config",
        namespace_name,
        "--user",
        "root",
        "--group",
        "root",
        "--pidfile",
        str(pidfile),
    ]
    if agent_config is not None:
        argv += ["--config-file", str(agent_config)]
    if socket_path is not None:
        argv += ["--socket", socket_path]
    elif shared:
        argv.append("--shared")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    if status != 0:
        raise TopologyError(
            f"metaproxy haproxy-config {namespace_name} exited with "
            f"{status}: {err.getvalue().strip()}"
        )
    return out.getvalue()


def _start_all_haproxy(
    topology: Topology,
    plan: FrontPlan,
    built: Sequence[Namespace],
    agent_config: str | os.PathLike | None,
    socket_kind: str,
    socket_path: str | None,
) -> None:
    texts = [
        render_haproxy_config(
            domain.namespace.name,
            agent_config=agent_config,
            pidfile=topology.haproxy_pidfile(namespace),
            shared=socket_kind == "shared",
            socket_path=socket_path,
        )
        for domain, namespace in zip(plan.domains, built, strict=False)
    ]

    def start(i: int) -> None:
        topology.start_haproxy(built[i], config_file=None, config_text=texts[i])

    with concurrent.futures.ThreadPoolExecutor(_HAPROXY_PARALLEL) as pool:
        futures = [pool.submit(start, i) for i in range(len(built))]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise (
            errors[0]
            if isinstance(errors[0], TopologyError)
            else TopologyError(f"starting haproxy: {errors[0]}")
        )
