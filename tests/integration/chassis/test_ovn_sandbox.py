"""The real-OVN sandbox itself: a chassis that binds ports and forwards between
instances, and a clean-up that leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from bench.ovnsandbox import OvnSandbox, SandboxError
from bench.ovnsandbox.daemons import link_exists, netns_list
from tests.integration.chassis.conftest import needs_ovn

pytestmark = [needs_ovn, pytest.mark.slow]


def test_chassis_registers_with_the_southbound(sandbox):
    [chassis] = sandbox.sb_select("Chassis", [["name", "==", sandbox.chassis]])
    assert chassis["hostname"] == sandbox.hostname
    [private] = sandbox.sb_select("Chassis_Private", [["name", "==", sandbox.chassis]])
    assert private["chassis"] == chassis["_uuid"]
    [bridge] = sandbox.ovs_select("Bridge", [["name", "==", "br-int"]])
    assert bridge["datapath_type"] == "netdev"


def test_port_is_bound_only_once_its_instance_is_plugged(sandbox, cloud):
    net = cloud.add_network("10.1.0.0/24")
    port = cloud.add_port(net)
    sandbox.sync()
    [row] = sandbox.sb_select("Port_Binding", [["logical_port", "==", port.id]])
    assert row["chassis"] == []  # requested here, but no interface yet
    assert row["mac"] == f"{port.mac} {port.ip}"

    cloud.plug(port)
    cloud.wait_bound(port)
    [row] = sandbox.sb_select("Port_Binding", [["logical_port", "==", port.id]])
    assert row["chassis"] == cloud.chassis_uuid()
    [metadata] = sandbox.sb_select("Port_Binding", [["logical_port", "==", net.metadata_port_id]])
    assert metadata["type"] == "localport"
    assert metadata["external_ids"]["neutron:device_id"] == f"ovnmeta-{net.id}"


def test_two_instances_on_one_network_reach_each_other(sandbox, cloud):
    net = cloud.add_network("10.2.0.0/24")
    a, b = cloud.add_instance(net), cloud.add_instance(net)
    cloud.wait_bound(a)
    cloud.wait_bound(b)
    sandbox.sync()

    assert b"reply from" in cloud.probe(a, "ping", b.ip).stdout
    server = cloud.probe_server(b, 7000)
    try:
        answer = cloud.probe(a, "connect", b.ip, "7000", "through ovn").stdout
    finally:
        server.wait(10)
    assert answer.strip() == b"THROUGH OVN"


def test_instances_on_two_networks_are_isolated(sandbox, cloud):
    one, two = cloud.add_network("10.3.0.0/24"), cloud.add_network("10.3.0.0/24")
    a, b = cloud.add_instance(one), cloud.add_instance(two)
    assert a.ip == b.ip  # same address on two networks: each instance pings the other's
    c = cloud.add_instance(two)
    for vm in (a, b, c):
        cloud.wait_bound(vm)
    sandbox.sync()
    assert cloud.probe(b, "ping", c.ip).returncode == 0
    assert cloud.probe(a, "ping", c.ip, "1", check=False).returncode == 1


def test_stop_leaves_nothing_behind(cloud):
    sandbox = cloud.sandbox
    net = cloud.add_network("10.4.0.0/24")
    vm = cloud.add_instance(net)
    cloud.wait_bound(vm)
    pids = [int(p.read_text().split()[0]) for p in (sandbox.run_dir / "pids").iterdir()]
    assert len(pids) == 6  # 3 ovsdb-servers, ovs-vswitchd, ovn-northd, ovn-controller

    sandbox.stop()

    assert vm.namespace not in netns_list()
    for link in (vm.root_link, "br-int", "ovs-netdev"):
        assert not link_exists(link), link
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), pid
    assert not sandbox.run_dir.exists()


def test_stop_goes_on_when_ovs_vswitchd_does_not_answer(sandbox):
    pids = [int(p.read_text().split()[0]) for p in (sandbox.run_dir / "pids").iterdir()]
    vswitchd = sandbox.pid("ovs-vswitchd")
    os.kill(vswitchd, signal.SIGSTOP)  # its "exit --cleanup" times out
    try:
        sandbox.stop()
    finally:
        if Path(f"/proc/{vswitchd}").exists():
            os.kill(vswitchd, signal.SIGCONT)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), pid
    assert not sandbox.run_dir.exists()


def test_a_dead_daemon_is_reported_as_the_sandboxs_failure(sandbox):
    pid = int((sandbox.run_dir / "ovn-controller.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(SandboxError, match="ovn-controller died"):
        for _ in range(200):
            sandbox.check_alive()
            subprocess.run(["sleep", "0.02"])
    sandbox.stop()  # the fixture's own check would fail the test otherwise


def test_leftovers_of_a_killed_owner_are_cleaned_by_the_next_sandbox(tmp_path):
    script = (
        "import os, signal\n"
        "from bench.ovnsandbox import Cloud, OvnSandbox\n"
        "box = OvnSandbox.start()\n"
        "cloud = Cloud(box)\n"
        "vm = cloud.add_instance(cloud.add_network('10.5.0.0/24'))\n"
        "print(box.run_dir, vm.namespace, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    repo = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [__import__("sys").executable, "-c", script], capture_output=True, cwd=repo, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    run_dir, namespace = done.stdout.decode().split()
    assert Path(run_dir).exists() and namespace in netns_list()

    with OvnSandbox.start() as box:
        assert not Path(run_dir).exists()
        assert namespace not in netns_list()
        box.check_alive()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
