"""The topology builder itself: what is missing is said in one line, and nothing is left
behind, whether a test fails, or its process dies without cleaning up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.load import netns_host
from bench.load.netns import Topology, eui64_link_local
from bench.load.netns_host import RUN_DIR_PREFIX, cleanup_leftovers
from tests.e2e.conftest import REPO, _prerequisites, wait_until


def _namespaces():
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def test_skip_line_says_exactly_what_is_missing(monkeypatch):
    monkeypatch.setattr(netns_host.os, "geteuid", lambda: 0)
    monkeypatch.setattr(
        netns_host.shutil,
        "which",
        lambda tool: None if tool in ("haproxy", "iptables") else "/bin/" + tool,
    )
    assert _prerequisites() == (
        "e2e: needs root and ip, haproxy, iptables: missing haproxy, iptables"
    )
    monkeypatch.setattr(netns_host.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(netns_host.shutil, "which", lambda tool: "/bin/" + tool)
    assert _prerequisites() == (
        "e2e: needs root and ip, haproxy, iptables: missing root (running as uid 1000)"
    )


def test_eui64_link_local():
    assert eui64_link_local("fa:16:3e:11:22:33") == "fe80::f816:3eff:fe11:2233"
    assert eui64_link_local("00:00:00:00:00:99") == "fe80::200:ff:fe00:99"


def test_cleanup_after_a_failure_removes_everything(e2e_prerequisites):
    with pytest.raises(RuntimeError, match="the test failed"):
        with Topology(clean_leftovers=False) as topo:
            router = topo.add_router(topo.id("r"), {topo.id("n"): "10.0.0.1/24"})
            vm = topo.add_instance("vm", (router, topo.id("n")), "10.0.0.5", "fa:16:3e:00:00:01")
            proxy = topo.start_haproxy(router, config_file=None, socket="/tmp/mpe2e-none.sock")
            names = {router.name, vm.namespace}
            assert names <= _namespaces()
            assert os.path.exists(f"/proc/{proxy.pid}")
            raise RuntimeError("the test failed")
    assert not names & _namespaces()
    assert not topo.run_dir.exists()
    assert wait_until(lambda: not os.path.exists(f"/proc/{proxy.pid}"), 5)


_ORPHAN = """
import sys, time
from bench.load.netns import Topology
topo = Topology(clean_leftovers=False)
router = topo.add_router(topo.id("r"), {topo.id("n"): "10.0.0.1/24"})
dhcp = topo.add_dhcp(topo.id("d"), "10.0.1.2/24")
vm = topo.add_instance("vm", (router, topo.id("n")), "10.0.0.5", "fa:16:3e:00:00:01")
proxy = topo.start_haproxy(router, config_file=None, socket="/tmp/mpe2e-none.sock")
sleeper = topo.popen(vm, ["sleep", "300"])
print(topo.run_dir, proxy.pid, sleeper.pid, router.name, dhcp.name, vm.namespace, flush=True)
time.sleep(300)
"""


def test_leftovers_of_a_killed_run_are_removed_and_live_runs_kept(e2e):
    """A run killed with SIGKILL leaves namespaces, haproxy and processes behind; the
    next topology removes them. A topology whose owner lives (this session's) stays."""
    orphan = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN], stdout=subprocess.PIPE, cwd=str(REPO), text=True
    )
    try:
        run_dir, haproxy_pid, sleeper_pid, *names = orphan.stdout.readline().split()
    finally:
        orphan.send_signal(signal.SIGKILL)
        orphan.wait()
    haproxy_pid, sleeper_pid = int(haproxy_pid), int(sleeper_pid)
    assert set(names) <= _namespaces()
    assert Path(run_dir).exists() and run_dir.startswith(RUN_DIR_PREFIX)
    assert os.path.exists(f"/proc/{haproxy_pid}") and os.path.exists(f"/proc/{sleeper_pid}")

    removed = cleanup_leftovers()
    assert set(names) <= set(removed)
    assert not set(names) & _namespaces()
    assert not Path(run_dir).exists()
    assert wait_until(lambda: not os.path.exists(f"/proc/{haproxy_pid}"), 5)
    # the sleeper was `ip netns exec`'s child, reparented when the orphan died: gone too
    assert wait_until(lambda: not os.path.exists(f"/proc/{sleeper_pid}") or _zombie(sleeper_pid), 5)

    # this session's topology has a live owner: untouched
    live = set(e2e.topo.namespaces)
    assert live and live <= _namespaces()
    assert e2e.topo.run_dir.exists()
    report = e2e.client(e2e.site("own").instances["a1"], paths=["/openstack"])
    assert [a["status"] for a in report["requests"]] == [200]


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_names_are_unique_and_short(e2e):
    topo = e2e.topo
    assert topo.tag.startswith("e2e") and len(topo.tag) == 11
    for namespace in topo.namespaces.values():
        assert topo.tag[3:] in namespace.name
        for port in namespace.ports.values():
            assert len(port.ifname) <= 15
    for variant in ("shared", "own"):
        for namespace in e2e.site(variant).namespaces:
            assert len(str(e2e.ns_socket(namespace)).encode()) <= 97
    assert len(e2e.shared_socket.encode()) <= 97
    other = Topology(clean_leftovers=False)
    try:
        assert other.tag != topo.tag and other.id("r1") != topo.id("r1")
    finally:
        other.cleanup()
