"""End-to-end: metaproxy serving the router namespaces itself, no haproxy
(C{[metaproxy] router_namespaces = serve}, docs/routers.md).

Routers are built as the L3 agent builds them with C{enable_metadata_proxy = False}: its
sysctls, its metadata mark rule, no redirect and no haproxy
(L{bench.load.netns.Topology.add_router}). The agent (C{twistd metaproxy}, one process)
finds them itself in C{/run/netns} and serves only this run's routers
(C{router_id_prefix}). Every instance behind a router has the same address as one behind
the other router::

    a1 10.0.0.5 ─┐                              ┌─ b 10.0.0.5
    a2 10.0.1.6 ─┴ qrouter-<tag>-r1   qrouter-<tag>-r2
                   (+ ghost 10.0.0.9 on a1's network, in the table and Nova only)

The L3 agent's real iptables code is run from upstream's virtualenv when it is there
(C{make upstream}); that test skips otherwise. Needs root, ip, iptables (the e2e tests'
prerequisites).
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from bench.compare.upstream import DEFAULT_VENV, upstream_installed
from bench.fakes.nova.instances import instances_from_table
from bench.load.fleet import boot_length, make_fleet
from bench.load.netns import METADATA_V4, Topology
from bench.load.netns_host import run_command
from bench.load.routerfront import router_fleet, router_mode_config, start_router_front
from bench.load.storm import StormConfig, run_storm
from bench.processes import start_agent, start_fakenova, wait_for_log, write_agent_config
from bench.stack import start_stack
from tests.e2e.conftest import BOOT_REQUESTS, E2E, IDENTITY_PATHS

pytestmark = pytest.mark.usefixtures("e2e_prerequisites")

SECRET = "routers-e2e-secret"
L3_RULES = Path(__file__).with_name("l3_agent_rules.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RouterSite(E2E):
    """The topology above, its table, the fake Nova and the agent serving the routers."""

    def __init__(self, topo: Topology) -> None:
        super().__init__(topo)
        self.routers = {}
        self.instances = {}
        self.metrics_port = _free_port()

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
        self.table["instances"][device] = {
            "hostname": f"host-{name}",
            "user_data": name,
            "public_keys": {f"key-{name}": f"ssh-ed25519 AAAAC3Nzarouters{name} {name}@e2e"},
        }
        return device

    def instance(self, name: str, router, network: str, ip: str, mac: str):
        instance = self.topo.add_instance(name, (router, network), ip, mac)
        self.device_of[instance.namespace] = self.port(name, network, ip, mac)
        self.instances[name] = instance
        return instance

    def build(self) -> None:
        topo = self.topo
        net_a, net_a2, net_b = (topo.id(k) for k in ("net-a", "net-a2", "net-b"))
        self.routers["r1"] = topo.add_router(
            topo.id("r1"), {net_a: "10.0.0.1/24", net_a2: "10.0.1.1/24"}, metadata_proxy=False
        )
        self.routers["r2"] = topo.add_router(
            topo.id("r2"), {net_b: "10.0.0.1/24"}, metadata_proxy=False
        )
        self.table["routers"] = {topo.id("r1"): [net_a, net_a2], topo.id("r2"): [net_b]}
        self.instance("a1", self.routers["r1"], net_a, "10.0.0.5", "fa:16:3e:7e:00:01")
        self.instance("a2", self.routers["r1"], net_a2, "10.0.1.6", "fa:16:3e:7e:00:02")
        self.instance("b", self.routers["r2"], net_b, "10.0.0.5", "fa:16:3e:7e:00:03")
        self.port("ghost", net_a, "10.0.0.9", "fa:16:3e:7e:00:09")
        for spare in ("r9", "ha"):  # routers the tests make later
            self.table["routers"][topo.id(spare)] = [topo.id(f"net-{spare}")]
        self.port("c9", topo.id("net-r9"), "10.0.0.5", "fa:16:3e:7e:00:0a")
        self.port("cha", topo.id("net-ha"), "10.0.0.5", "fa:16:3e:7e:00:0b")
        self.write_table()
        self.records = instances_from_table(self.table)
        self.nova, port = start_fakenova(self.table_path, SECRET, topo.run_dir / "nova")
        self.nova_port = port
        topo.adopt(self.nova.pid)
        write_agent_config(
            self.config,
            state_path=self.state,
            nova_port=port,
            secret=SECRET,
            table=self.table_path,
            extra_metaproxy=router_mode_config(topo)
            + "namespace_rescan_interval = 30\n"
            + f"metrics_listen = 127.0.0.1:{self.metrics_port}\n",
        )

    def write_table(self) -> None:
        import json

        self.table_path.write_text(json.dumps(self.table, indent=1))

    def start_agent(self):
        self.agent_runs += 1
        self.agent = start_agent(
            [self.config], self.topo.run_dir / f"agent{self.agent_runs}", wait_socket=None
        )
        self.topo.adopt(self.agent.pid)
        wait_for_log(self.agent, "router namespace(s) found in /run/netns", 30)
        return self.agent

    def stop_agent(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None

    def metric(self, name: str) -> dict[str, float]:
        """The agent's samples of metric C{name}: labels text -> value."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        samples = {}
        for line in text.splitlines():
            match = re.match(rf"{name}(\{{[^}}]*\}})? (\S+)$", line)
            if match:
                samples[match.group(1) or ""] = float(match.group(2))
        return samples


@pytest.fixture(scope="module")
def site(e2e_prerequisites):
    if not e2e_prerequisites:
        pytest.skip("e2e prerequisites missing")
    built = RouterSite(Topology())
    try:
        built.build()
        built.start_agent()
        yield built
    finally:
        built.stop_agent()
        if built.nova is not None:
            built.nova.stop()
        built.topo.cleanup()


@pytest.fixture
def running(site):
    """The agent runs again after the test, whatever the test did to it."""
    yield site
    if site.agent is None or not site.agent.alive():
        site.start_agent()


def lo_metadata(site, router) -> list[str]:
    out = run_command(["ip", "-n", router.name, "-o", "addr", "show", "dev", "lo"]).stdout
    return [line for line in out.decode().splitlines() if METADATA_V4 in line]


def listening(namespace: str) -> bool:
    done = run_command(
        ["ip", "netns", "exec", namespace, "ss", "-Hltn", f"src {METADATA_V4}:80"], check=False
    )
    return b"LISTEN" in done.stdout


def test_cloud_init_boots_behind_each_router(site):
    """cloud-init's whole first-boot sequence from three instances behind two routers,
    two of them with the same address: every answer is the asker's own."""
    reports = site.clients([(site.instances[n], {}) for n in ("a1", "a2", "b")])
    for name, report in zip(("a1", "a2", "b"), reports, strict=True):
        site.assert_own(site.instances[name], report, count=BOOT_REQUESTS)
        assert report["failed"] is None
    for router in site.routers.values():
        # the address the L3 agent never adds, once, scope host; no rule of ours anywhere
        (line,) = lo_metadata(site, router)
        assert f"inet {METADATA_V4}/32 scope host lo" in line
        rules = run_command(["ip", "netns", "exec", router.name, "iptables-save"]).stdout
        assert b"9697" not in rules and b"REDIRECT" not in rules


def test_guest_identity_headers_change_nothing_and_are_counted(site):
    """X-Forwarded-For naming a ghost on a1's network, X-Neutron-Router-ID naming r2
    (where 10.0.0.5 is b), X-Neutron-Network-ID naming b's network: a1 still gets its
    own data, and each header is counted."""
    before = site.metric("metaproxy_guest_identity_headers_total")
    spoof = [
        ("X-Forwarded-For", "10.0.0.9"),
        ("X-Neutron-Router-ID", site.topo.id("r2")),
        ("X-Neutron-Network-ID", site.topo.id("net-b")),
    ]
    report = site.client(site.instances["a1"], paths=IDENTITY_PATHS, headers=spoof)
    site.assert_own(site.instances["a1"], report, count=len(IDENTITY_PATHS))
    after = site.metric("metaproxy_guest_identity_headers_total")
    counted = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    for header in ("X-Forwarded-For", "X-Neutron-Router-ID", "X-Neutron-Network-ID"):
        (key,) = [k for k in counted if f'"{header.lower()}"' in k.lower()]
        assert counted[key] == len(IDENTITY_PATHS), (header, counted)


def test_a_new_router_is_served_within_a_second_and_freed_when_removed(site):
    """The L3 agent makes a router: listened in within 1 s of its namespace appearing
    (inotify: the rescan is 30 s here), served; the router removed: the listener is
    closed, and nothing of metaproxy's keeps the namespace: it is destroyed (the
    instance's veth goes with it)."""
    topo = site.topo
    name = f"qrouter-{topo.id('r9')}"
    started = time.monotonic()
    router = topo.add_router(
        topo.id("r9"), {topo.id("net-r9"): "10.0.0.1/24"}, metadata_proxy=False
    )
    while not listening(name):
        assert time.monotonic() - started < 1.0, "not listened in within 1 s"
        time.sleep(0.02)
    instance = topo.add_instance("c9", (router, topo.id("net-r9")), "10.0.0.5", "fa:16:3e:7e:00:0a")
    site.device_of[instance.namespace] = topo.id("vm-c9")
    site.assert_own(instance, site.client(instance, paths=IDENTITY_PATHS))
    wait_for_log(site.agent, f"Serving router namespace {name} on 169.254.169.254:80", 5)

    topo.remove(router)  # ip netns delete, as the L3 agent does
    wait_for_log(site.agent, f"Stopped serving router namespace {name}: its namespace is gone", 5)
    deadline = time.monotonic() + 10
    while topo.exec(instance, ["ip", "link", "show", "eth0"], check=False).returncode == 0:
        assert time.monotonic() < deadline, "the router's namespace was kept alive"
        time.sleep(0.1)


@pytest.mark.skipif(
    not upstream_installed(DEFAULT_VENV), reason="upstream's virtualenv is missing: make upstream"
)
def test_the_l3_agents_iptables_manager_leaves_the_path_alone(site):
    """The L3 agent's own IptablesManager, from upstream's code, applying a router's rules
    inside r1 again and again (each time a new manager: an agent restart): metaproxy's
    path survives, since none of it is in iptables. With the metadata proxy turned back
    on (rollback), the agent's redirect to 9697 takes the requests first; turned off
    again, metaproxy answers again."""
    r1, a1 = site.routers["r1"], site.instances["a1"]

    def l3_agent(*flags):
        done = run_command(
            ["ip", "netns", "exec", r1.name, str(DEFAULT_VENV / "bin" / "python"), str(L3_RULES)]
            + list(flags),
            timeout=120,
            check=False,
        )
        assert done.returncode == 0 and done.stdout.strip() == b"applied", done.stderr[-2000:]

    l3_agent()
    site.assert_own(a1, site.client(a1, paths=IDENTITY_PATHS))
    l3_agent("--extra-rule")
    rules = run_command(["ip", "netns", "exec", r1.name, "iptables-save"]).stdout.decode()
    assert "neutron-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+" in rules  # its mark
    assert "REDIRECT" not in rules
    site.assert_own(a1, site.client(a1, paths=IDENTITY_PATHS))

    l3_agent("--metadata-proxy")  # rollback: haproxy's path, nobody on 9697 here
    report = site.client(a1, paths=IDENTITY_PATHS[:1], timeout=5)
    assert report["requests"] == [] and "refused" in report["error"].lower(), report
    l3_agent()
    site.assert_own(a1, site.client(a1, paths=IDENTITY_PATHS))
    assert len(lo_metadata(site, r1)) == 1


def test_listening_on_an_ha_backup_is_harmless(site):
    """An HA router's backup: its qr- port has no address (keepalived keeps the VIP on
    the primary). A request that reaches it anyway gets no answer at all, not a reset
    (the backup has no route back); once keepalived makes it primary (the VIP added), it
    serves at once, with nothing for metaproxy to do."""
    topo = site.topo
    router = topo.add_router(
        topo.id("ha"), {topo.id("net-ha"): "10.0.0.1/24"}, metadata_proxy=False
    )
    (port,) = router.ports.values()
    run_command(["ip", "-n", router.name, "addr", "flush", "dev", port.ifname])  # backup
    instance = topo.add_instance(
        "cha", (router, topo.id("net-ha")), "10.0.0.5", "fa:16:3e:7e:00:0b"
    )
    site.device_of[instance.namespace] = topo.id("vm-cha")
    mac = run_command(["ip", "-n", router.name, "-o", "link", "show", port.ifname]).stdout
    qr_mac = re.search(rb"link/ether (\S+)", mac).group(1).decode()
    # the instance's traffic reaches the backup (as flooding could make it)
    run_command(
        ["ip", "-n", instance.namespace, "neigh", "replace", "10.0.0.1", "lladdr", qr_mac]
        + ["dev", "eth0", "nud", "permanent"]
    )
    deadline = time.monotonic() + 5
    while not listening(router.name):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    report = site.client(instance, paths=IDENTITY_PATHS[:1], timeout=2)
    assert report["requests"] == [] and "timed out" in report["error"].lower(), report
    run_command(["ip", "-n", router.name, "addr", "add", "10.0.0.1/24", "dev", port.ifname])
    site.assert_own(instance, site.client(instance, paths=IDENTITY_PATHS))
    topo.remove(instance)
    topo.remove(router)


def test_metaproxy_restarted(running):
    """Stopped: the address stays, nothing listens, the instance is refused at once
    (cloud-init tries again) rather than left waiting. Started again: every router is
    listened in again, the address not added twice, and the instances served."""
    site = running
    a1, b = site.instances["a1"], site.instances["b"]
    site.stop_agent()
    report = site.client(a1, paths=IDENTITY_PATHS[:1], timeout=5)
    assert report["requests"] == [] and "refused" in report["error"].lower(), report
    assert all(len(lo_metadata(site, r)) == 1 for r in site.routers.values())
    site.start_agent()
    assert "Serving 2 of 2 router namespace(s)" in site.agent.log()
    for instance in (a1, b):
        site.assert_own(instance, site.client(instance, paths=IDENTITY_PATHS))
    assert all(len(lo_metadata(site, r)) == 1 for r in site.routers.values())


def test_storm_while_routers_come_and_go():
    """A small boot storm from instances behind three routers, served by an agent with
    two workers listening in the routers itself; meanwhile other routers of the same run
    are made and deleted. Every boot completes with every answer its own, and each
    router that came and went was listened in, then let go."""
    topology = Topology()
    fleet = router_fleet(make_fleet(30, 3), topology)
    stack = start_stack(
        fleet,
        extra_default="metadata_workers = 2\n",
        extra_metaproxy=router_mode_config(topology) + "namespace_rescan_interval = 30\n",
    )
    front = None
    churned: list[str] = []
    stop = threading.Event()

    def churn() -> None:
        for i in range(6):
            if stop.wait(0.4):
                return
            name = f"qrouter-{topology.id(f'x{i}')}"
            run_command(["ip", "netns", "add", name])
            churned.append(name)
            deadline = time.monotonic() + 5
            while not listening(name) and time.monotonic() < deadline:
                time.sleep(0.02)
            run_command(["ip", "netns", "delete", name])

    try:
        front = start_router_front(topology, fleet, 30, adopt=stack.pids)
        config = StormConfig(
            instances=30,
            routers=3,
            concurrency=6,
            ramp=4.0,
            workers=1,
            request_timeout=20.0,
            nova_url=stack.nova_url,
        )
        thread = threading.Thread(target=churn)
        thread.start()
        try:
            result = run_storm(
                config, fleet, [stack.agent.pid], target=front.target, nova_pids=[stack.nova.pid]
            )
        finally:
            stop.set()
            thread.join(30)
        assert stack.agent.alive()
        log = stack.agent.log()
    finally:
        stop.set()
        if front is not None:
            front.stop()
        else:
            topology.cleanup()
        stack.stop()
        shutil.rmtree(stack.run_dir, ignore_errors=True)
    assert result.target == "namespaces-tcp"
    assert result.errors == {} and result.boot_failures == {}
    assert result.boots == result.boots_completed == result.boots_clean == 30
    assert result.boot_lengths == boot_length(fleet)
    assert result.requests == result.good == sum(result.boot_lengths)
    assert len(churned) >= 3
    for name in churned:
        assert f"Serving router namespace {name} on 169.254.169.254:80" in log
        assert f"Stopped serving router namespace {name}: its namespace is gone" in log
