"""The boot storm's haproxy target: a small storm from instance namespaces through real
haproxy in router namespaces (Neutron's iptables redirect), to the real agent and the
fake Nova, with overlapping addresses; and its clean-up when interrupted.

These tests build their own topology (L{bench.load.nstarget}), not the session's; they skip
with the e2e tests' one line when the host lacks root, ip, iptables or haproxy.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest

from bench.load.fleet import boot_length, make_fleet
from bench.load.netns_host import RUN_DIR_PREFIX, netns_list
from bench.load.nstarget import start_haproxy_front
from bench.load.procstat import descendants
from bench.load.storm import StormConfig, run_storm
from bench.stack import start_stack
from tests.e2e.conftest import REPO

pytestmark = pytest.mark.usefixtures("e2e_prerequisites")


def _left(tag: str) -> list[str]:
    """The namespaces of the topology C{tag} (C{e2e<hex>}) that still exist."""
    hex_part = tag[len("e2e") :]
    return [n for n in netns_list() if tag in n or f"mpe2e-{hex_part}-" in n]


@pytest.mark.parametrize("via", ["shared", "namespaces"])
def test_small_storm_through_haproxy_in_namespaces(via):
    """20 instances over 3 routers: the k-th instance behind each router has the same
    address. Every boot completes with every answer its own; the agent only got the
    namespace and the address from haproxy (the target adds no header, and on the
    shared socket a request without the namespace header is refused)."""
    fleet = make_fleet(20, 3)
    assert len({i.ip for i in fleet.instances}) < 20  # overlapping addresses
    config = StormConfig(instances=20, routers=3, concurrency=10, workers=2, request_timeout=20.0)
    stack = start_stack(fleet)
    front = None
    try:
        front = start_haproxy_front(
            fleet, 20, agent_config=stack.agent_config, socket=via, adopt=stack.pids
        )
        tag = front.topology.tag
        assert len(front.plan.domains) == 3 and len(front.plan.sides) == 3
        # haproxy runs in each router namespace, configured for the fleet's router
        for domain, namespace in zip(
            front.plan.domains,
            [n for n in front.topology.namespaces.values() if n.kind == "router"],
            strict=False,
        ):
            assert namespace.haproxy is not None
            assert f"X-Neutron-Router-ID {domain.namespace.id}\n" in namespace.haproxy.config
            socket_line = (
                stack.shared_socket
                if via == "shared"
                else f"{stack.namespace_socket_dir}/{domain.namespace.name}.sock"
            )
            assert f"server metadata {socket_line}\n" in namespace.haproxy.config
        run_config = attrs.evolve(config, nova_url=stack.nova_url)
        result = run_storm(
            run_config, fleet, [stack.agent.pid], target=front.target, nova_pids=[stack.nova.pid]
        )
        assert stack.agent.alive()
    finally:
        if front is not None:
            front.stop()
        stack.stop()
        shutil.rmtree(stack.run_dir, ignore_errors=True)
    assert result.target == "haproxy"
    assert (
        "to the shared socket" if via == "shared" else "to per-namespace sockets"
    ) in result.settings["target_description"]
    assert result.errors == {} and result.boot_failures == {}
    assert result.boots == result.boots_completed == result.boots_clean == 20
    assert result.boot_lengths == boot_length(fleet)
    assert result.requests == result.good == sum(result.boot_lengths)
    assert result.nova["total"] == result.requests
    # nothing of the topology is left
    assert _left(tag) == []
    assert not Path(RUN_DIR_PREFIX + tag[len("e2e") :]).exists()


def test_sigterm_during_a_haproxy_storm_removes_everything():
    """`python -m bench storm --target haproxy` stopped by SIGTERM mid-storm: the
    namespaces, haproxy, the agent and the fake Nova are gone, and it says it stopped."""
    out = Path(REPO) / "bench" / "results"
    argv = [
        sys.executable,
        "-m",
        "bench",
        "storm",
        "--target",
        "haproxy",
        "--instances",
        "60",
        "--routers",
        "3",
        "--concurrency",
        "3",
        "--workers",
        "1",
        "--ramp",
        "60",
        "--no-progress",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    tag = None
    try:
        deadline = time.monotonic() + 120
        seen = []
        while tag is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            match = re.match(r"haproxy front (e2e[0-9a-f]{8}):", line)
            if match:
                tag = match.group(1)
        assert tag is not None, "".join(seen)
        assert _left(tag)  # built
        haproxies = subprocess.run(
            ["ip", "netns", "pids", f"qrouter-{tag}-r0"], capture_output=True, text=True
        ).stdout.split()
        assert haproxies
        time.sleep(1.0)  # the storm is running (60 s of ramp)
        started = descendants([proc.pid])  # the agent, the fake Nova, the generator
        assert len(started) >= 3
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted; what it started is stopped and removed" in err
    assert _left(tag) == []
    assert not Path(RUN_DIR_PREFIX + tag[len("e2e") :]).exists()
    assert [pid for pid in haproxies if _running(int(pid))] == []
    assert [pid for pid in started if _running(pid)] == []


def _running(pid: int) -> bool:
    """Whether C{pid} still runs (a zombie waiting for its parent does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
