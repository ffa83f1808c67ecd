"""Upstream's neutron-ovn-metadata-agent, unpatched, as root, on the sandbox chassis
(1 network x 2 instances): it provisions the network's namespace with one haproxy in
it, and an instance's request through OVN is answered by Nova through that haproxy and
upstream's agent, signed for that instance. The comparison
(L{bench.ovnsandbox.compare}) stands on this."""

from __future__ import annotations

import json

import pytest

from bench.ovnsandbox.agents import Footprint
from bench.ovnsandbox.compare import SECRET, fleet_table
from bench.ovnsandbox.guests import Asker
from bench.ovnsandbox.upstream_agent import start_upstream_ovn_agent, upstream_missing
from bench.processes import start_fakenova
from tests.integration.chassis.conftest import needs_ovn

UPSTREAM_MISSING = upstream_missing()
pytestmark = [
    needs_ovn,
    pytest.mark.slow,
    pytest.mark.skipif(UPSTREAM_MISSING is not None, reason=str(UPSTREAM_MISSING)),
]


def test_upstream_answers_an_instance_through_its_haproxy(sandbox, cloud, tmp_path):
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
        agent = start_upstream_ovn_agent(
            sandbox, tmp_path / "upstream", nova_port=nova_port, secret=SECRET
        )
        asker = Asker()
        asker.until_answered(vms[0].namespace, timeout=90, alive=agent.alive)

        status, body = asker.get(vms[1].namespace, "/openstack/latest/meta_data.json")
        assert status == 200, body
        # Nova found the instance by the id upstream's agent signed for the caller's
        # address: the second instance's, not the first's
        assert json.loads(body)["uuid"] == ports[1].device_id

        namespace = f"ovnmeta-{net.id}"
        footprint = Footprint.read(agent, [namespace])
        assert [p.comm for p in footprint.per_namespace[namespace]] == ["haproxy"]
        assert [p.comm for p in footprint.helpers] != []  # privsep daemons, in its session
        assert agent.alive(), agent.log()[-2000:]
    finally:
        if agent is not None:
            agent.stop()
        nova.stop()
