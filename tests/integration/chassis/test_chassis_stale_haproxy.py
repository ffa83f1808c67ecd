"""A haproxy the previous metadata agent left in an ovnmeta- namespace (Neutron's own
configuration, its pid file where upstream keeps it) holds 169.254.169.254:80: the
listening finds the address taken, then the chassis mode's serving stops that haproxy
(its pid file, verified against /proc) and listens there itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

from metaproxy.chassis.leftovers import HaproxyLeftovers, process_cmdline
from metaproxy.chassis.plan import NetworkPlan
from metaproxy.chassis.serving import NamespaceServing
from metaproxy.http.listeners import Listeners
from metaproxy.http.sockets import AddressInUse
from metaproxy.namespace import Namespace, NamespaceKind
from metaproxy.neutron.haproxy import render_haproxy_config

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, port 80)"),
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs ip"),
]


@pytest.fixture
def stale(tmp_path):
    """ovnmeta-<net> with 169.254.169.254 on lo, and a daemonised haproxy in it started
    as upstream's driver starts it: haproxy -f <state>/ovn-metadata-proxy/<net>.conf."""
    network = str(uuid.uuid4())
    name = f"ovnmeta-{network}"
    pids = tmp_path / "external" / "pids"
    pids.mkdir(parents=True)
    pid_file = pids / f"{network}.pid.haproxy"
    conf_dir = tmp_path / "ovn-metadata-proxy"
    conf_dir.mkdir()
    conf = conf_dir / f"{network}.conf"
    conf.write_text(
        render_haproxy_config(
            Namespace(NamespaceKind.OVN, network),
            str(tmp_path / "metadata_proxy"),
            "root",
            "root",
            str(pid_file),
        )
    )
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        ns = ["ip", "netns", "exec", name]
        subprocess.run(ns + ["ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(ns + ["ip", "addr", "add", "169.254.169.254/32", "dev", "lo"], check=True)
        subprocess.run(ns + ["haproxy", "-D", "-f", str(conf)], check=True, timeout=30)
        began = time.monotonic()
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() - began < 10, "haproxy wrote no pid file"
            time.sleep(0.05)
        yield network, tmp_path, int(pid_file.read_text())
    finally:
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), 9)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "delete", name], check=False)


def plan(network: str) -> NetworkPlan:
    return NetworkPlan(network, "md", "fa:16:3e:00:00:02", 0, frozenset({"169.254.169.254/32"}))


@pytest_twisted.ensureDeferred
async def test_the_old_agents_haproxy_is_stopped_and_the_namespace_served(stale) -> None:
    network, state, pid = stale
    assert "haproxy" in os.path.basename(process_cmdline(pid)[0])
    factory = Factory.forProtocol(Protocol)
    listeners = Listeners(
        reactor,
        shared_socket=None,
        socket_dir=str(state),
        mode=0o600,
        backlog=16,
        factory_for=lambda ns: factory,
        peer_factory_for=lambda ns: factory,
    )
    try:
        # without the leftovers cleared, the address is taken: said, counted, raised
        plain = NamespaceServing(listeners)
        with pytest.raises(AddressInUse, match="another process listens there"):
            await plain.provisioned(plan(network))
        assert plain.address_in_use == 1

        leftovers = HaproxyLeftovers(reactor, str(state / "external" / "pids"))
        serving = NamespaceServing(listeners, leftovers=leftovers)
        await serving.provisioned(plan(network))
        assert leftovers.stopped == 1
        assert process_cmdline(pid) == []  # gone (or a zombie)
        assert not (state / "external" / "pids" / f"{network}.pid.haproxy").exists()
        assert serving.networks == frozenset({network})
        ss = subprocess.run(
            ["ip", "netns", "exec", f"ovnmeta-{network}", "ss", "-ltnH", "sport", "= :80"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "169.254.169.254:80" in ss.stdout
        await serving.stop()
    finally:
        await listeners.stop()
