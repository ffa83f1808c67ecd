"""No haproxy: an instance's request to 169.254.169.254 crosses OVN to its network's
namespace, where the service's listeners listen on a socket opened inside it
(Listeners.add_tcp), and is answered by the pipeline with the instance found in the
real Southbound."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from bench.ovnsandbox.daemons import SandboxError
from metaproxy.chassis.mode import ChassisMode
from metaproxy.http.listeners import Listeners
from metaproxy.http.server import Limits, MetadataFactory
from metaproxy.nova.connection import NovaResponse
from metaproxy.ops.metrics import RequestStats
from metaproxy.ovsdb.remote import parse_remotes
from metaproxy.pipeline import Pipeline
from metaproxy.resolve.ovn import OvnBackend
from metaproxy.resolve.resolver import InstanceResolver
from metaproxy.signing import sign_instance_id
from tests.integration.chassis.conftest import needs_ovn, until

pytestmark = [needs_ovn, pytest.mark.slow]

SECRET = b"chassis-secret"


class EchoNova:
    """Nova answering with the headers it was sent (what the agent signed)."""

    def __init__(self):
        self.sent = []

    def forward(self, method, target, headers, body):
        self.sent.append(dict(headers))
        payload = {k.decode(): v.decode() for k, v in headers}
        payload["path"] = target.decode()
        return succeed(NovaResponse(200, b"OK", (), json.dumps(payload).encode()))


class Node:
    """metaproxy as the sandbox chassis's metadata agent, in this process (ChassisMode
    with the real pipeline, its OVN lookups on the sandbox's Southbound)."""

    def __init__(self, sandbox):
        sb = parse_remotes(sandbox.remote("sb", "tcp"))
        self.backend = OvnBackend(reactor, sb, timeout=10, probe_interval=0)
        self.nova = EchoNova()
        self.pipeline = Pipeline(InstanceResolver(self.backend), self.nova, SECRET)
        limits = Limits()
        self.stats = RequestStats()
        self.tcp_listeners = Listeners(
            reactor,
            shared_socket=None,
            socket_dir=str(sandbox.run_dir),
            mode=0o666,
            backlog=128,
            factory_for=lambda namespace: MetadataFactory(
                self.pipeline, namespace, limits, reactor, stats=self.stats
            ),
            peer_factory_for=lambda namespace: MetadataFactory(
                self.pipeline, namespace, limits, reactor, stats=self.stats, peer=True
            ),
        )
        self.mode = ChassisMode(
            reactor,
            self.tcp_listeners,
            ovs_remotes=parse_remotes(sandbox.remote("ovs")),
            sb_remotes=sb,
            ovs_timeout=10,
            sb_timeout=10,
            probe_interval=0,
            retry_max_interval=1,
            namespace_prefix=f"ovnmeta-{sandbox.tag}",
        )
        self.agent = self.mode.agent
        self.provisioner = self.mode.provisioner
        self.listeners = self.mode.serving
        self.backend.start()
        self.mode.start()

    async def stop(self):
        await self.mode.stop()
        await self.tcp_listeners.stop()
        await self.backend.stop()


def listening(namespace: str | None) -> str:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    return subprocess.run([*prefix, "ss", "-Hltn"], capture_output=True, text=True).stdout


def tentative(namespace: str) -> str:
    return subprocess.run(
        ["ip", "-n", namespace, "-6", "addr", "show", "tentative"], capture_output=True, text=True
    ).stdout.strip()


def get(cloud, vm, *headers: str) -> tuple[int, dict]:
    args = ["get", "http://169.254.169.254/openstack/latest/meta_data.json"]
    done = cloud.probe(vm, *args, *headers)
    status, _, body = done.stdout.decode().partition("\n")
    return int(status), (json.loads(body) if body.startswith("{") else {"raw": body})


@pytest_twisted.ensureDeferred
async def test_an_instance_is_answered_through_ovn_by_the_in_namespace_listener(
    sandbox, cloud
) -> None:
    net = cloud.add_network("10.10.0.0/24")
    node = Node(sandbox)
    try:
        vm = cloud.add_instance(net)
        cloud.wait_bound(vm)
        bound = time.monotonic()
        await until(lambda: node.listeners.listening(net.id))
        print(
            f"port bound -> listening in the namespace: {(time.monotonic() - bound) * 1000:.0f} ms"
        )
        # the socket listens inside the namespace, not in the host's
        assert "169.254.169.254:80" in listening(f"ovnmeta-{net.id}")
        assert "169.254.169.254:80" not in listening(None)
        await until(lambda: node.backend.ready())
        sandbox.sync()

        status, answer = await deferToThread(get, cloud, vm)
        assert status == 200, answer
        assert answer["X-Forwarded-For"] == vm.ip  # the TCP peer
        assert answer["X-Instance-ID"] == vm.port.device_id
        assert answer["X-Tenant-ID"] == vm.port.project_id
        assert answer["X-Instance-ID-Signature"] == sign_instance_id(SECRET, vm.port.device_id)
        assert answer["path"] == "/openstack/latest/meta_data.json"
        assert node.stats.guest_headers == {}
    finally:
        await node.stop()


@pytest_twisted.ensureDeferred
async def test_guest_headers_are_ignored_and_counted(sandbox, cloud) -> None:
    net = cloud.add_network("10.11.0.0/24")
    other = cloud.add_network("10.12.0.0/24")
    node = Node(sandbox)
    try:
        vm = cloud.add_instance(net)
        victim = cloud.add_instance(other)  # another tenant's instance on another network
        cloud.wait_bound(vm)
        cloud.wait_bound(victim)
        await until(lambda: node.listeners.listening(net.id) and node.backend.ready())
        sandbox.sync()
        status, answer = await deferToThread(
            get,
            cloud,
            vm,
            f"X-Forwarded-For: {victim.ip}",
            f"X-OVN-Network-ID: {other.id}",
        )
        assert status == 200, answer
        assert answer["X-Instance-ID"] == vm.port.device_id  # still the caller, not the victim
        assert answer["X-Forwarded-For"] == vm.ip
        assert node.stats.guest_headers == {"X-Forwarded-For": 1, "X-OVN-Network-ID": 1}
    finally:
        await node.stop()


@pytest_twisted.ensureDeferred
async def test_the_listener_goes_before_the_namespace(sandbox, cloud) -> None:
    net = cloud.add_network("10.13.0.0/24")
    node = Node(sandbox)
    try:
        vm = cloud.add_instance(net)
        cloud.wait_bound(vm)
        await until(lambda: node.listeners.listening(net.id))
        cloud.remove_instance(vm)
        await until(lambda: not node.listeners.listening(net.id))
        await until(lambda: net.id not in node.provisioner.provisioned)
    finally:
        await node.stop()


@pytest_twisted.ensureDeferred
async def test_an_ipv6_instance_is_answered_on_fe80_a9fe_a9fe_and_found_by_its_mac(
    sandbox, cloud
) -> None:
    net = cloud.add_network("10.16.0.0/24", cidr6="fd00:16::/64")
    node = Node(sandbox)
    try:
        vm = cloud.add_instance(net)
        cloud.wait_bound(vm)
        await until(lambda: len(node.listeners.listening(net.id)) == 2)
        await until(lambda: node.backend.ready())
        sandbox.sync()
        # the instance's link-local address out of duplicate address detection first, as a
        # booting guest's is before it asks (a connection from a tentative address hangs);
        # the namespace's fe80::a9fe:a9fe may still be tentative: the socket is bound
        # with IPV6_FREEBIND and answers once the address is usable
        await until(lambda: not tentative(vm.namespace))
        done = await deferToThread(
            cloud.probe, vm, "get6", "fe80::a9fe:a9fe%eth0", "/openstack/latest/meta_data.json"
        )
        status, _, body = done.stdout.decode().partition("\n")
        assert status == "200", body
        answer = json.loads(body)
        assert answer["X-Instance-ID"] == vm.port.device_id
        assert answer["X-Forwarded-For"].startswith("fe80::")  # its link-local address
    finally:
        await node.stop()


@pytest_twisted.ensureDeferred
async def test_a_restart_keeps_the_namespace_as_it_is_and_serves_it_again(sandbox, cloud) -> None:
    net = cloud.add_network("10.17.0.0/24")
    vm = cloud.add_instance(net)
    cloud.wait_bound(vm)
    node = Node(sandbox)
    try:
        await until(lambda: node.listeners.listening(net.id))
    finally:
        await node.stop()
    namespace = f"ovnmeta-{net.id}"
    before = link_index(namespace, f"tap{net.id[:10]}1")
    node = Node(sandbox)
    try:
        await until(lambda: node.listeners.listening(net.id) and node.backend.ready())
        assert link_index(namespace, f"tap{net.id[:10]}1") == before  # not made again
        status, answer = await deferToThread(get, cloud, vm)
        assert status == 200 and answer["X-Instance-ID"] == vm.port.device_id
    finally:
        await node.stop()


def link_index(namespace: str, link: str) -> str:
    out = subprocess.run(
        ["ip", "-n", namespace, "-o", "link", "show", "dev", link],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split(":", 1)[0]


@pytest_twisted.ensureDeferred
async def test_a_namespace_deleted_by_hand_is_made_and_served_again(sandbox, cloud) -> None:
    net = cloud.add_network("10.19.0.0/24")
    vm = cloud.add_instance(net)
    cloud.wait_bound(vm)
    node = Node(sandbox)
    try:
        await until(lambda: node.listeners.listening(net.id) and node.backend.ready())
        subprocess.run(["ip", "netns", "delete", f"ovnmeta-{net.id}"], check=True)
        other = cloud.add_instance(net)  # the next change brings a pass
        cloud.wait_bound(other)
        await until(
            lambda: subprocess.run(["test", "-e", f"/run/netns/ovnmeta-{net.id}"]).returncode == 0
        )
        await until(lambda: node.listeners.listening(net.id))
        await node.provisioner.idle()
        sandbox.sync()
        # the new veth is a new device for the userspace datapath: the first tries may
        # find it not forwarding yet, as a booting instance's first try might (cloud-init
        # tries again)
        for attempt in range(3):
            try:
                status, answer = await deferToThread(get, cloud, vm)
                break
            except SandboxError:
                if attempt == 2:
                    raise
                await deferLater(reactor, 1.0, lambda: None)
        assert status == 200 and answer["X-Instance-ID"] == vm.port.device_id
    finally:
        await node.stop()
