# -*- test-case-name: tests.e2e.test_topology,tests.e2e.test_storm_haproxy -*-
"""Network-namespace topologies: instances, Neutron's router, DHCP and OVN namespaces, haproxy.

Builds on one Linux host, with C{ip netns}, veth pairs and iptables, what Neutron's L3,
DHCP and OVN metadata agents build on a network node (docs/upstream.md, "haproxy in the
namespace"), so that real instances (namespaces with a real TCP/IP stack) reach metaproxy
through a real haproxy configured by C{metaproxy haproxy-config}::

    with Topology() as topo:
        r1 = topo.add_router(topo.id("r1"), {topo.id("net-a"): "10.0.0.1/24"})
        vm = topo.add_instance("vm-a", (r1, topo.id("net-a")), "10.0.0.5/24",
                               "fa:16:3e:00:00:01")
        topo.start_haproxy(r1, config_file="agent.ini", shared=True)
        topo.run(vm, ["curl", "http://169.254.169.254/openstack"])

Names are unique per run: every topology has a tag C{e2e<8 hex digits>}; router and
network ids made with L{Topology.id} start with it, so namespaces keep Neutron's names
(C{qrouter-e2e1a2b3c4d-r1}) yet never collide with another run's; instance namespaces are
C{mpe2e-<hex>-<name>}. Interfaces are created directly inside their namespaces, so
their names (at most 15 bytes) never meet another run's either. Only loopback,
link-local and private addresses are used, inside the topology's own namespaces: no
traffic leaves the machine.

Clean-up always runs: L{Topology.cleanup} (idempotent) is called by the context manager,
at interpreter exit, and by whoever owns the topology (a pytest finalizer). It kills every
process inside the topology's namespaces (haproxy included) and every process it was
asked to L{Topology.adopt}, deletes the namespaces (which deletes their veths and
iptables rules) and the run directory. A topology whose owner died without cleaning up
(SIGKILL, power loss) is a leftover: L{bench.load.netns_host.cleanup_leftovers}, called
by every new L{Topology}, removes the topologies whose owner process is gone, and only
those, so two runs at once do not disturb each other.

The host side (commands, prerequisites, leftovers) is L{bench.load.netns_host}; this
module is the topology itself. It is one job, L{Topology} and the records it hands out,
which is why it is longer than most.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

from bench.load.netns_host import (
    ID_PREFIX,
    INSTANCE_PREFIX,
    LEFTOVER,
    RUN_DIR_PREFIX,
    TAG_HEX,
    TopologyError,
    cleanup_leftovers,
    delete_namespace,
    destroy_run,
    find_iptables,
    is_haproxy,
    netns_list,
    process_record,
    run_command,
    start_time,
    terminate,
)

__all__ = [
    "TopologyError",
    "Namespace",
    "Port",
    "Instance",
    "InstanceGroup",
    "Haproxy",
    "Topology",
    "eui64_link_local",
    "METADATA_V4",
    "METADATA_V6",
    "ROUTER_METADATA_PORT",
]

_IFNAME_MAX = 15
_REPO = Path(__file__).resolve().parents[2]

METADATA_V4 = "169.254.169.254"
METADATA_V6 = "fe80::a9fe:a9fe"
#: The port haproxy listens on in a router namespace (l3_agent.ini metadata_port).
ROUTER_METADATA_PORT = 9697


def eui64_link_local(mac: str) -> str:
    """The IPv6 link-local address the kernel derives from C{mac} (modified EUI-64)."""
    raw = bytearray(int(b, 16) for b in mac.split(":"))
    raw[0] ^= 0x02
    iid = bytes(raw[:3]) + b"\xff\xfe" + bytes(raw[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid))


# -- the topology -----------------------------------------------------------------------


@attrs.define
class Namespace:
    """One namespace of the topology.

    @ivar kind: C{router}, C{dhcp}, C{ovn} or C{instance}.
    @ivar id: the router or network id (C{qrouter-<id>}...), or the instance's name.
    @ivar ports: the namespace's interfaces to instance networks, by network id.
    @ivar haproxy: the namespace proxy running in it, if any.
    """

    name: str
    kind: str
    id: str
    ports: dict[str, Port] = attrs.field(factory=dict)
    haproxy: Haproxy | None = None
    ipv6: bool = False  # DHCP and OVN: fe80::a9fe:a9fe on the port, bound by haproxy

    def __str__(self) -> str:
        return self.name


@attrs.frozen
class Port:
    """An interface in a router, DHCP or OVN namespace, on one instance network."""

    network_id: str
    ifname: str
    cidr: str  # the namespace's address on the network, with its prefix length
    peer: str  # the veth's other end: eth0 of the instance that takes it

    @property
    def ip(self) -> str:
        return self.cidr.split("/")[0]


@attrs.define
class Instance:
    """An instance: its own namespace with C{eth0} on one network."""

    name: str
    namespace: str
    network_id: str
    attached_to: Namespace
    ip: str
    mac: str
    ifname: str = "eth0"

    @property
    def link_local(self) -> str:
        """The EUI-64 link-local address the kernel gives C{eth0} from the MAC."""
        return eui64_link_local(self.mac)

    def __str__(self) -> str:
        return self.namespace


@attrs.define
class InstanceGroup:
    """Several instances' addresses in one namespace, on one C{eth0} on one network: the
    boot storm's instance side (L{Topology.add_instance_group}). Each address is a
    distinct source for the agent; what the namespace does not have is a MAC (and an
    EUI-64 link-local address) per instance."""

    name: str
    namespace: str
    network_id: str
    attached_to: Namespace
    ips: tuple[str, ...]
    mac: str

    def __str__(self) -> str:
        return self.namespace


@attrs.define
class Haproxy:
    """A haproxy daemon in a namespace: its configuration, pidfile and process id."""

    namespace: str
    config_path: Path
    pidfile: Path
    pid: int
    config: str


class Topology:
    """A set of namespaces owned by this process; see the module docstring.

    @ivar tag: C{e2e<8 hex>}, unique to this topology; ids from L{id} start with it.
    @ivar run_dir: C{/tmp/mpe2e-<hex>}: haproxy configs and pidfiles, the owner record,
        adopted processes, and whatever else the caller puts there (the agent's state).
    """

    def __init__(self, *, clean_leftovers: bool = True) -> None:
        self.removed_leftovers = cleanup_leftovers() if clean_leftovers else []
        self._hex = secrets.token_hex(TAG_HEX // 2)
        self.tag = ID_PREFIX + self._hex
        self.run_dir = Path(RUN_DIR_PREFIX + self._hex)
        # Made under another name and renamed, owner record inside: a concurrent run's
        # cleanup_leftovers never sees this directory without its owner.
        making = Path(f"{self.run_dir}.new")
        making.mkdir(mode=0o755)
        (making / "owner").write_text(process_record(os.getpid()))
        (making / "pids").mkdir()
        (making / "haproxy").mkdir()
        making.rename(self.run_dir)
        self.namespaces: dict[str, Namespace] = {}
        self.instances: dict[str, Instance] = {}
        self.instance_groups: dict[str, InstanceGroup] = {}
        self._cleaned = False
        self._iptables: str | None = None
        atexit.register(self.cleanup)

    # -- naming -------------------------------------------------------------------------

    def id(self, name: str) -> str:
        """A router or network id unique to this topology: C{e2e<hex>-<name>}."""
        return f"{self.tag}-{name}"

    def _ifname(self, prefix: str) -> str:
        name = prefix + secrets.token_hex(8)
        return name[: _IFNAME_MAX - 1]

    # -- building -------------------------------------------------------------------------

    def _add_namespace(self, name: str, kind: str, ident: str) -> Namespace:
        if self._cleaned:
            raise TopologyError(f"cannot add {name}: this topology has been cleaned up")
        if name in self.namespaces:
            raise TopologyError(f"namespace {name} already exists in this topology")
        run_command(["ip", "netns", "add", name])
        namespace = Namespace(name, kind, ident)
        self.namespaces[name] = namespace
        # No duplicate address detection: addresses are usable at once (the EUI-64
        # link-local address is still the kernel's own, derived from the MAC). A router
        # gets the L3 agent's own settings (neutron/agent/l3/namespaces.py): forwarding,
        # and ARP answered only for an address of the asking port (arp_ignore = 1).
        router = (
            "; echo 1 > /proc/sys/net/ipv4/ip_forward"
            "; echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore"
            "; echo 2 > /proc/sys/net/ipv4/conf/all/arp_announce"
            if kind == "router"
            else ""
        )
        self.exec(
            name,
            [
                "sh",
                "-c",
                "echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad; "
                "echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad" + router,
            ],
        )
        run_command(["ip", "-n", name, "link", "set", "lo", "up"])
        return namespace

    def _iptables_command(self, namespace: str) -> str:
        if self._iptables is None:
            self._iptables = find_iptables(namespace)
            if self._iptables is None:
                raise TopologyError("neither iptables nor iptables-legacy works in a namespace")
        return self._iptables

    @property
    def iptables(self) -> str | None:
        """The iptables command in use (C{iptables} or C{iptables-legacy}), once known."""
        return self._iptables

    def _add_port(
        self,
        parent: Namespace,
        network_id: str,
        ifname: str,
        cidr: str,
        extra: Sequence[tuple[str, ...]] = (),
    ) -> Port:
        """A veth in C{parent}: C{ifname} configured and up; its peer waits in C{parent}
        under a temporary name until an instance takes it (L{add_instance})."""
        if len(ifname.encode()) > _IFNAME_MAX:
            raise TopologyError(f"interface name {ifname!r} is longer than {_IFNAME_MAX} bytes")
        peer = self._ifname("pe-")
        p = parent.name
        run_command(["ip", "-n", p, "link", "add", ifname, "type", "veth", "peer", "name", peer])
        run_command(["ip", "-n", p, "addr", "add", cidr, "dev", ifname])
        for address, *flags in extra:
            run_command(["ip", "-n", p, "addr", "add", address, "dev", ifname, *flags])
        run_command(["ip", "-n", p, "link", "set", ifname, "up"])
        port = Port(network_id, ifname, cidr, peer)
        parent.ports[network_id] = port
        return port

    def add_router(
        self, router_id: str, subnets: dict[str, str], *, metadata_proxy: bool = True
    ) -> Namespace:
        """C{qrouter-<router_id>} with one C{qr-} port per network (C{network id: the
        router's address with prefix, e.g. 10.0.0.1/24}) and Neutron's metadata rules:
        169.254.169.254:80 from C{qr-+} marked and redirected to 9697, 9697 otherwise
        dropped (docs/upstream.md, "Where haproxy listens").

        @param metadata_proxy: C{False}: as the L3 agent with C{enable_metadata_proxy =
            False} leaves it (docs/routers.md): the mark on metadata packets from C{qr-+}
            and the drop of marked packets that would be forwarded, no redirect and no
            rule on 9697.
        """
        namespace = self._add_namespace(f"qrouter-{router_id}", "router", router_id)
        for network_id, cidr in subnets.items():
            self._add_port(namespace, network_id, self._ifname("qr-"), cidr)
        if not metadata_proxy:
            self._l3_metadata_mark(namespace)
            return namespace
        self._iptables_restore(
            namespace,
            "*mangle\n"
            f"-A PREROUTING -d {METADATA_V4}/32 -i qr-+ -p tcp -m tcp --dport 80 "
            "-j MARK --set-xmark 0x1/0xffff\n"
            "COMMIT\n"
            "*nat\n"
            f"-A PREROUTING -d {METADATA_V4}/32 -i qr-+ -p tcp -m tcp --dport 80 "
            f"-j REDIRECT --to-ports {ROUTER_METADATA_PORT}\n"
            "COMMIT\n"
            "*filter\n"
            "-A INPUT -m mark --mark 0x1/0xffff -j ACCEPT\n"
            f"-A INPUT -p tcp -m tcp --dport {ROUTER_METADATA_PORT} -j DROP\n"
            "COMMIT\n",
        )
        return namespace

    def _l3_metadata_mark(self, namespace: Namespace) -> None:
        """The rules every router of the L3 agent has, metadata proxy or not
        (C{RouterInfo.initialize_metadata_iptables}), in one C{iptables-restore}."""
        self._iptables_restore(
            namespace,
            "*mangle\n"
            f"-A PREROUTING -d {METADATA_V4}/32 -i qr-+ -p tcp -m tcp --dport 80 "
            "-j MARK --set-xmark 0x1/0xffff\n"
            "COMMIT\n"
            "*filter\n"
            "-A FORWARD -m mark --mark 0x1/0xffff -j DROP\n"
            "COMMIT\n",
        )

    def _iptables_restore(self, namespace: Namespace, rules: str) -> None:
        """Append C{rules} (iptables-restore's format) in the namespace, in one call."""
        ipt = self._iptables_command(namespace.name)
        run_command(
            ["ip", "netns", "exec", namespace.name, f"{ipt}-restore", "-w", "--noflush"],
            input=rules.encode(),
        )

    def _metadata_addresses(self, ipv6: bool) -> list[tuple[str, ...]]:
        addresses: list[tuple[str, ...]] = [(f"{METADATA_V4}/32",)]
        if ipv6:
            # Neutron waits for DAD to finish; this address is ours alone, so skip it.
            addresses.append((f"{METADATA_V6}/64", "nodad"))
        return addresses

    def add_dhcp(self, network_id: str, cidr: str, *, ipv6: bool = True) -> Namespace:
        """C{qdhcp-<network_id>} with its DHCP port (C{tap...}) at C{cidr}, plus
        169.254.169.254/32 and (with C{ipv6}) fe80::a9fe:a9fe on that port."""
        namespace = self._add_namespace(f"qdhcp-{network_id}", "dhcp", network_id)
        namespace.ipv6 = ipv6
        self._add_port(
            namespace, network_id, self._ifname("tap"), cidr, self._metadata_addresses(ipv6)
        )
        return namespace

    def add_ovn(self, network_id: str, cidr: str, *, ipv6: bool = True) -> Namespace:
        """C{ovnmeta-<network_id>} with the metadata port C{tap<network_id[:10]>1} at
        C{cidr}, plus 169.254.169.254/32 and (with C{ipv6}) fe80::a9fe:a9fe."""
        namespace = self._add_namespace(f"ovnmeta-{network_id}", "ovn", network_id)
        namespace.ipv6 = ipv6
        self._add_port(
            namespace, network_id, f"tap{network_id[:10]}1", cidr, self._metadata_addresses(ipv6)
        )
        return namespace

    def add_instance(
        self, name: str, attached_to: tuple[Namespace, str], ip: str, mac: str
    ) -> Instance:
        """An instance namespace C{mpe2e-<hex>-<name>} whose C{eth0} (MAC C{mac}, address
        C{ip}, with the port's prefix unless given) is the peer of the port of
        C{attached_to = (namespace, network id)}.

        Behind a router the router's port is the default gateway; on a DHCP or OVN
        network 169.254.169.254/32 is a host route via the DHCP/metadata port, as DHCP
        option 121 sets it. Each port takes one instance.
        """
        parent, network_id = attached_to
        port = parent.ports.get(network_id)
        if port is None:
            raise TopologyError(f"{parent.name} has no port on network {network_id}")
        ns_name = self._take_port(name, parent, network_id)
        prefix = port.cidr.split("/")[1]
        address = ip if "/" in ip else f"{ip}/{prefix}"
        self._attach(ns_name, parent, port, mac, [address])
        instance = Instance(name, ns_name, network_id, parent, address.split("/")[0], mac)
        self.instances[name] = instance
        return instance

    def add_instance_group(
        self, name: str, attached_to: tuple[Namespace, str], ips: Sequence[str], mac: str
    ) -> InstanceGroup:
        """One namespace C{mpe2e-<hex>-<name>} standing for several instances of one
        network: its C{eth0} (MAC C{mac}), the peer of C{attached_to}'s port, carries
        every address of C{ips} (with the port's prefix unless given), routed as in
        L{add_instance}. A socket bound to one of them is that instance to the network.

        One namespace per instance costs about 70 ms of C{ip} commands each (and a router
        port each); a group costs one namespace and one C{ip -batch} for all its
        addresses, which is what makes a storm of 1,000 instances quick to set up.
        """
        if not ips:
            raise TopologyError(f"instance group {name} has no address")
        parent, network_id = attached_to
        port = parent.ports.get(network_id)
        if port is None:
            raise TopologyError(f"{parent.name} has no port on network {network_id}")
        ns_name = self._take_port(name, parent, network_id)
        prefix = port.cidr.split("/")[1]
        addresses = [ip if "/" in ip else f"{ip}/{prefix}" for ip in ips]
        self._attach(ns_name, parent, port, mac, addresses)
        group = InstanceGroup(
            name, ns_name, network_id, parent, tuple(a.split("/")[0] for a in addresses), mac
        )
        self.instance_groups[name] = group
        return group

    def _take_port(self, name: str, parent: Namespace, network_id: str) -> str:
        """Check C{parent}'s port on C{network_id} is free; add the instance namespace."""
        if any(
            i.attached_to is parent and i.network_id == network_id
            for i in [*self.instances.values(), *self.instance_groups.values()]
        ):
            raise TopologyError(f"{parent.name} already has an instance on {network_id}")
        ns_name = f"{INSTANCE_PREFIX}{self._hex}-{name}"
        self._add_namespace(ns_name, "instance", name)
        return ns_name

    def _attach(
        self, ns_name: str, parent: Namespace, port: Port, mac: str, addresses: Sequence[str]
    ) -> None:
        """Move C{port}'s peer into C{ns_name} as C{eth0} with C{addresses}; route
        169.254.169.254 through the port (the default route behind a router)."""
        run_command(["ip", "-n", parent.name, "link", "set", port.peer, "netns", ns_name])
        run_command(["ip", "-n", ns_name, "link", "set", port.peer, "name", "eth0"])
        run_command(["ip", "-n", ns_name, "link", "set", "eth0", "address", mac])
        if len(addresses) == 1:
            run_command(["ip", "-n", ns_name, "addr", "add", addresses[0], "dev", "eth0"])
        else:
            batch = "".join(f"addr add {address} dev eth0\n" for address in addresses)
            run_command(["ip", "-n", ns_name, "-batch", "-"], input=batch.encode(), timeout=120)
        run_command(["ip", "-n", ns_name, "link", "set", "eth0", "up"])
        if parent.kind == "router":
            run_command(["ip", "-n", ns_name, "route", "add", "default", "via", port.ip])
        else:
            run_command(["ip", "-n", ns_name, "route", "add", f"{METADATA_V4}/32", "via", port.ip])

    # -- haproxy --------------------------------------------------------------------------

    def haproxy_config(
        self,
        namespace: Namespace,
        *,
        config_file: str | os.PathLike | None,
        shared: bool = False,
        socket: str | None = None,
        extra_args: Sequence[str] = (),
        as_namespace: str | None = None,
    ) -> tuple[str, Path]:
        """The configuration C{metaproxy haproxy-config} renders for C{namespace}, and the
        pidfile it names. DHCP and OVN namespaces with IPv6 also bind fe80::a9fe:a9fe on
        their port.

        @param as_namespace: render it for this namespace name (its header and its own
            socket) instead of C{namespace}'s: the boot storm's namespaces carry this
            run's tag, while the fleet's routers and networks have uuids.
        """
        pidfile = self.haproxy_pidfile(namespace)
        argv = [
            sys.executable,
            "-m",
            "metaproxy.cli",
            "haproxy-config",
            as_namespace or namespace.name,
            "--user",
            "root",
            "--group",
            "root",
            "--pidfile",
            str(pidfile),
        ]
        if config_file is not None:
            argv += ["--config-file", str(config_file)]
        if shared:
            argv.append("--shared")
        if socket is not None:
            argv += ["--socket", socket]
        if namespace.kind in ("dhcp", "ovn") and namespace.ipv6:
            (port,) = namespace.ports.values()
            argv += ["--ipv6-interface", port.ifname]
        argv += list(extra_args)
        try:
            done = subprocess.run(argv, capture_output=True, timeout=30, cwd=str(_REPO))
        except (OSError, subprocess.TimeoutExpired) as e:
            raise TopologyError(f"metaproxy haproxy-config: {e}") from None
        if done.returncode != 0:
            raise TopologyError(
                f"metaproxy haproxy-config {namespace.name} failed: "
                f"{done.stderr.decode(errors='replace').strip()}"
            )
        return done.stdout.decode(), pidfile

    def haproxy_pidfile(self, namespace: Namespace) -> Path:
        """Where the configuration for C{namespace}'s haproxy must put its pidfile."""
        return self.run_dir / "haproxy" / f"{namespace.id}.pid"

    def start_haproxy(
        self,
        namespace: Namespace,
        *,
        config_file: str | os.PathLike | None,
        shared: bool = False,
        socket: str | None = None,
        extra_args: Sequence[str] = (),
        as_namespace: str | None = None,
        config_text: str | None = None,
    ) -> Haproxy:
        """Write C{namespace}'s configuration (see L{haproxy_config}) and start
        C{haproxy -f <conf>} in the namespace as Neutron does; it daemonises after
        binding, so it listens when this returns.

        @param config_text: the configuration, already rendered by the caller (with
            L{haproxy_pidfile} as its pidfile); the other options are then unused.
        """
        if self._cleaned:
            raise TopologyError(
                f"cannot start haproxy in {namespace.name}: this topology has been cleaned up"
            )
        if namespace.haproxy is not None:
            raise TopologyError(f"haproxy already runs in {namespace.name}")
        if config_text is not None:
            text, pidfile = config_text, self.haproxy_pidfile(namespace)
        else:
            text, pidfile = self.haproxy_config(
                namespace,
                config_file=config_file,
                shared=shared,
                socket=socket,
                extra_args=extra_args,
                as_namespace=as_namespace,
            )
        config_path = self.run_dir / "haproxy" / f"{namespace.id}.conf"
        config_path.write_text(text)
        log_path = self.run_dir / "haproxy" / f"{namespace.id}.log"
        with open(log_path, "wb") as log:
            try:
                done = subprocess.run(
                    ["ip", "netns", "exec", namespace.name, "haproxy", "-f", str(config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=30,
                    env={**os.environ, "PROCESS_TAG": f"haproxy-{namespace.id}"},
                )
            except subprocess.TimeoutExpired:
                raise TopologyError(f"haproxy in {namespace.name} did not daemonise") from None
        if done.returncode != 0:
            raise TopologyError(
                f"haproxy in {namespace.name} exited with {done.returncode}: "
                f"{log_path.read_text(errors='replace').strip()}"
            )
        deadline = time.monotonic() + 10
        pid = None
        while time.monotonic() < deadline:
            words = pidfile.read_text().split() if pidfile.exists() else []
            if words and words[0].isdigit() and is_haproxy(int(words[0])):
                pid = int(words[0])
                break
            time.sleep(0.02)
        if pid is None:
            raise TopologyError(f"haproxy in {namespace.name} wrote no pidfile {pidfile}")
        namespace.haproxy = Haproxy(namespace.name, config_path, pidfile, pid, text)
        return namespace.haproxy

    def stop_haproxy(self, namespace: Namespace) -> None:
        """Stop the namespace's haproxy (SIGTERM, then SIGKILL after 5 s), by its pid."""
        proxy = namespace.haproxy
        if proxy is None:
            return
        if is_haproxy(proxy.pid):
            terminate(proxy.pid, start_time(proxy.pid))
        namespace.haproxy = None

    # -- running things -------------------------------------------------------------------

    def exec(
        self,
        namespace: str | Namespace | Instance,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        cwd: str | os.PathLike | None = None,
    ) -> subprocess.CompletedProcess:
        """Run C{argv} inside C{namespace} and wait; stdout and stderr are captured.

        @raise TopologyError: with C{check}, a non-zero exit status; always, a timeout.
        """
        return run_command(
            ["ip", "netns", "exec", str(namespace), *argv], check=check, timeout=timeout, cwd=cwd
        )

    def popen(
        self, namespace: str | Namespace | Instance, argv: Sequence[str], **kwargs
    ) -> subprocess.Popen:
        """Start C{argv} inside C{namespace} (killed at clean-up if still running)."""
        return subprocess.Popen(["ip", "netns", "exec", str(namespace), *argv], **kwargs)

    def adopt(self, pid: int) -> None:
        """Kill process C{pid} at clean-up (and when a later run finds this topology a
        leftover) if it still runs: for processes outside the namespaces, the agent say."""
        (self.run_dir / "pids" / str(pid)).write_text(process_record(pid))

    # -- tearing down ---------------------------------------------------------------------

    def remove(self, namespace: Namespace | Instance) -> None:
        """Remove one namespace now: its processes (haproxy too), then the namespace,
        which deletes its veths (an instance's peer port goes with it)."""
        name = str(namespace)
        ns = self.namespaces.pop(name, None)
        if ns is not None and ns.haproxy is not None:
            self.stop_haproxy(ns)
        delete_namespace(name)
        for key, instance in list(self.instances.items()):
            if instance.namespace == name:
                del self.instances[key]
        for key, group in list(self.instance_groups.items()):
            if group.namespace == name:
                del self.instance_groups[key]

    @property
    def cleaned(self) -> bool:
        """Whether L{cleanup} ran: nothing of this topology is left."""
        return self._cleaned

    def cleanup(self) -> None:
        """Remove everything this topology made; safe to call more than once."""
        if self._cleaned:
            return
        self._cleaned = True
        for namespace in list(self.namespaces.values()):
            if namespace.haproxy is not None:
                self.stop_haproxy(namespace)
        names = set(self.namespaces)
        # and any namespace with this tag that a failed step left unrecorded
        for name in netns_list():
            match = LEFTOVER.match(name)
            if match and match.group(1) == self._hex:
                names.add(name)
        self.namespaces.clear()
        self.instances.clear()
        self.instance_groups.clear()
        destroy_run(self._hex, sorted(names))
        try:
            atexit.unregister(self.cleanup)
        except Exception:  # pragma: no cover - interpreter shutting down
            pass

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()
