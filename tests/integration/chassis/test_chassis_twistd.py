"""twistd metaproxy as the sandbox chassis's OVN metadata agent, started with a
neutron_ovn_metadata_agent.ini as an operator's is (upstream's option names only, no
[metaproxy] line): instances on two networks with the same IP boot through OVN's flows
with cloud-init's sequence and get their own metadata; a guest's identity headers
change nothing; the first instance bound provisions its network, the last one removed
tears it down; Chassis_Private carries the agent's keys while it runs; a restart serves
every network again.

metaproxy owns every ovnmeta- namespace of the host it runs on. So that it only sees the
sandbox's, it runs in a mount namespace of its own with a private /run/netns (a holder
process keeps that mount namespace across restarts, as the host's /run/netns would);
the instances and the sandbox's OVS stay in the host's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bench.processes import Process, start_fakenova, wait_for_log
from tests.integration.chassis.conftest import needs_ovn

pytestmark = [needs_ovn, pytest.mark.slow]

SECRET = "chassis-twistd-secret"
REPO = Path(__file__).resolve().parents[3]

#: cloud-init's requests (bench.load.cloudinit), made inside the instance
BOOT = """
import json, sys, urllib.error, urllib.request
from bench.load.cloudinit import boot_sequence
headers = dict(h.split(": ", 1) for h in sys.argv[1:])
sequence = boot_sequence()
path, asked = next(sequence), 0
try:
    while True:
        request = urllib.request.Request("http://169.254.169.254" + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                status, body = answer.status, answer.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        asked += 1
        path = sequence.send((status, body))
except StopIteration as done:
    tree = done.value
print(json.dumps({"asked": asked, "meta_data": json.loads(tree["meta_data.json"])}))
"""


class MountNamespace:
    """A holder process in a new mount namespace with a tmpfs on /run/netns."""

    def __init__(self) -> None:
        os.makedirs("/run/netns", exist_ok=True)
        self.holder = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount -t tmpfs tmpfs /run/netns && echo ready && exec sleep 3600",
            ],
            stdout=subprocess.PIPE,
        )
        assert self.holder.stdout.readline().strip() == b"ready"

    def run(self, *argv: str) -> str:
        return subprocess.run(
            ["nsenter", "-t", str(self.holder.pid), "-m", *argv],
            capture_output=True,
            text=True,
        ).stdout

    def namespaces(self) -> set[str]:
        return set(self.run("ls", "/run/netns").split())

    def listening(self, namespace: str) -> str:
        return self.run("ip", "netns", "exec", namespace, "ss", "-Hltn")

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()


def start_metaproxy(mounts: MountNamespace, config: Path, run_dir: Path) -> Process:
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "metaproxy.log"
    twistd = str(Path(sys.executable).with_name("twistd"))
    argv = ["nsenter", "-t", str(mounts.holder.pid), "-m", twistd, "--nodaemon", "--pidfile="]
    argv += [f"--logfile={log_path}", "metaproxy", "--config-file", str(config)]
    with open(run_dir / "stderr", "ab") as err:
        popen = subprocess.Popen(argv, stdout=err, stderr=subprocess.STDOUT, cwd=str(run_dir))
    return Process(popen, log_path, "metaproxy")


def until(predicate, what: str, timeout: float = 30.0, step: float = 0.02) -> float:
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(step)
    return time.monotonic() - began


def boot(cloud, vm, *headers: str) -> dict:
    done = cloud.exec(vm, [sys.executable, "-c", BOOT, *headers], check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return json.loads(done.stdout)


def answers(cloud, vm) -> bool:
    done = cloud.probe(
        vm, "get", "http://169.254.169.254/openstack/latest/meta_data.json", check=False
    )
    return done.stdout.startswith(b"200\n")


def port_row(port, net) -> dict:
    return {
        "id": port.id,
        "network_id": net.id,
        "mac_address": port.mac,
        "fixed_ips": [port.ip],
        "device_id": port.device_id,
        "project_id": port.project_id,
        "device_owner": "compute:nova",
    }


@pytest.fixture
def mounts():
    namespace = MountNamespace()
    yield namespace
    namespace.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_twistd_metaproxy_is_the_chassis_metadata_agent(sandbox, cloud, mounts, workers):
    tmp_path = Path(tempfile.mkdtemp(prefix="mpc-", dir="/tmp"))  # short socket paths
    net_a = cloud.add_network("10.40.0.0/24")
    net_b = cloud.add_network("10.40.0.0/24")  # another tenant's, same addresses
    port_a, port_b = cloud.add_port(net_a), cloud.add_port(net_b)
    assert port_a.ip == port_b.ip
    table = tmp_path / "ports.json"
    table.write_text(json.dumps({"ports": [port_row(port_a, net_a), port_row(port_b, net_b)]}))
    nova, nova_port = start_fakenova(table, SECRET, tmp_path / "nova")
    config = tmp_path / "neutron_ovn_metadata_agent.ini"
    config.write_text(
        "[DEFAULT]\n"
        f"state_path = {tmp_path / 'state'}\n"
        "nova_metadata_host = 127.0.0.1\n"
        f"nova_metadata_port = {nova_port}\n"
        f"metadata_proxy_shared_secret = {SECRET}\n"
        f"metadata_workers = {workers}\n"
        "[ovs]\n"
        f"ovsdb_connection = {sandbox.remote('ovs')}\n"
        "[ovn]\n"
        f"ovn_sb_connection = {sandbox.remote('sb', 'tcp')}\n"
    )
    agent = start_metaproxy(mounts, config, tmp_path / "agent")
    try:
        wait_for_log(agent, "Registered as the OVN metadata agent of chassis")
        assert not {f"ovnmeta-{net_a.id}", f"ovnmeta-{net_b.id}"} & mounts.namespaces()

        # the first instance bound on a network provisions it
        vm_a = cloud.plug(port_a)
        cloud.wait_bound(vm_a)
        bound = time.monotonic()
        until(lambda: answers(cloud, vm_a), "vm_a answered")
        first_answer = time.monotonic() - bound
        print(f"\n[workers={workers}] port bound -> first answer: {first_answer * 1000:.0f} ms")
        assert "169.254.169.254:80" in mounts.listening(f"ovnmeta-{net_a.id}")
        vm_b = cloud.plug(port_b)
        cloud.wait_bound(vm_b)
        until(lambda: answers(cloud, vm_b), "vm_b answered")

        # cloud-init's sequence, each its own instance's data though the IPs are equal
        for vm in (vm_a, vm_b):
            booted = boot(cloud, vm)
            assert booted["meta_data"]["uuid"] == vm.port.device_id
            assert booted["asked"] > 10
        # a guest's identity headers name the other instance: nothing changes
        spoofed = boot(cloud, vm_a, f"X-OVN-Network-ID: {net_b.id}", "X-Forwarded-For: 10.40.0.99")
        assert spoofed["meta_data"]["uuid"] == vm_a.port.device_id

        # Chassis_Private has the agent's keys while it runs
        (row,) = sandbox.sb_select("Chassis_Private", [["name", "==", sandbox.chassis]])
        keys = row["external_ids"]
        assert {"neutron:ovn-metadata-id", "neutron:ovn-metadata-sb-cfg"} <= set(keys)
        assert keys["neutron:ovn-bridge"] == sandbox.bridge

        # the last instance removed tears its network down; the other stays
        cloud.remove_instance(vm_b)
        until(lambda: f"ovnmeta-{net_b.id}" not in mounts.namespaces(), "net_b torn down")
        assert f"ovnmeta-{net_a.id}" in mounts.namespaces()

        # restarted: every network served again
        assert agent.stop() == 0
        agent = start_metaproxy(mounts, config, tmp_path / "agent")
        started = time.monotonic()
        until(lambda: answers(cloud, vm_a), "vm_a answered after the restart")
        print(
            f"[workers={workers}] start -> every network serving: "
            f"{(time.monotonic() - started) * 1000:.0f} ms"
        )
        assert boot(cloud, vm_a)["meta_data"]["uuid"] == vm_a.port.device_id
        assert "Traceback" not in agent.log()
    finally:
        agent.stop()
        nova.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)
