"""ML2/OVN at scale: metaproxy's chassis mode with N networks (default 1,000) provisioned
on one real OVN chassis.

    python -m bench.ovnsandbox.scale [--networks 1000] [--sample 5] [--batch 50]
        [--timeout 900] [--out bench/results] [--keep]

On a fresh sandbox (L{bench.ovnsandbox.OvnSandbox}):

 1. B{topology}: C{networks} Neutron networks (switch, subnet, metadata localport), each
    with one VM port requested on this chassis, written to the Northbound C{batch}
    networks a transaction. C{sample} of the VM ports are real instances (a namespace
    whose veth is on C{br-int}, L{bench.ovnsandbox.Cloud.plug}) that ask for their
    metadata through OVN's flows; the others are bound by an OVS B{internal} port on
    C{br-int} with C{external_ids:iface-id}: the cheapest binding ovn-controller claims
    (one tap device and one Interface row, no namespace, no veth pair, no process),
    which is all provisioning looks at (C{Port_Binding.chassis}). Every port must be
    bound before the agent starts (a node whose agent starts or restarts).
 2. B{start}: C{twistd metaproxy} in chassis mode (L{bench.ovnsandbox.agents}); the
    time from its start to every C{ovnmeta-} namespace accepting a TCP connection on
    169.254.169.254:80 (a socket made inside each namespace), to every metadata veth
    plugged (C{ofport} set), to C{/healthz} 200, and to each sample instance's first
    200 from C{/openstack} (real HTTP through OVN).
 3. B{footprint}: the agent's C{VmRSS} (and peak C{VmHWM}), its descriptors by kind,
    threads, processes of its session (workers), and every process found in the
    C{ovnmeta-} namespaces (0 expected); ovs-vswitchd's and ovn-controller's too.
 4. B{SB restart}: the Southbound C{ovsdb-server} is stopped (the agent's C{/healthz}
    turns 503) and started again: the time to C{/healthz} 200 after a provisioning pass
    on the new connection, every namespace still answering.
 5. B{agent restart}: metaproxy is stopped and started: the time to every namespace
    answering and C{/healthz} 200 again, and how many namespaces it made anew (0: the
    namespaces, veths and OVS ports are adopted as they are).
 6. B{teardown}: every VIF leaves at once (the OVS ports in one transaction, the
    instances unplugged): the time until no C{ovnmeta-} namespace is left, and the
    agent's footprint after it.

The load average is recorded before and after: the machine's other users share its
cores and the figures say so. JSON and Markdown go to
C{<out>/<stamp>-ovn-scale.json/.md}; the Markdown is printed.

Exit status: 0; 1 when a phase failed (the report says which); 2 for bad options or a
host that cannot run it (one line says why); 3 when the sandbox failed (an OVS or OVN
daemon died: with C{networks} ports that is a limit of the userspace datapath here,
reported as such).
"""

from __future__ import annotations

import argparse
import datetime
import errno
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

from bench.load.procstat import process_cpu_seconds, rss_bytes
from bench.ovnsandbox.agents import ChassisProcess, start_chassis_process
from bench.ovnsandbox.cloud import Cloud, Instance
from bench.ovnsandbox.compare import _fast_neighbour_retries, cidr_of, fleet_table
from bench.ovnsandbox.daemons import OvnSandbox, SandboxError, delete_namespace, missing
from bench.ovnsandbox.guests import Asker
from bench.ovnsandbox.nbrows import (
    Network,
    VmPort,
    network_operations,
    new_ids,
    vm_port_operations,
)
from bench.ovnsandbox.ovsdbsync import omap
from bench.processes import start_fakenova
from metaproxy.http.netns import set_network_namespace

__all__ = [
    "Options",
    "ScaleRun",
    "Topology",
    "renamed",
    "vif_port_operations",
    "agent_footprint",
    "memory_map",
    "processes_in",
    "NamespaceProber",
    "markdown",
    "main",
]

RESULTS = Path(__file__).resolve().parents[1] / "results"
SECRET = "ovn-scale-secret"
MIB = 1024 * 1024
METADATA = ("169.254.169.254", 80)
#: The issue's target for the whole agent with 1,000 networks provisioned.
RSS_TARGET_MIB = 150
_PROVISIONED_LINE = "Provisioning metadata for network"


@attrs.frozen
class Options:
    networks: int = 1000
    sample: int = 5
    batch: int = 50
    timeout: float = 900.0

    def __attrs_post_init__(self) -> None:
        if self.networks < 1 or self.batch < 1 or self.timeout <= 0:
            raise ValueError("networks and batch must be at least 1, timeout positive")
        if not 0 <= self.sample <= self.networks:
            raise ValueError("sample must be between 0 and networks")
        if self.networks > 250 * 50:
            raise ValueError("at most 12,500 networks (the subnets run out)")


@attrs.define
class ScaleRun:
    """The figures of one run (phases: module docstring)."""

    options: Options
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    topology_s: float = 0.0
    bound_s: float = 0.0
    start_all_connect_s: float | None = None
    start_all_plugged_s: float | None = None
    start_healthy_s: float | None = None
    start_sample_http_s: list[float] = attrs.Factory(list)
    footprint: dict[str, Any] = attrs.Factory(dict)
    sandbox_footprint: dict[str, Any] = attrs.Factory(dict)
    sb_resync_s: float | None = None
    restart_all_connect_s: float | None = None
    restart_healthy_s: float | None = None
    restart_made_anew: int | None = None
    restart_namespaces_kept: int | None = None
    restart_footprint: dict[str, Any] = attrs.Factory(dict)
    teardown_s: float | None = None
    teardown_footprint: dict[str, Any] = attrs.Factory(dict)
    agent_errors: list[str] = attrs.Factory(list)
    phases_ok: list[str] = attrs.Factory(list)
    failure: str | None = None
    sandbox_failure: str | None = None

    def as_json(self) -> dict[str, Any]:
        out = attrs.asdict(self, recurse=False)
        out["options"] = attrs.asdict(self.options)
        return out


# ---- topology


def renamed(operations: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    """C{operations} with every C{uuid-name} (and each C{named-uuid} naming one) given
    C{suffix}, so that several networks' operations share one transaction."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (v + suffix if k == "uuid-name" else walk(v)) for k, v in value.items()}
        if isinstance(value, list):
            if len(value) == 2 and value[0] == "named-uuid":
                return ["named-uuid", value[1] + suffix]
            return [walk(v) for v in value]
        return value

    return [walk(op) for op in operations]


def vif_port_operations(bridge: str, ports: Sequence[tuple[str, VmPort]]) -> list[dict[str, Any]]:
    """One transaction adding an OVS internal port per C{(name, VM port)} to C{bridge},
    with the C{external_ids} os-vif writes (C{iface-id}, C{attached-mac},
    C{iface-status})."""
    operations: list[dict[str, Any]] = []
    refs = []
    for i, (name, port) in enumerate(ports):
        operations += [
            {
                "op": "insert",
                "table": "Interface",
                "uuid-name": f"i{i}",
                "row": {
                    "name": name,
                    "type": "internal",
                    "external_ids": omap(
                        {
                            "iface-id": port.id,
                            "attached-mac": port.mac,
                            "iface-status": "active",
                        }
                    ),
                },
            },
            {
                "op": "insert",
                "table": "Port",
                "uuid-name": f"p{i}",
                "row": {"name": name, "interfaces": ["named-uuid", f"i{i}"]},
            },
        ]
        refs.append(["named-uuid", f"p{i}"])
    operations.append(
        {
            "op": "mutate",
            "table": "Bridge",
            "where": [["name", "==", bridge]],
            "mutations": [["ports", "insert", ["set", refs]]],
        }
    )
    return operations


@attrs.define
class Topology:
    networks: list[Network]
    vm_ports: list[VmPort]
    #: the OVS internal ports binding the VM ports that are not instances, by name
    vif_names: list[str]
    instances: list[Instance]

    @property
    def namespaces(self) -> list[str]:
        return [f"ovnmeta-{net.id}" for net in self.networks]


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def build_topology(sandbox: OvnSandbox, cloud: Cloud, options: Options) -> Topology:
    """The networks, their VM ports and their bindings (module docstring, step 1)."""
    ids = new_ids(sandbox.tag, options.networks)
    networks = [Network(id=network_id, cidr=cidr_of(i)) for i, network_id in enumerate(ids)]
    vm_ports = [VmPort(net, net.host(11)) for net in networks]
    for net in networks:
        sandbox.record_namespace(f"ovnmeta-{net.id}")
    pairs = list(zip(networks, vm_ports, strict=True))
    for chunk in _chunks(pairs, options.batch):
        operations: list[dict[str, Any]] = []
        for i, (net, port) in enumerate(chunk):
            ops = network_operations(net) + vm_port_operations(port, sandbox.hostname, None)
            operations += renamed(ops, f"_{i}")
        sandbox.nb_transact(operations)
    instances = []
    for port in vm_ports[: options.sample]:
        instance = cloud.plug(port)
        _fast_neighbour_retries(instance)
        instances.append(instance)
    named = [(f"ms{sandbox.tag}{i:05d}", port) for i, port in enumerate(vm_ports)]
    named = named[options.sample :]
    for name, _port in named:
        sandbox.record_link(name)
    for chunk in _chunks(named, options.batch):
        sandbox.ovs_transact(vif_port_operations(sandbox.bridge, chunk))
    return Topology(networks, vm_ports, [name for name, _ in named], instances)


def wait_bound(sandbox: OvnSandbox, cloud: Cloud, port_ids: Iterable[str], timeout: float) -> None:
    """Until every port of C{port_ids} is bound to this chassis."""
    wanted = set(port_ids)
    chassis = cloud.chassis_uuid()
    deadline = time.monotonic() + timeout
    while True:
        rows = sandbox.sb_select("Port_Binding", [], ["logical_port", "chassis"])
        bound = {row["logical_port"] for row in rows if row["chassis"] == chassis}
        left = wanted - bound
        if not left:
            return
        sandbox.check_alive()
        if time.monotonic() > deadline:
            raise SandboxError(f"{len(left)} of {len(wanted)} ports not bound in {timeout:g} s")
        time.sleep(0.5)


# ---- probes


class NamespaceProber:
    """TCP connections to 169.254.169.254:80 made from inside C{ovnmeta-} namespaces,
    on one thread of its own (it enters each namespace with C{setns} to create the
    socket, then goes back; the bench's other threads never change namespace)."""

    def __init__(self, netns_dir: str = "/run/netns") -> None:
        self._dir = netns_dir
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="scale-netns")

    def close(self) -> None:
        self._pool.shutdown()

    def answering(self, namespaces: Iterable[str], timeout: float = 0.5) -> set[str]:
        """The namespaces of C{namespaces} in which a connection is accepted."""
        return self._pool.submit(self._answering, tuple(namespaces), timeout).result()

    def _answering(self, namespaces: Sequence[str], timeout: float) -> set[str]:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            sockets = []
            for name in namespaces:
                try:
                    target = os.open(os.path.join(self._dir, name), os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    set_network_namespace(target)
                except OSError:  # being made: the file is there, not its mount yet
                    os.close(target)
                    continue
                try:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                finally:
                    set_network_namespace(home)
                    os.close(target)
                sock.setblocking(False)
                code = sock.connect_ex(METADATA)
                if code in (0, errno.EINPROGRESS):
                    sockets.append((name, sock))
                else:
                    sock.close()
            return _connected(sockets, timeout)
        finally:
            os.close(home)

    def wait_all(
        self,
        namespaces: Sequence[str],
        *,
        since: float,
        timeout: float,
        alive: Callable[[], bool] = lambda: True,
    ) -> float:
        """Seconds from C{since} until each namespace has accepted a connection.

        @raise TimeoutError: not within C{timeout} (the message says how many are left).
        @raise RuntimeError: C{alive()} says the agent is gone.
        """
        left = set(namespaces)
        deadline = since + timeout
        while left:
            left -= self.answering(sorted(left))
            if not left:
                break
            if not alive():
                raise RuntimeError(f"the agent died with {len(left)} namespaces not answering")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(left)} of {len(namespaces)} namespaces not answering after {timeout:g} s"
                )
            time.sleep(0.1)
        return time.monotonic() - since


def _connected(sockets: list[tuple[str, socket.socket]], timeout: float) -> set[str]:
    import selectors

    done: set[str] = set()
    with selectors.DefaultSelector() as selector:
        for name, sock in sockets:
            selector.register(sock, selectors.EVENT_WRITE, name)
        deadline = time.monotonic() + timeout
        pending = len(sockets)
        while pending and time.monotonic() < deadline:
            for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
                selector.unregister(key.fileobj)
                pending -= 1
                if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    done.add(key.data)
    for _name, sock in sockets:
        sock.close()
    return done


def plugged(sandbox: OvnSandbox, networks: Sequence[Network]) -> int:
    """How many of the networks' metadata veths are on the bridge with an C{ofport}."""
    wanted = {f"tap{net.id[:10]}0" for net in networks}
    rows = sandbox.ovs_select("Interface", [], ["name", "ofport"])
    return sum(
        1
        for row in rows
        if row["name"] in wanted and isinstance(row["ofport"], int) and row["ofport"] > 0
    )


def health(port: int) -> int | None:
    """The agent's C{/healthz} status, None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def passes(port: int) -> int:
    """Provisioning passes the agent has run (C{/metrics}); -1 when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return -1
    return sum(
        int(float(m.group(1)))
        for m in re.finditer(
            r"^metaproxy_ovn_chassis_provisioning_passes_total\{[^}]*\} (\S+)$", text, re.M
        )
    )


def wait_until(
    condition: Callable[[], bool],
    *,
    since: float,
    timeout: float,
    what: str,
    alive: Callable[[], bool] = lambda: True,
    pause: float = 0.05,
) -> float:
    while not condition():
        if not alive():
            raise RuntimeError(f"the agent died waiting for {what}")
        if time.monotonic() > since + timeout:
            raise TimeoutError(f"no {what} after {timeout:g} s")
        time.sleep(pause)
    return time.monotonic() - since


# ---- footprints


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "Threads"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


#: glibc's thread arenas grow in heaps of this size, each mapped at an address aligned
#: to it (HEAP_MAX_SIZE on 64-bit): how the breakdown tells them from other mappings.
_ARENA_HEAP = 64 << 20


def memory_map(pid: int) -> dict[str, int]:
    """Where the process's RSS is, from C{/proc/<pid>/smaps} (bytes): C{heap} (the main
    malloc arena, C{[heap]}), C{arenas} (glibc's thread arenas: anonymous mappings that
    start on a 64 MiB boundary; C{arena_heaps} counts them), C{anon} (other anonymous
    mappings: CPython's object arenas, large allocations, thread stacks), C{files}
    (libraries and other mapped files); empty when it cannot be read."""
    out = dict.fromkeys(("heap", "arenas", "anon", "files", "arena_heaps"), 0)
    kind = ""
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split(None, 6)
                if "-" in head[0] and not head[0].endswith(":"):
                    start = int(head[0].split("-", 1)[0], 16)
                    name = head[5].strip() if len(head) > 5 else ""
                    if name == "[heap]":
                        kind = "heap"
                    elif name.startswith("/"):
                        kind = "files"
                    elif not name and start % _ARENA_HEAP == 0 and head[1].startswith("rw"):
                        kind = "arenas"
                        out["arena_heaps"] += 1
                    else:
                        kind = "anon"
                elif head[0] == "Rss:":
                    out[kind] += int(head[1]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out


def descriptors(pid: int) -> Counter[str]:
    """The process's open descriptors by kind (socket, anon_inode, file, ...)."""
    kinds: Counter[str] = Counter()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return kinds
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        kind = target.split(":", 1)[0] if ":" in target and not target.startswith("/") else "file"
        kinds[kind] += 1
    return kinds


def processes_in(namespaces: Iterable[str], netns_dir: str = "/run/netns") -> int:
    """How many processes run in any of C{namespaces} (their C{/proc/<pid>/ns/net})."""
    inodes = set()
    for name in namespaces:
        try:
            inodes.add(os.stat(os.path.join(netns_dir, name)).st_ino)
        except OSError:
            continue
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            link = os.readlink(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if int(link[link.index("[") + 1 : -1]) in inodes:
            count += 1
    return count


def agent_footprint(agent: ChassisProcess, namespaces: Sequence[str]) -> dict[str, Any]:
    """The agent's memory, descriptors, threads and processes (module docstring, 3)."""
    pids = sorted(agent.pids())
    status = _status(agent.pid)
    fds = descriptors(agent.pid)
    return {
        "pid": agent.pid,
        "rss": status.get("VmRSS", 0) * 1024,
        "peak_rss": status.get("VmHWM", 0) * 1024,
        "anon_rss": status.get("RssAnon", 0) * 1024,
        "memory_map": memory_map(agent.pid),
        "threads": status.get("Threads", 0),
        "descriptors": sum(fds.values()),
        "descriptors_by_kind": dict(fds),
        "session_processes": len(pids),
        "session_rss": sum(rss_bytes(pid) for pid in pids),
        "cpu_s": process_cpu_seconds(agent.pid),
        "processes_in_namespaces": processes_in(namespaces),
        "namespaces": len(namespaces),
    }


def sandbox_footprint(sandbox: OvnSandbox) -> dict[str, Any]:
    out = {}
    for name in ("ovs-vswitchd", "ovn-controller"):
        popen = sandbox._procs.get(name)  # the sandbox's own children
        if popen is None:
            continue
        out[name] = {
            "rss": rss_bytes(popen.pid),
            "cpu_s": process_cpu_seconds(popen.pid),
            "descriptors": sum(descriptors(popen.pid).values()),
        }
    return out


def _netns_inodes(namespaces: Iterable[str]) -> dict[str, int]:
    found = {}
    for name in namespaces:
        try:
            found[name] = os.stat(f"/run/netns/{name}").st_ino
        except OSError:
            pass
    return found


def _errors(log: str) -> list[str]:
    return [
        line[:300]
        for line in log.splitlines()
        if "Traceback" in line or "failed" in line.lower() or "error" in line.lower()
    ]


def _say(text: str) -> None:
    print(f"ovn-scale: {text}", file=sys.stderr, flush=True)


# ---- the run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sample_http(
    agent: ChassisProcess, instances: Sequence[Instance], timeout: float
) -> list[float]:
    asker = Asker()
    seconds: list[float] = []
    errors: list[str] = []

    def ask(instance: Instance) -> None:
        try:
            seconds.append(
                asker.until_answered(
                    instance.namespace, timeout=timeout, since=agent.started_at, alive=agent.alive
                )
            )
        except (TimeoutError, RuntimeError) as e:
            errors.append(f"{instance.namespace}: {e}")

    threads = [threading.Thread(target=ask, args=(inst,), daemon=True) for inst in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"sample instances not answered: {errors[:3]}")
    return sorted(seconds)


class _Run:
    def __init__(self, result: ScaleRun, sandbox: OvnSandbox, run_dir: Path) -> None:
        self.result, self.sandbox, self.run_dir = result, sandbox, run_dir
        self.options = result.options
        self.metrics_port = _free_port()
        self.agent: ChassisProcess | None = None
        self.nova_port = 0

    def start_agent(self) -> ChassisProcess:
        self.agent = start_chassis_process(
            self.sandbox,
            self.run_dir / "metaproxy",
            nova_port=self.nova_port,
            secret=SECRET,
            metrics_listen=f"127.0.0.1:{self.metrics_port}",
        )
        return self.agent

    def done(self, name: str) -> None:
        try:
            self.sandbox.check_alive()
        except SandboxError as e:
            self.result.sandbox_failure = f"after {name}: {e}"
            raise
        if self.agent is None or not self.agent.alive():
            log = self.agent.log()[-2000:] if self.agent is not None else ""
            raise RuntimeError(f"the agent died during {name}:\n{log}")
        self.result.phases_ok.append(name)
        _say(f"{name} done")

    def healthy(self, since: float, what: str) -> float:
        agent = self.agent
        assert agent is not None
        return wait_until(
            lambda: health(self.metrics_port) == 200,
            since=since,
            timeout=self.options.timeout,
            what=what,
            alive=agent.alive,
            pause=0.2,
        )


def run_scale(options: Options, run_dir: Path) -> ScaleRun:
    """Every phase on a fresh sandbox; the figures."""
    result = ScaleRun(options)
    result.load_before = os.getloadavg()
    prober = NamespaceProber()
    with OvnSandbox.start() as sandbox:
        cloud = Cloud(sandbox)
        run = _Run(result, sandbox, run_dir)
        nova = None
        try:
            began = time.monotonic()
            topology = build_topology(sandbox, cloud, options)
            result.topology_s = time.monotonic() - began
            _say(f"{options.networks} networks written and plugged in {result.topology_s:.1f} s")
            wait_bound(sandbox, cloud, (p.id for p in topology.vm_ports), options.timeout)
            sandbox.sync(timeout=options.timeout)
            result.bound_s = time.monotonic() - began
            _say(f"every VM port bound after {result.bound_s:.1f} s")
            sandbox.check_alive()
            table = run_dir / "ports.json"
            table.write_text(json.dumps(fleet_table(topology.vm_ports[: options.sample])))
            nova, run.nova_port = start_fakenova(table, SECRET, run_dir / "nova")
            _phases(run, topology, prober)
        except SandboxError as e:
            result.sandbox_failure = result.sandbox_failure or str(e)
            _say(f"the sandbox failed: {e}")
        except (RuntimeError, TimeoutError) as e:
            result.failure = str(e)
            _say(str(e))
        finally:
            if run.agent is not None:
                result.agent_errors = _errors(run.agent.log())[:20]
                run.agent.stop()
            if nova is not None:
                nova.stop()
            prober.close()
    result.load_after = os.getloadavg()
    return result


def _phases(run: _Run, topology: Topology, prober: NamespaceProber) -> None:
    result, sandbox, options = run.result, run.sandbox, run.options
    namespaces = topology.namespaces

    # start
    agent = run.start_agent()
    result.start_all_connect_s = prober.wait_all(
        namespaces, since=agent.started_at, timeout=options.timeout, alive=agent.alive
    )
    _say(f"every namespace answering {result.start_all_connect_s:.2f} s after the start")
    result.start_all_plugged_s = wait_until(
        lambda: plugged(sandbox, topology.networks) == len(topology.networks),
        since=agent.started_at,
        timeout=options.timeout,
        what="metadata veths plugged",
        alive=agent.alive,
        pause=0.2,
    )
    result.start_sample_http_s = _sample_http(agent, topology.instances, options.timeout)
    result.start_healthy_s = run.healthy(agent.started_at, "/healthz 200 after the start")
    run.done("start")

    # footprint (after a moment's rest: what the agent holds, not what it allocated)
    time.sleep(2)
    result.footprint = agent_footprint(agent, namespaces)
    result.sandbox_footprint = sandbox_footprint(sandbox)
    run.done("footprint")

    # SB restart
    before = passes(run.metrics_port)
    sandbox.stop_database("sb")
    wait_until(
        lambda: health(run.metrics_port) not in (200, None),
        since=time.monotonic(),
        timeout=60,
        what="/healthz 503 with the Southbound down",
        alive=agent.alive,
    )
    sandbox.start_database("sb")
    back = time.monotonic()
    result.sb_resync_s = wait_until(
        lambda: passes(run.metrics_port) > before and health(run.metrics_port) == 200,
        since=back,
        timeout=options.timeout,
        what="a provisioning pass and /healthz 200 after the Southbound came back",
        alive=agent.alive,
    )
    prober.wait_all(namespaces, since=back, timeout=60, alive=agent.alive)
    run.done("SB restart")

    # agent restart
    inodes = _netns_inodes(namespaces)
    log_before = len(agent.log())
    agent.stop()
    agent = run.start_agent()
    result.restart_all_connect_s = prober.wait_all(
        namespaces, since=agent.started_at, timeout=options.timeout, alive=agent.alive
    )
    result.restart_healthy_s = run.healthy(agent.started_at, "/healthz 200 after a restart")
    new_log = agent.log()[log_before:]
    result.restart_made_anew = new_log.count(_PROVISIONED_LINE)
    after = _netns_inodes(namespaces)
    result.restart_namespaces_kept = sum(1 for ns, ino in inodes.items() if after.get(ns) == ino)
    time.sleep(2)
    result.restart_footprint = agent_footprint(agent, namespaces)
    run.done("agent restart")

    # teardown: every VIF leaves
    # every VIF's OVS port in one transaction (ovs-vsctl, which waits for ovs-vswitchd
    # to apply each change, takes tens of seconds per port with 2,000 ports on br-int)
    rows = sandbox.ovs_select("Port", [], ["_uuid", "name"])
    wanted = set(topology.vif_names) | {instance.root_link for instance in topology.instances}
    uuids = [row["_uuid"] for row in rows if row["name"] in wanted]
    began = time.monotonic()
    sandbox.ovs_transact(
        [
            {
                "op": "mutate",
                "table": "Bridge",
                "where": [["name", "==", sandbox.bridge]],
                "mutations": [["ports", "delete", ["set", [["uuid", u] for u in uuids]]]],
            }
        ]
    )
    for instance in topology.instances:
        delete_namespace(instance.namespace)
    names = set(namespaces)
    result.teardown_s = wait_until(
        lambda: not names & set(os.listdir("/run/netns")),
        since=began,
        timeout=options.timeout,
        what="every ovnmeta- namespace removed",
        alive=agent.alive,
        pause=0.2,
    )
    time.sleep(2)
    result.teardown_footprint = agent_footprint(agent, [])
    run.done("teardown")


# ---- the report


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / MIB:.1f} MiB"


def _memory_map_row(found: dict[str, int]) -> str:
    if not found:
        return "-"
    return (
        f"{_mib(found['heap'])} / {_mib(found['arenas'])} ({found['arena_heaps']}) / "
        f"{_mib(found['anon'])} / {_mib(found['files'])}"
    )


def _footprint_rows(prefix: str, fp: dict[str, Any]) -> list[tuple[str, str]]:
    if not fp:
        return [(prefix, "-")]
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(fp["descriptors_by_kind"].items()))
    return [
        (f"{prefix}: agent RSS (peak)", f"{_mib(fp['rss'])} ({_mib(fp['peak_rss'])})"),
        (
            f"{prefix}: agent RSS in the main heap / thread arenas (heaps) / other anon / files",
            _memory_map_row(fp.get("memory_map") or {}),
        ),
        (
            f"{prefix}: session processes (their RSS)",
            f"{fp['session_processes']} ({_mib(fp['session_rss'])})",
        ),
        (f"{prefix}: descriptors", f"{fp['descriptors']} ({kinds})"),
        (f"{prefix}: threads", str(fp["threads"])),
        (
            f"{prefix}: processes in the {fp['namespaces']} ovnmeta- namespaces",
            str(fp["processes_in_namespaces"]),
        ),
    ]


def rows(run: ScaleRun) -> list[tuple[str, str]]:
    sample = run.start_sample_http_s
    out = [
        ("load average before / after", f"{run.load_before[0]:.2f} / {run.load_after[0]:.2f}"),
        ("topology written and plugged", _s(run.topology_s)),
        ("every VM port bound (since the topology began)", _s(run.bound_s)),
        ("start -> every namespace accepts on 169.254.169.254:80", _s(run.start_all_connect_s)),
        ("start -> every metadata veth plugged (ofport)", _s(run.start_all_plugged_s)),
        (
            f"start -> first 200 from each of {len(sample)} sample instances (min / max)",
            f"{_s(sample[0])} / {_s(sample[-1])}" if sample else "-",
        ),
        ("start -> /healthz 200", _s(run.start_healthy_s)),
        *_footprint_rows("provisioned", run.footprint),
        ("SB ovsdb-server back -> provisioning pass and /healthz 200", _s(run.sb_resync_s)),
        ("agent restart -> every namespace accepts", _s(run.restart_all_connect_s)),
        ("agent restart -> /healthz 200", _s(run.restart_healthy_s)),
        (
            "agent restart: namespaces made anew / kept",
            "-"
            if run.restart_made_anew is None
            else f"{run.restart_made_anew} / {run.restart_namespaces_kept}",
        ),
        *_footprint_rows("after the restart", run.restart_footprint),
        ("every VIF gone -> every namespace removed", _s(run.teardown_s)),
        *_footprint_rows("after the teardown", run.teardown_footprint),
    ]
    for name, fp in run.sandbox_footprint.items():
        out.append(
            (f"{name} (context): RSS, descriptors", f"{_mib(fp['rss'])}, {fp['descriptors']}")
        )
    out.append(("phases done", ", ".join(run.phases_ok) or "-"))
    out.append(("failure", (run.failure or run.sandbox_failure or "none").splitlines()[0][:200]))
    return out


def markdown(run: ScaleRun, command: str) -> str:
    options = run.options
    lines = [
        f"`{command}`",
        "",
        f"{options.networks} networks, one VM port each bound to the chassis before the "
        f"agent starts ({options.sample} real instances, the others OVS internal ports); "
        "metaproxy in chassis mode (twistd).",
        "",
        "| | metaproxy |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in rows(run)),
        "",
        "Against the targets:",
        "",
    ]
    fp = run.footprint
    if fp:
        per_network = fp["processes_in_namespaces"] / max(1, fp["namespaces"])
        lines.append(
            f"- extra processes per network: {per_network:g} (target 0): "
            f"{'met' if per_network == 0 else 'not met'}"
        )
        rss = fp["session_rss"] / MIB
        lines.append(
            f"- whole agent RSS with {fp['namespaces']} networks provisioned: {rss:.1f} MiB "
            f"(target < {RSS_TARGET_MIB} MiB for 1,000): "
            f"{'met' if rss < RSS_TARGET_MIB else 'not met'}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench.ovnsandbox.scale",
        description="metaproxy's chassis mode with N networks provisioned on a real OVN "
        "chassis: start-up, memory, descriptors, threads, processes, resync after an SB "
        "and an agent restart, teardown (root, OVS/OVN packages).",
    )
    parser.add_argument("--networks", type=int, default=1000)
    parser.add_argument(
        "--sample", type=int, default=5, help="networks whose VM port is a real instance"
    )
    parser.add_argument("--batch", type=int, default=50, help="networks per NB transaction")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds, per phase")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs)")
    args = parser.parse_args(argv)
    try:
        options = Options(
            networks=args.networks, sample=args.sample, batch=args.batch, timeout=args.timeout
        )
    except ValueError as e:
        print(f"ovn-scale: {e}", file=sys.stderr)
        return 2
    problem = missing()
    if problem:
        print(f"ovn-scale: {problem}", file=sys.stderr)
        return 2
    run_dir = Path(tempfile.mkdtemp(prefix="mpovs-", dir="/tmp"))
    try:
        result = run_scale(options, run_dir)
    except KeyboardInterrupt:
        print(f"ovn-scale: interrupted; run directory kept: {run_dir}", file=sys.stderr)
        return 130
    failed = bool(result.failure or result.sandbox_failure)
    if args.keep or failed:
        print(f"ovn-scale: run directory kept: {run_dir}", file=sys.stderr)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    command = "python -m bench.ovnsandbox.scale " + " ".join(argv)
    text = markdown(result, command)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stamp}-ovn-scale.md").write_text(text)
    (args.out / f"{stamp}-ovn-scale.json").write_text(
        json.dumps(result.as_json(), indent=1, default=str)
    )
    print(text)
    print(f"written: {args.out / (stamp + '-ovn-scale.md')} (and .json)", file=sys.stderr)
    if result.sandbox_failure:
        return 3
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
