"""Networks and instances on a running L{OvnSandbox}, the way Neutron and Nova make them.

    cloud = Cloud(sandbox)
    net = cloud.add_network("10.1.0.0/24")
    vm = cloud.add_instance(net)          # NB port, then a namespace plugged into br-int
    cloud.wait_bound(vm)                  # Port_Binding.chassis is this chassis
    cloud.exec(vm, ["ping", "-c1", "10.1.0.11"])
    cloud.remove_instance(vm)

An instance is a network namespace C{mpovn-<tag>-vm<n>} whose C{eth0} carries the port's
MAC and address, with a route to 169.254.169.254/32 via the metadata port (what the
subnet's DHCP option 121 gives a guest). The root side of its veth is added to the
integration bridge with C{external_ids} C{iface-id=<port>}, C{attached-mac},
C{iface-status=active} (what os-vif writes); ovn-controller then binds the port.

The userspace datapath forwards the partial TCP checksums a veth leaves unfilled, so
every instance fills its own (C{iptables} and C{ip6tables -t mangle ... CHECKSUM
--checksum-fill}), as a virtio guest does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

from bench.ovnsandbox.daemons import OvnSandbox, SandboxError, delete_namespace, run
from bench.ovnsandbox.nbrows import (
    METADATA_IP,
    Network,
    VmPort,
    delete_port_operations,
    network_operations,
    new_id,
    vm_port_operations,
)

__all__ = ["Cloud", "Instance", "checksum_fill"]

_REPO = Path(__file__).resolve().parent.parent.parent


@attrs.define
class Instance:
    port: VmPort
    namespace: str
    root_link: str

    @property
    def ip(self) -> str:
        return self.port.ip


def checksum_fill(namespace: str) -> None:
    """Fill TCP checksums leaving C{namespace}, IPv4 and IPv6 (iptables and ip6tables,
    else their -legacy variants).

    @raise SandboxError: neither can add a rule.
    """
    rule = ["-t", "mangle", "-A", "POSTROUTING", "-p", "tcp", "-j", "CHECKSUM", "--checksum-fill"]
    for family in ("iptables", "ip6tables"):
        errors = []
        for command in (family, f"{family}-legacy"):
            if shutil.which(command) is None:
                continue
            try:
                run(["ip", "netns", "exec", namespace, command, "-w", *rule])
                break
            except SandboxError as e:
                errors.append(str(e))
        else:
            raise SandboxError(f"cannot add the checksum-fill rule in {namespace}: {errors}")


class Cloud:
    """Neutron-shaped networks and Nova-shaped instances on C{sandbox}."""

    def __init__(self, sandbox: OvnSandbox) -> None:
        self.sandbox = sandbox
        self._dhcp: dict[str, str] = {}  # network id -> DHCP_Options uuid
        self._next_host: dict[str, int] = {}
        self._instances = 0

    def add_network(self, cidr: str, *, mtu: int = 1442, cidr6: str = "") -> Network:
        network = Network(id=new_id(self.sandbox.tag), cidr=cidr, mtu=mtu, cidr6=cidr6)
        self.sandbox.record_namespace(f"ovnmeta-{network.id}")
        results = self.sandbox.nb_transact(network_operations(network))
        self._dhcp[network.id] = results[0]["uuid"][1]
        self._next_host[network.id] = 10
        return network

    def add_port(self, network: Network) -> VmPort:
        """A VM port on C{network} requested on this chassis (no instance plugged yet)."""
        self._next_host[network.id] += 1
        n = self._next_host[network.id]
        port = VmPort(network, network.host(n), ip6=network.host6(n))
        self.sandbox.nb_transact(
            vm_port_operations(port, self.sandbox.hostname, self._dhcp.get(network.id))
        )
        return port

    def plug(self, port: VmPort) -> Instance:
        """Make the instance of C{port}: its namespace, veth, address and OVS port."""
        self._instances += 1
        n = self._instances
        tag = self.sandbox.tag
        instance = Instance(port, f"mpovn-{tag}-vm{n}", f"mv{tag}{n:03d}")
        self.sandbox.record_namespace(instance.namespace)
        self.sandbox.record_link(instance.root_link)
        ns, root = instance.namespace, instance.root_link
        net = port.network
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", root, "type", "veth", "peer", "name", "eth0", "netns", ns])
        inside = ["ip", "-n", ns]
        run([*inside, "link", "set", "lo", "up"])
        run([*inside, "link", "set", "eth0", "address", port.mac, "mtu", str(net.mtu), "up"])
        run([*inside, "addr", "add", port.cidr, "dev", "eth0"])
        if port.cidr6:
            run([*inside, "addr", "add", port.cidr6, "dev", "eth0", "nodad"])
        run([*inside, "route", "add", f"{METADATA_IP}/32", "via", net.metadata_ip])
        checksum_fill(ns)
        run(["ip", "link", "set", root, "mtu", str(net.mtu), "up"])
        self.sandbox.ovs_vsctl(
            "--timeout=30",
            "add-port",
            self.sandbox.bridge,
            root,
            "--",
            "set",
            "Interface",
            root,
            f"external_ids:iface-id={port.id}",
            f'external_ids:attached-mac="{port.mac}"',
            "external_ids:iface-status=active",
        )
        return instance

    def add_instance(self, network: Network) -> Instance:
        return self.plug(self.add_port(network))

    def wait_bound(self, what: Instance | VmPort | str, timeout: float = 30.0) -> float:
        """Wait until the port's Port_Binding is bound to this chassis; the seconds."""
        port_id = _port_id(what)
        began = time.monotonic()
        chassis = self.chassis_uuid()
        while True:
            rows = self.sandbox.sb_select(
                "Port_Binding", [["logical_port", "==", port_id]], ["chassis"]
            )
            if rows and rows[0]["chassis"] == chassis:
                return time.monotonic() - began
            self.sandbox.check_alive()
            if time.monotonic() - began > timeout:
                raise SandboxError(f"port {port_id} not bound within {timeout} s: {rows}")
            time.sleep(0.02)

    def chassis_uuid(self) -> str:
        rows = self.sandbox.sb_select("Chassis", [["name", "==", self.sandbox.chassis]], ["_uuid"])
        if not rows:
            raise SandboxError(f"no Chassis row {self.sandbox.chassis}")
        return rows[0]["_uuid"]

    def unplug(self, instance: Instance) -> None:
        """Remove the instance's OVS port and namespace (the port stays in the NB)."""
        self.sandbox.ovs_vsctl("--timeout=30", "--if-exists", "del-port", instance.root_link)
        delete_namespace(instance.namespace)

    def delete_port(self, port: VmPort) -> None:
        rows = self.sandbox.nb_select("Logical_Switch_Port", [["name", "==", port.id]], ["_uuid"])
        if rows:
            self.sandbox.nb_transact(
                delete_port_operations(port.id, port.network.switch, rows[0]["_uuid"])
            )

    def remove_instance(self, instance: Instance) -> None:
        """What Nova and Neutron do when an instance is deleted: unplug, delete the port."""
        self.unplug(instance)
        self.delete_port(instance.port)

    def exec(
        self, instance: Instance, argv: Sequence[str], *, timeout: float = 30.0, check=True
    ) -> subprocess.CompletedProcess[bytes]:
        """Run C{argv} inside the instance."""
        done = subprocess.run(
            ["ip", "netns", "exec", instance.namespace, *argv],
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise SandboxError(
                f"{' '.join(argv)} in {instance.namespace} exited with {done.returncode}: "
                f"{done.stderr.decode(errors='replace').strip()}"
            )
        return done

    def popen(self, instance: Instance, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["ip", "netns", "exec", instance.namespace, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(_REPO),
        )

    def probe(
        self, instance: Instance, *args: str, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        """Run L{bench.ovnsandbox.probe} inside the instance (ping, serve, connect, get)."""
        argv = [sys.executable, "-m", "bench.ovnsandbox.probe", *args]
        done = subprocess.run(
            ["ip", "netns", "exec", instance.namespace, *argv],
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd=str(_REPO),
        )
        if check and done.returncode != 0:
            raise SandboxError(
                f"probe {' '.join(args)} in {instance.namespace} exited with "
                f"{done.returncode}: {done.stderr.decode(errors='replace').strip()[-1500:]}"
            )
        return done

    def probe_server(self, instance: Instance, port: int) -> subprocess.Popen[bytes]:
        """Start the TCP echo probe in the instance; return once it listens."""
        server = self.popen(
            instance, [sys.executable, "-m", "bench.ovnsandbox.probe", "serve", str(port)]
        )
        line = server.stdout.readline() if server.stdout is not None else b""
        if line.strip() != b"listening":
            server.kill()
            raise SandboxError(f"probe server in {instance.namespace} did not start: {line!r}")
        return server


def _port_id(what: Instance | VmPort | str) -> str:
    if isinstance(what, Instance):
        return what.port.id
    if isinstance(what, VmPort):
        return what.id
    return what
