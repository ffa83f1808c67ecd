"""End-to-end: metaproxy listening inside the namespaces itself, no haproxy, the caller
from the kernel (L{metaproxy.http.listeners.Listeners.add_tcp}).

The agent (L{metaproxy.agent.service.AgentService}) runs in this test process, on its
reactor, once with one process and once with two workers; the test opens and closes the
listeners through its listener set, as the provisioning will. Each instance is a network
namespace whose C{eth0} is a veth into the serving namespace; every instance has
10.0.0.5, so an answer that is not the asker's own shows at once::

    o1 10.0.0.5 ── ovnmeta-o1 (tap, 169.254.169.254:80, [fe80::a9fe:a9fe%tap]:80)  + ghost 10.0.0.9
    o2 10.0.0.5 ── ovnmeta-o2 (tap, 169.254.169.254:80)
    a  10.0.0.5 ── qrouter-r1 (qr-, 169.254.169.254/32 on lo, listening on it, port 80)
    b  10.0.0.5 ── qrouter-r2 (qr-, the L3 agent's rules: :80 redirected to 9697; 0.0.0.0:9697)
    d  10.0.0.5 ── ovnmeta-<mode>-dyn (opened, served, closed and deleted by one test)

Needs root (entering namespaces, port 80), C{ip} and C{iptables} (the L3 agent's rules).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from bench.fakes import novatree
from bench.fakes.nova.instances import instances_from_table
from bench.load.netns import METADATA_V4, METADATA_V6, Instance, Topology
from bench.processes import start_fakenova, write_agent_config
from metaproxy.http.listeners import ListenAddress, ListenError
from metaproxy.namespace import Namespace

REPO = Path(__file__).resolve().parents[2]
SECRET = "netns-listen-secret"
IDENTITY_PATHS = [
    "/openstack/2018-08-27/meta_data.json",
    "/latest/meta-data/instance-id",
    "/latest/meta-data/hostname",
]
MODES = ("process", "workers")


def dyn_mac(mode: str) -> str:
    return "fa:16:3e:4e:01:%02x" % MODES.index(mode)


def _missing() -> str | None:
    missing = []
    if os.geteuid() != 0:
        missing.append(f"root (running as uid {os.geteuid()})")
    missing += [tool for tool in ("ip", "iptables") if shutil.which(tool) is None]
    if missing:
        return "netns listeners: needs root, ip and iptables: missing " + ", ".join(missing)
    return None


pytestmark = [pytest.mark.skipif(_missing() is not None, reason=str(_missing()))]


class Site:
    """The topology, the table, the fake Nova: shared by both modes."""

    def __init__(self) -> None:
        self.topo = Topology()
        self.table: dict[str, Any] = {"routers": {}, "ports": [], "instances": {}}
        self.device_of: dict[str, str] = {}
        self.instances: dict[str, Instance] = {}
        self.serving: dict[str, Namespace] = {}
        self.addresses: dict[str, list[ListenAddress]] = {}
        self.table_path = self.topo.run_dir / "ports.json"
        self.records: dict[str, novatree.InstanceRecord] = {}
        self.nova: Any = None
        self.nova_port = 0

    def port(self, name: str, network: str, ip: str, mac: str) -> str:
        device = self.topo.id(f"vm-{name}")
        self.table["ports"].append(
            {
                "id": f"port-{name}",
                "network_id": network,
                "mac_address": mac,
                "fixed_ips": [ip],
                "device_id": device,
                "project_id": f"proj-{name}",
                "device_owner": "compute:nova",
            }
        )
        self.table["instances"][device] = {"hostname": f"host-{name}"}
        return device

    def instance(self, name: str, parent, network: str, mac: str) -> Instance:
        instance = self.topo.add_instance(name, (parent, network), "10.0.0.5", mac)
        self.device_of[instance.namespace] = self.port(name, network, "10.0.0.5", mac)
        self.instances[name] = instance
        return instance

    def ask(self, instance: Instance, base: str = f"http://{METADATA_V4}", headers=()) -> dict:
        argv = [sys.executable, "-m", "bench.load.nsclient", "--base", base, "--timeout", "10"]
        for path in IDENTITY_PATHS:
            argv += ["--path", path]
        for name, value in headers:
            argv += ["--header", f"{name}:{value}"]
        done = self.topo.exec(instance, argv, check=False, timeout=120, cwd=REPO)
        try:
            report = json.loads(done.stdout)
        except ValueError:
            raise AssertionError(
                f"nsclient in {instance}: {done.stdout!r} {done.stderr!r}"
            ) from None
        for answer in report["requests"]:
            answer["body"] = base64.b64decode(answer["body"])
        return report

    def assert_own(self, instance: Instance, report: dict) -> None:
        """Every answer is exactly what Nova serves this instance, none other's."""
        assert report["error"] is None, (instance.name, report["error"])
        assert len(report["requests"]) == len(IDENTITY_PATHS)
        record = self.records[self.device_of[instance.namespace]]
        for answer in report["requests"]:
            status, _type, body = novatree.lookup(record, answer["path"], address=answer["source"])
            assert (answer["status"], answer["body"]) == (status, body), (
                instance.name,
                answer["path"],
                answer["status"],
                answer["body"][:200],
            )


def _build(site: Site) -> None:
    topo = site.topo
    o1, o2 = topo.id("o1"), topo.id("o2")
    n_a, n_b = topo.id("net-a"), topo.id("net-b")
    r1, r2 = topo.id("r1"), topo.id("r2")
    ovn1 = topo.add_ovn(o1, "10.0.0.2/24", ipv6=True)
    ovn2 = topo.add_ovn(o2, "10.0.0.2/24", ipv6=False)
    router1 = topo.add_router(r1, {n_a: "10.0.0.1/24"})
    router2 = topo.add_router(r2, {n_b: "10.0.0.1/24"})
    # r1 without the L3 agent's redirect: the metadata address is the router's own
    ipt = topo.iptables
    topo.exec(router1.name, [ipt, "-w", "-t", "nat", "-F", "PREROUTING"])
    topo.exec(router1.name, ["ip", "addr", "add", f"{METADATA_V4}/32", "dev", "lo"])
    site.table["routers"] = {r1: [n_a], r2: [n_b]}
    site.instance("o1", ovn1, o1, "fa:16:3e:4e:00:01")
    site.instance("o2", ovn2, o2, "fa:16:3e:4e:00:02")
    site.instance("a", router1, n_a, "fa:16:3e:4e:00:03")
    site.instance("b", router2, n_b, "fa:16:3e:4e:00:04")
    site.port("ghost", o1, "10.0.0.9", "fa:16:3e:4e:00:09")  # what an XFF spoof would reach
    for mode in MODES:  # the namespace each mode builds, serves and deletes
        site.port(f"{mode}-dyn", topo.id(f"{mode}-dyn"), "10.0.0.5", dyn_mac(mode))
    (tap1,) = ovn1.ports.values()
    site.serving = {
        "o1": Namespace.parse(ovn1.name),
        "o2": Namespace.parse(ovn2.name),
        "a": Namespace.parse(router1.name),
        "b": Namespace.parse(router2.name),
    }
    site.addresses = {
        "o1": [ListenAddress(METADATA_V4), ListenAddress(METADATA_V6, 80, tap1.ifname)],
        "o2": [ListenAddress(METADATA_V4)],
        "a": [ListenAddress(METADATA_V4)],
        "b": [ListenAddress("0.0.0.0", 9697)],
    }
    site.table_path.write_text(json.dumps(site.table, indent=1))
    site.records = instances_from_table(site.table)
    site.nova, site.nova_port = start_fakenova(site.table_path, SECRET, topo.run_dir / "nova")
    topo.adopt(site.nova.pid)


@pytest.fixture(scope="module")
def site():
    built = Site()
    try:
        _build(built)
        yield built
    finally:
        if built.nova is not None:
            built.nova.stop()
        built.topo.cleanup()


@pytest_twisted.async_yield_fixture(scope="module", params=MODES)
async def agent(request, site):
    """The agent in this process, every namespace of the site listened in."""
    from twisted.internet import reactor

    from metaproxy.agent.service import AgentService
    from metaproxy.config import load_settings

    mode = request.param
    state = site.topo.run_dir / mode
    config = write_agent_config(
        site.topo.run_dir / f"{mode}.ini",
        state_path=state,
        nova_port=site.nova_port,
        secret=SECRET,
        table=site.table_path,
        extra_default="metadata_workers = 2\n" if mode == "workers" else "metadata_workers = 1\n",
    )
    settings = load_settings([str(config)], [])
    service = AgentService(
        reactor,
        settings,
        config_files=(str(config),),
        install_signal_handlers=False,
        use_inotify=False,
    )
    service.mode = mode
    service.startService()
    home = os.readlink("/proc/thread-self/ns/net")
    try:
        for name, namespace in site.serving.items():
            await service.listeners.add_tcp(namespace, site.addresses[name])
        # the reactor's thread never left its namespace
        assert os.readlink("/proc/thread-self/ns/net") == home
        yield service
    finally:
        await service.stopService()


async def in_thread(function, *args, **kwargs):
    from twisted.internet.threads import deferToThread

    return await deferToThread(function, *args, **kwargs)


async def wait_for(condition, what: str, timeout: float = 20.0):
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    deadline = time.monotonic() + timeout
    while True:
        value = await in_thread(condition)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await deferLater(reactor, 0.2, lambda: None)


@pytest_twisted.ensureDeferred
async def test_each_instance_gets_its_own_data(site, agent):
    """Five instances with the same address behind four namespaces (two OVN networks,
    a router serving on its own 169.254.169.254, one behind the L3 agent's redirect to
    9697), and one of them over IPv6 link-local (looked up by MAC): each its own data."""
    for name in ("o1", "o2", "a", "b"):
        instance = site.instances[name]
        site.assert_own(instance, await in_thread(site.ask, instance))
    o1 = site.instances["o1"]
    report = await in_thread(site.ask, o1, f"http://[{METADATA_V6}%25eth0]")
    assert report["requests"][0]["source"] == o1.link_local
    site.assert_own(o1, report)


@pytest_twisted.ensureDeferred
async def test_guest_identity_headers_change_nothing_and_are_counted(site, agent):
    """X-Forwarded-For naming a ghost on the same network, X-OVN-Network-ID naming the
    other OVN network (where 10.0.0.5 is o2), X-Neutron-Router-ID naming r2: still the
    asker's own data, and each header counted once per request."""
    topo = site.topo
    spoof = [
        ("X-Forwarded-For", "10.0.0.9"),
        ("X-OVN-Network-ID", topo.id("o2")),
        ("X-Neutron-Router-ID", topo.id("r2")),
    ]

    def counted() -> dict:
        return agent.snapshot().get("guest_headers", {})

    before = counted()
    for name in ("o1", "a"):
        instance = site.instances[name]
        site.assert_own(instance, await in_thread(site.ask, instance, headers=spoof))
    want = 2 * len(IDENTITY_PATHS)

    def all_counted():
        now = counted()
        return all(
            now.get(header, 0) - before.get(header, 0) == want
            for header in ("X-Forwarded-For", "X-OVN-Network-ID", "X-Neutron-Router-ID")
        )

    # workers report their counters every few seconds
    await wait_for(all_counted, "the guest's headers counted")
    assert counted().get("X-Neutron-Network-ID", 0) == before.get("X-Neutron-Network-ID", 0)


def _listening_inodes(namespace: str) -> set[str]:
    out = os.popen(f"ip netns exec {namespace} ss -Hltne").read()
    return set(re.findall(r"ino:(\d+)", out))


def _holders(inodes: set[str], pids: list[int]) -> set[tuple[int, str]]:
    """(pid, inode) of every descriptor of C{pids} that is one of those sockets."""
    found = set()
    for pid in pids:
        try:
            entries = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for entry in entries:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{entry}")
            except OSError:
                continue
            match = re.fullmatch(r"socket:\[(\d+)\]", target)
            if match and match.group(1) in inodes:
                found.add((pid, match.group(1)))
    return found


@pytest_twisted.ensureDeferred
async def test_removing_the_listener_frees_the_namespace(site, agent):
    """A namespace made now is listened in and served; once its listener is removed
    nothing answers, no process of ours holds its sockets, and deleting it really
    destroys it: its veth (the instance's eth0) goes with it."""
    topo = site.topo
    network = topo.id(f"{agent.mode}-dyn")
    made = await in_thread(topo.add_ovn, network, "10.0.0.2/24", ipv6=False)
    instance = await in_thread(
        topo.add_instance,
        f"{agent.mode}-dyn",
        (made, network),
        "10.0.0.5",
        dyn_mac(agent.mode),
    )
    site.device_of[instance.namespace] = topo.id(f"vm-{agent.mode}-dyn")
    namespace = Namespace.parse(made.name)
    await agent.listeners.add_tcp(namespace, [ListenAddress(METADATA_V4)])
    site.assert_own(instance, await in_thread(site.ask, instance))
    inodes = await in_thread(_listening_inodes, made.name)
    pids = [os.getpid()] + (agent.workers.pids() if agent.workers is not None else [])
    held = await in_thread(_holders, inodes, pids)
    assert len(inodes) == 1 and {inode for _, inode in held} == inodes
    if agent.workers is not None:  # the agent's copy and the workers'
        assert {pid for pid, _ in held} == set(pids)

    await agent.listeners.remove_tcp(namespace)
    assert namespace not in agent.listeners.tcp_namespaces
    await wait_for(lambda: not _holders(inodes, pids), "every copy of the socket closed")
    report = await in_thread(site.ask, instance)
    assert report["requests"] == [] and "refused" in report["error"].lower(), report["error"]

    await in_thread(topo.remove, made)  # ip netns delete

    def veth_gone() -> bool:
        done = topo.exec(instance, ["ip", "link", "show", "eth0"], check=False)
        return done.returncode != 0

    await wait_for(veth_gone, f"{made.name} destroyed (the instance's eth0 gone with it)")


@pytest_twisted.ensureDeferred
async def test_a_namespace_that_does_not_exist_is_a_clear_error(site, agent):
    missing = Namespace.parse(f"ovnmeta-{site.topo.id('never-made')}")
    with pytest.raises(ListenError, match=f"network namespace {missing.name} does not exist"):
        await agent.listeners.add_tcp(missing, [ListenAddress(METADATA_V4)])
    assert missing not in agent.listeners.tcp_namespaces
