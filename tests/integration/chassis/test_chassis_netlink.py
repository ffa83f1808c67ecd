"""The netlink edge on the real kernel (root): namespaces made and changed by threads
that enter them, with no process forked and the calling thread never moved."""

from __future__ import annotations

import os
import subprocess

import pytest

from metaproxy.chassis import netlink
from metaproxy.chassis.plan import veth_names
from metaproxy.chassis.steps import (
    AddAddress,
    ChecksumFill,
    CreateNamespace,
    CreateVeth,
    DeleteLink,
    DeleteNamespace,
    SetLink,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

#: as long as C{ovnmeta-} (observe() takes the network id after it), and no agent's
PREFIX = "mpnltst-"


@pytest.fixture
def names():
    network = f"{os.urandom(4).hex()}-test"
    outside, inside = veth_names(network)
    namespace = PREFIX + network
    yield namespace, outside, inside
    subprocess.run(["ip", "link", "del", outside], capture_output=True)
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def thread_namespace() -> str:
    return os.readlink("/proc/thread-self/ns/net")


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def test_a_namespace_is_made_and_changed_without_a_fork_or_moving_the_caller(names, monkeypatch):
    namespace, outside, inside = names
    home = thread_namespace()

    def no_fork(*args, **kwargs):
        raise AssertionError("a process was forked")

    # pyroute2 forks a child for IPRoute(netns=...) and netns.create: neither is used
    monkeypatch.setattr(os, "fork", no_fork)
    for step in (
        CreateNamespace(namespace),
        CreateVeth(outside, inside, namespace),
        SetLink(inside, namespace, mac="fa:16:3e:00:00:0a", mtu=1400),
        SetLink(outside, None, mtu=1400),
        AddAddress(namespace, inside, "10.9.0.2/24"),
        AddAddress(namespace, inside, "169.254.169.254/32"),
    ):
        netlink.apply_step(step)
        assert thread_namespace() == home
    monkeypatch.undo()

    assert namespace in ip("netns", "list")
    assert "UP" in ip("-n", namespace, "-o", "link", "show", "lo").split()[2].strip("<>:").split(
        ","
    )
    link = ip("-n", namespace, "-o", "link", "show", inside)
    assert "fa:16:3e:00:00:0a" in link and "mtu 1400" in link
    addresses = ip("-n", namespace, "-o", "addr", "show", inside)
    assert "10.9.0.2/24" in addresses and "169.254.169.254/32" in addresses

    # this test's namespace only (the prefix narrows the namespaces observed)
    state = netlink.observe([namespace.removeprefix(PREFIX)], prefix=namespace)
    assert thread_namespace() == home
    assert state.namespaces == frozenset({namespace})
    seen = state.inside[namespace]
    assert (seen.name, seen.mac, seen.mtu, seen.up) == (inside, "fa:16:3e:00:00:0a", 1400, True)
    assert {"10.9.0.2/24", "169.254.169.254/32"} <= seen.addresses


def test_the_checksum_rule_goes_in_the_namespace_once(names):
    namespace, _outside, _inside = names
    netlink.apply_step(CreateNamespace(namespace))
    netlink.apply_step(ChecksumFill(namespace))
    netlink.apply_step(ChecksumFill(namespace))
    inside = subprocess.run(
        ["ip", "netns", "exec", namespace, "iptables", "-t", "mangle", "-S", "POSTROUTING"],
        capture_output=True,
        text=True,
    ).stdout
    assert inside.count("--checksum-fill") == 1
    root = subprocess.run(
        ["iptables", "-t", "mangle", "-S", "POSTROUTING"], capture_output=True, text=True
    ).stdout
    assert f"{namespace}" not in root  # nothing was added to the root namespace's table


def test_a_failure_inside_a_namespace_is_reported_and_the_caller_stays_home(names):
    namespace, _outside, _inside = names
    home = thread_namespace()
    netlink.apply_step(CreateNamespace(namespace))
    with pytest.raises(netlink.NetlinkError, match="no link nosuchlink0 in"):
        netlink.apply_step(SetLink("nosuchlink0", namespace, mtu=1400))
    with pytest.raises(netlink.NetlinkError, match="FileNotFoundError"):
        netlink.apply_step(SetLink("lo", f"{namespace}-gone", mtu=1400))
    assert f"{namespace}-gone" not in ip("netns", "list")  # not made by asking for it
    assert thread_namespace() == home
    netlink.apply_step(DeleteNamespace(namespace))
    assert namespace not in ip("netns", "list")


def test_deleting_the_veth_removes_both_ends(names):
    namespace, outside, inside = names
    netlink.apply_step(CreateNamespace(namespace))
    netlink.apply_step(CreateVeth(outside, inside, namespace))
    netlink.apply_step(DeleteLink(outside))
    assert not os.path.exists(f"/sys/class/net/{outside}")
    assert inside not in ip("-n", namespace, "-o", "link")
