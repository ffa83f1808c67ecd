"""End-to-end: instances in network namespaces, haproxy as Neutron runs it, metaproxy, Nova.

One topology for the whole e2e session (L{bench.load.netns}), built twice over, once per
variant:

  - C{shared}: every haproxy forwards to Neutron's shared socket (the namespace comes
    from the header haproxy sets);
  - C{own}: every haproxy forwards to its namespace's own socket.

Per variant, all on 10.0.0.0/24 unless said otherwise, so that a namespace header or an
address a guest could make the agent believe would land on another instance::

    a1 10.0.0.5 ─┐                                           ┌─ b 10.0.0.5
    a2 10.0.1.6 ─┴ qrouter-r1 (qr- ports)   qrouter-r2 (qr-) ┘
    d  10.0.0.5 ── qdhcp-d   (tap, 169.254.169.254, fe80::a9fe:a9fe)   + ghost 10.0.0.9
    o  10.0.0.5 ── ovnmeta-o (tap<id>1, 169.254.169.254, fe80::a9fe:a9fe) + ghost 10.0.0.9

"ghost" instances exist in the port table and in Nova but boot nowhere: they are what an
C{X-Forwarded-For} spoof on the DHCP and OVN networks would reach. One fake Nova and one
C{twistd metaproxy} serve both variants; the C{own} variant's namespaces are declared in
the agent's configuration. The whole thing takes a few seconds to build.
"""

from __future__ import annotations

import base64
import concurrent.futures
import gzip
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import attrs
import pytest

from bench.fakes import novatree
from bench.fakes.nova.instances import instances_from_table
from bench.load.netns import Instance, Namespace, Topology
from bench.load.netns_host import missing_prerequisites
from bench.processes import (
    Process,
    start_agent,
    start_fakenova,
    wait_for_socket,
    write_agent_config,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = "e2e-shared-secret"
VARIANTS = ("shared", "own")
V4 = "http://169.254.169.254"
V6 = "http://[fe80::a9fe:a9fe%25eth0]"
#: haproxy's own 503 page (no server could be reached), not the agent's.
HAPROXY_503 = b"No server is available to handle this request."

#: name: (namespace key, network key, address, last MAC byte)
INSTANCES = {
    "a1": ("r1", "a1", "10.0.0.5", 0x01),
    "a2": ("r1", "a2", "10.0.1.6", 0x02),
    "b": ("r2", "b", "10.0.0.5", 0x03),
    "d": ("d", "d", "10.0.0.5", 0x04),
    "o": ("o", "o", "10.0.0.5", 0x05),
}
#: Instances in the table and in Nova only, on the DHCP and OVN networks.
GHOSTS = {"dghost": ("d", "10.0.0.9", 0x06), "oghost": ("o", "10.0.0.9", 0x07)}


def _prerequisites() -> str | None:
    missing = missing_prerequisites()
    if missing:
        return "e2e: needs root and ip, haproxy, iptables: missing " + ", ".join(missing)
    return None


@attrs.define
class Site:
    """One variant's namespaces and instances."""

    variant: str
    routers: dict[str, Namespace]
    dhcp: Namespace
    ovn: Namespace
    instances: dict[str, Instance]

    @property
    def namespaces(self) -> list[Namespace]:
        return [*self.routers.values(), self.dhcp, self.ovn]


class E2E:
    """The running topology, fake Nova and agent, with helpers the tests share."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.sites: dict[str, Site] = {}
        self.table: dict[str, Any] = {"routers": {}, "ports": [], "instances": {}}
        self.device_of: dict[str, str] = {}  # instance namespace name -> device id
        self.nova: Process | None = None
        self.agent: Process | None = None
        self.agent_runs = 0
        self.state = topo.run_dir / "s"
        self.config = topo.run_dir / "agent.ini"
        self.table_path = topo.run_dir / "ports.json"

    # -- names ---------------------------------------------------------------------------

    def net(self, variant: str, key: str) -> str:
        return self.topo.id(f"{variant}-{key}")

    def device(self, variant: str, name: str) -> str:
        return self.topo.id(f"{variant}-vm-{name}")

    @property
    def shared_socket(self) -> str:
        return str(self.state / "metadata_proxy")

    def ns_socket(self, namespace: Namespace | str) -> Path:
        return self.state / "metaproxy" / "ns" / f"{namespace}.sock"

    @property
    def control_socket(self) -> str:
        return str(self.state / "metaproxy" / "control.sock")

    @property
    def namespace_dir(self) -> Path:
        return self.state / "metaproxy" / "namespaces.d"

    # -- the table -------------------------------------------------------------------------

    def add_port(self, variant: str, name: str, network: str, ip: str, mac: str) -> str:
        device = self.device(variant, name)
        self.table["ports"].append(
            {
                "id": f"port-{variant}-{name}",
                "network_id": network,
                "mac_address": mac,
                "fixed_ips": [ip],
                "device_id": device,
                "project_id": f"proj-{variant}-{name}",
                "device_owner": "compute:nova",
            }
        )
        user_data: dict[str, Any]
        if name.startswith("d"):
            # binary, gzipped user data: relayed byte-exact through haproxy too
            blob = gzip.compress(
                f"#cloud-config\nhostname: {variant}-{name}\n".encode() + bytes(range(256))
            )
            user_data = {"user_data_gzip_base64": base64.b64encode(blob).decode()}
        else:
            user_data = {"user_data": f"#!/bin/sh\necho {variant}-{name}\n"}
        self.table["instances"][device] = {
            "hostname": f"{variant}-{name}",
            "public_keys": {f"key-{name}": f"ssh-ed25519 AAAAC3Nza{variant}{name} {name}@e2e"},
            **user_data,
        }
        return device

    def write_table(self) -> None:
        self.table_path.write_text(json.dumps(self.table, indent=1))
        self.records = instances_from_table(self.table)

    # -- processes -------------------------------------------------------------------------

    def start_nova(self) -> None:
        self.nova, self.nova_port = start_fakenova(
            self.table_path, SECRET, self.topo.run_dir / "nova"
        )
        self.topo.adopt(self.nova.pid)

    def write_config(self, namespaces: list[str]) -> None:
        write_agent_config(
            self.config,
            state_path=self.state,
            nova_port=self.nova_port,
            secret=SECRET,
            table=self.table_path,
            namespaces=namespaces,
        )

    def start_agent(self) -> Process:
        """Start C{twistd metaproxy} as the integration tests do; wait for every socket."""
        self.agent_runs += 1
        self.agent = start_agent(
            [self.config],
            self.topo.run_dir / f"agent{self.agent_runs}",
            wait_socket=self.shared_socket,
        )
        self.topo.adopt(self.agent.pid)
        for namespace in self.site("own").namespaces:
            wait_for_socket(str(self.ns_socket(namespace)), 20, self.agent)
        return self.agent

    def stop_agent(self) -> None:
        if self.agent is not None:
            self.agent.stop()

    def ctl(self, action: str, *namespaces: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "metaproxy.cli",
                "ctl",
                "--control-socket",
                self.control_socket,
                action,
                *namespaces,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=str(REPO),
        )

    def nova_control(self, what: str, method: str = "GET") -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.nova_port}/_fakenova/{what}",
            method=method,
            headers={"X-Fakenova-Control": "1"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read() or b"null")

    # -- instances ------------------------------------------------------------------------

    def site(self, variant: str) -> Site:
        return self.sites[variant]

    def client(
        self,
        instance: Instance,
        base: str = V4,
        *,
        first: int | None = None,
        paths: list[str] | None = None,
        headers: list[tuple[str, str]] = (),
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Run L{bench.load.nsclient} inside C{instance}'s namespace; its report."""
        argv = [
            sys.executable,
            "-m",
            "bench.load.nsclient",
            "--base",
            base,
            "--timeout",
            str(timeout),
        ]
        if first is not None:
            argv += ["--first", str(first)]
        for path in paths or ():
            argv += ["--path", path]
        for name, value in headers:
            argv += ["--header", f"{name}:{value}"]
        done = self.topo.exec(instance, argv, check=False, timeout=300, cwd=REPO)
        return self.parse_report(instance, done.stdout, done.stderr)

    def clients(self, calls: list[tuple[Instance, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Run several L{client} calls at once (one thread each); their reports in order."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(calls)) as pool:
            futures = [pool.submit(self.client, instance, **kwargs) for instance, kwargs in calls]
            return [future.result() for future in futures]

    @staticmethod
    def parse_report(instance: Instance, stdout: bytes, stderr: bytes = b"") -> dict[str, Any]:
        """L{bench.load.nsclient}'s JSON line, bodies decoded."""
        try:
            report = json.loads(stdout)
        except ValueError:
            raise AssertionError(
                f"nsclient in {instance.name} printed no report: "
                f"{stdout[-500:]!r} {stderr.decode()[-2000:]}"
            ) from None
        for answer in report["requests"]:
            answer["body"] = base64.b64decode(answer["body"])
        return report

    def record(self, instance: Instance | str) -> novatree.InstanceRecord:
        device = self.device_of[str(instance)] if isinstance(instance, Instance) else instance
        return self.records[device]

    def expected(
        self, instance: Instance | str, path: str, address: str | None = None
    ) -> tuple[int, bytes]:
        status, _type, body = novatree.lookup(self.record(instance), path, address=address)
        return status, body

    def assert_own(
        self, instance: Instance, report: dict[str, Any], *, count: int | None = None
    ) -> None:
        """Every answer in C{report} is exactly what Nova serves C{instance}."""
        assert report["error"] is None, (instance.name, report["error"])
        if count is not None:
            assert len(report["requests"]) == count, [a["path"] for a in report["requests"]]
        for answer in report["requests"]:
            status, body = self.expected(instance, answer["path"], answer["source"])
            assert (answer["status"], answer["body"]) == (status, body), (
                instance.name,
                answer["path"],
                answer["status"],
                answer["body"][:300],
            )

    def others(self, instance: Instance | str) -> list[str]:
        """Every other instance's device id (ghosts included)."""
        mine = self.device_of[str(instance)] if isinstance(instance, Instance) else instance
        return [device for device in self.records if device != mine]


#: Paths whose answers say which instance they are about.
IDENTITY_PATHS = [
    "/openstack/2018-08-27/meta_data.json",
    "/latest/meta-data/instance-id",
    "/latest/meta-data/hostname",
    "/openstack/2018-08-27/user_data",
]
#: The whole boot sequence for these instances: 2 probes, 5 OpenStack files, 21 EC2.
BOOT_REQUESTS = 28


def _build(e2e: E2E) -> None:
    topo = e2e.topo
    for vi, variant in enumerate(VARIANTS):
        n = lambda key: e2e.net(variant, key)  # noqa: E731
        routers = {
            "r1": topo.add_router(n("r1"), {n("a1"): "10.0.0.1/24", n("a2"): "10.0.1.1/24"}),
            "r2": topo.add_router(n("r2"), {n("b"): "10.0.0.1/24"}),
        }
        dhcp = topo.add_dhcp(n("d"), "10.0.0.2/24")
        ovn = topo.add_ovn(n("o"), "10.0.0.2/24")
        parents = {**routers, "d": dhcp, "o": ovn}
        e2e.table["routers"][n("r1")] = [n("a1"), n("a2")]
        e2e.table["routers"][n("r2")] = [n("b")]
        instances = {}
        for name, (parent, network, ip, last) in INSTANCES.items():
            mac = f"fa:16:3e:e2:{vi:02x}:{last:02x}"
            instance = topo.add_instance(
                f"{variant}-{name}", (parents[parent], n(network)), ip, mac
            )
            e2e.device_of[instance.namespace] = e2e.add_port(variant, name, n(network), ip, mac)
            instances[name] = instance
        for name, (network, ip, last) in GHOSTS.items():
            e2e.add_port(variant, name, n(network), ip, f"fa:16:3e:e2:{vi:02x}:{last:02x}")
        e2e.sites[variant] = Site(variant, routers, dhcp, ovn, instances)
    # a router and an OVN network for the add/remove test: in the table from the start,
    # their namespaces built by the test
    e2e.table["routers"][e2e.net("dyn", "r3")] = [e2e.net("dyn", "c")]
    e2e.add_port("dyn", "c", e2e.net("dyn", "c"), "10.0.0.5", "fa:16:3e:e2:0f:01")
    e2e.add_port("dyn", "p", e2e.net("dyn", "p"), "10.0.0.5", "fa:16:3e:e2:0f:02")
    e2e.write_table()

    e2e.start_nova()
    e2e.write_config([ns.name for ns in e2e.site("own").namespaces])
    e2e.start_agent()
    for variant, site in e2e.sites.items():
        for namespace in site.namespaces:
            topo.start_haproxy(namespace, config_file=e2e.config, shared=variant == "shared")


_ENVIRONMENT_FIXTURES = {"e2e", "e2e_prerequisites", "agent_running"}
_checked: list[str | None] = []


def environment_missing() -> str | None:
    """The skip line, or None when this host can run the e2e tests (checked once)."""
    if not _checked:
        _checked.append(_prerequisites())
    return _checked[0]


def pytest_runtest_setup(item) -> None:
    """Skip every test that needs the environment, with the one line that says what is
    missing. Raised here, not in a fixture (pytest reports a fixture's skip at each test's
    own line), so pytest's summary folds them all into that one line."""
    if _ENVIRONMENT_FIXTURES & set(getattr(item, "fixturenames", ())):
        reason = environment_missing()
        if reason:
            pytest.skip(reason)


@pytest.fixture(scope="session")
def e2e_prerequisites() -> bool:
    """Whether this host can run the e2e tests; tests that need it skip if not."""
    return environment_missing() is None


@pytest.fixture(scope="package")
def e2e(e2e_prerequisites, request) -> E2E | None:
    """The e2e tests' topology, fake Nova and agent; always torn down, even on SIGTERM.

    Package-scoped: torn down after the last test of tests/e2e, so that its ``ovnmeta-``
    namespaces are gone before a later directory's OVN sandbox starts (a chassis agent
    there removes every ``ovnmeta-`` namespace it does not need, and the sandbox refuses
    to start beside namespaces that are not its own).

    None when the host cannot run them: every test using it is skipped before it runs.
    """
    if not e2e_prerequisites:
        return None
    topo = Topology()
    request.addfinalizer(topo.cleanup)
    env = E2E(topo)

    def stop() -> None:
        env.stop_agent()
        if env.nova is not None:
            env.nova.stop()

    request.addfinalizer(stop)

    # Ctrl-C or SIGTERM (a CI job cancelled, say): remove everything at once, then let
    # pytest stop after the current test; a second signal interrupts at once. Otherwise
    # SIGTERM would kill pytest without its finalizers or only stop the reactor
    # (pytest-twisted runs one), and Ctrl-C inside a test is lost under pytest-twisted.
    # The reactor installs its handlers when it starts, with the first test: ours go in
    # now and again once the reactor runs.
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.getsignal(signum) for signum in signals}
    received: list[int] = []

    def interrupted(signum, frame):
        received.append(signum)
        if len(received) > 1:
            raise KeyboardInterrupt
        request.session.shouldstop = (
            f"e2e: {signal.Signals(signum).name}: topology removed, stopping"
        )
        stop()
        topo.cleanup()

    def install() -> None:
        if not topo.cleaned:
            for signum in signals:
                signal.signal(signum, interrupted)

    install()
    from twisted.internet import reactor

    reactor.callWhenRunning(install)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    request.addfinalizer(restore)
    _build(env)
    return env


@pytest.fixture
def agent_running(e2e: E2E):
    """Make sure the agent runs again after the test, whatever the test did to it."""
    yield e2e
    if not e2e.topo.cleaned and (e2e.agent is None or not e2e.agent.alive()):
        e2e.start_agent()


@pytest.fixture(params=VARIANTS)
def variant(request) -> str:
    return request.param


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
