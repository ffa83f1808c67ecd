"""Both agents of the OVN comparison on the sandbox chassis (1 network x 2 instances):
upstream's neutron-ovn-metadata-agent, unpatched, as root, with one haproxy in the
network's namespace; and metaproxy's chassis mode in a process of its own, with no
process there. An instance's request through OVN is answered by Nova, signed for that
instance. The comparison (L{bench.ovnsandbox.compare}) stands on this."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from bench.ovnsandbox.agents import Footprint, start_agent
from bench.ovnsandbox.compare import SECRET, fleet_table
from bench.ovnsandbox.guests import Asker
from bench.ovnsandbox.upstream_agent import upstream_missing
from bench.processes import start_fakenova
from tests.integration.chassis.conftest import needs_ovn

UPSTREAM_MISSING = upstream_missing()
pytestmark = [needs_ovn, pytest.mark.slow]


@pytest.fixture
def short_dir():
    """A run directory short enough for the Unix socket paths made under it."""
    path = Path(tempfile.mkdtemp(prefix="mpt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(
    ("agent_name", "in_namespace"),
    [
        pytest.param(
            "upstream",
            ["haproxy"],
            marks=pytest.mark.skipif(UPSTREAM_MISSING is not None, reason=str(UPSTREAM_MISSING)),
        ),
        ("metaproxy", []),
    ],
)
def test_an_instance_is_answered_through_ovn(sandbox, cloud, short_dir, agent_name, in_namespace):
    tmp_path = short_dir
    net = cloud.add_network("10.30.0.0/24")
    ports = [cloud.add_port(net), cloud.add_port(net)]
    table = tmp_path / "ports.json"
    table.write_text(json.dumps(fleet_table(ports)))
    nova, nova_port = start_fakenova(table, SECRET, tmp_path / "nova")
    agent = None
    try:
        vms = [cloud.plug(port) for port in ports]
        for vm in vms:
            cloud.wait_bound(vm)
        agent = start_agent(
            agent_name, sandbox, tmp_path / agent_name, nova_port=nova_port, secret=SECRET
        )
        asker = Asker()
        try:
            asker.until_answered(vms[0].namespace, timeout=90, alive=agent.alive)
        except (RuntimeError, TimeoutError) as e:
            raise AssertionError(f"{e}; the agent's log ends:\n{agent.log()[-3000:]}") from None

        status, body = asker.get(vms[1].namespace, "/openstack/latest/meta_data.json")
        assert status == 200, body
        # Nova found the instance by the id the agent signed for the caller's address:
        # the second instance's, not the first's
        assert json.loads(body)["uuid"] == ports[1].device_id

        namespace = f"ovnmeta-{net.id}"
        footprint = Footprint.read(agent, [namespace])
        assert [p.comm for p in footprint.per_namespace[namespace]] == in_namespace
        if agent_name == "upstream":
            assert len(footprint.helpers) >= 1  # privsep daemons, found in its session
        else:
            assert len(footprint.session) == 1  # one process, nothing forked
        assert agent.alive(), agent.log()[-2000:]
    finally:
        if agent is not None:
            agent.stop()
        nova.stop()
