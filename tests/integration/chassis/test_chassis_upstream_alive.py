"""neutron-server's own code (its AgentCache, from the upstream virtualenv) lists the
chassis's OVN metadata agent, alive, from the rows metaproxy wrote in a real
Southbound; and dead once its report lags, which shows the report is what keeps it
alive. In the neutron-ovn-agent shape the same code lists one OVN Neutron agent instead,
alive then dead, and no OVN Metadata agent, even where the old agent's keys were."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from functools import partial
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from metaproxy.chassis.agent import ChassisAgent
from metaproxy.chassis.shapes import NEUTRON_OVN_AGENT
from metaproxy.ovsdb.remote import parse_remotes
from tests.integration.chassis.conftest import needs_ovn
from tests.integration.chassis.conftest import until as _until

VENV = Path(
    os.environ.get("METAPROXY_UPSTREAM_VENV")
    or Path.home() / ".cache" / "metaproxy" / "upstream-venv"
)
JUDGE = Path(__file__).resolve().parents[3] / "bench" / "ovnsandbox" / "upstream_alive.py"
pytestmark = [
    needs_ovn,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (VENV / "bin" / "python").exists(), reason=f"no upstream neutron virtualenv at {VENV}"
    ),
]


def upstream_agents(sandbox, agent_down_time: int) -> list[dict]:
    [chassis] = sandbox.sb_select(
        "Chassis",
        [["name", "==", sandbox.chassis]],
        ["name", "hostname", "external_ids", "other_config"],
    )
    [private] = sandbox.sb_select(
        "Chassis_Private",
        [["name", "==", sandbox.chassis]],
        ["name", "nb_cfg", "nb_cfg_timestamp", "external_ids"],
    )
    [nb_global] = sandbox.nb_select("NB_Global", [], ["nb_cfg"])
    rows = {
        "chassis": chassis,
        "chassis_private": private,
        "nb_global_nb_cfg": nb_global["nb_cfg"],
        "agent_down_time": agent_down_time,
    }
    done = subprocess.run(
        [str(VENV / "bin" / "python"), str(JUDGE)],
        input=json.dumps(rows).encode(),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return json.loads(done.stdout)


until = partial(_until, timeout=15.0, step=0.02)


@pytest_twisted.ensureDeferred
async def test_neutron_server_lists_the_metadata_agent_alive_then_dead_when_it_stops(
    sandbox,
) -> None:
    agent = ChassisAgent(
        reactor,
        parse_remotes(sandbox.remote("ovs")),
        parse_remotes(sandbox.remote("sb", "tcp")),
        probe_interval=0,
        retry_max_interval=1,
        randint=lambda a, b: 0,
    )
    agent.start()
    try:
        await until(lambda: agent.registration is not None and agent.registration.registered)
        for _ in range(3):
            sandbox.sync()
        [nb] = sandbox.nb_select("NB_Global", [], ["nb_cfg"])

        def followed():
            [row] = sandbox.sb_select("Chassis_Private", [["name", "==", sandbox.chassis]])
            return row["external_ids"].get("neutron:ovn-metadata-sb-cfg") == str(nb["nb_cfg"])

        await until(followed)
    finally:
        await agent.stop()

    agents = {a["agent_type"]: a for a in upstream_agents(sandbox, agent_down_time=75)}
    metadata = agents["OVN Metadata agent"]
    chassis_id = uuid.uuid5(uuid.UUID("d34bf9f6-da32-4871-9af8-15a4626b41ab"), sandbox.chassis)
    assert metadata["id"] == str(uuid.uuid5(chassis_id, "metadata_agent"))
    assert metadata["binary"] == "neutron-ovn-metadata-agent"
    assert metadata["host"] == sandbox.hostname
    assert metadata["alive"] is True
    assert agents["OVN Controller agent"]["alive"] is True

    # metaproxy is stopped: nb_cfg moves on without it, and once ovn-controller's
    # timestamp is older than agent_down_time, neutron-server calls the agent dead
    sandbox.sync()
    sandbox.sync()
    await deferLater(reactor, 1.2, lambda: None)
    agents = {a["agent_type"]: a for a in upstream_agents(sandbox, agent_down_time=1)}
    assert agents["OVN Metadata agent"]["alive"] is False


@pytest_twisted.ensureDeferred
async def test_neutron_ovn_agent_shape_is_listed_as_the_ovn_neutron_agent_and_no_metadata_agent(
    sandbox,
) -> None:
    # what neutron-ovn-metadata-agent left on the row before the node moved to
    # neutron-ovn-agent (metadata dropped from its extensions, metaproxy in its place)
    old_keys = {
        "neutron:ovn-metadata-id": str(uuid.uuid4()),
        "neutron:ovn-metadata-sb-cfg": "1",
        "neutron:description-metadata": "the old agent",
    }
    sandbox.sb_transact(
        [
            {
                "op": "mutate",
                "table": "Chassis_Private",
                "where": [["name", "==", sandbox.chassis]],
                "mutations": [
                    ["external_ids", "insert", ["map", list(map(list, old_keys.items()))]]
                ],
            }
        ]
    )
    agent = ChassisAgent(
        reactor,
        parse_remotes(sandbox.remote("ovs")),
        parse_remotes(sandbox.remote("sb", "tcp")),
        probe_interval=0,
        retry_max_interval=1,
        randint=lambda a, b: 0,
        agent_keys=NEUTRON_OVN_AGENT,
    )
    agent.start()
    try:
        await until(lambda: agent.registration is not None and agent.registration.registered)
        for _ in range(3):
            sandbox.sync()
        [nb] = sandbox.nb_select("NB_Global", [], ["nb_cfg"])

        def followed():
            [row] = sandbox.sb_select("Chassis_Private", [["name", "==", sandbox.chassis]])
            ids = row["external_ids"]
            return ids.get("neutron:ovn-neutron-agent-sb-cfg") == str(nb["nb_cfg"])

        await until(followed)
    finally:
        await agent.stop()

    [row] = sandbox.sb_select("Chassis_Private", [["name", "==", sandbox.chassis]])
    assert not set(old_keys) & set(row["external_ids"])  # cleaned, as neutron-ovn-agent does
    assert "neutron:description-neutron-agent" not in row["external_ids"]  # never written

    listed = upstream_agents(sandbox, agent_down_time=75)
    agents = {a["agent_type"]: a for a in listed}
    assert sorted(agents) == ["OVN Controller agent", "OVN Neutron agent"]
    assert len(listed) == 2
    neutron_agent = agents["OVN Neutron agent"]
    chassis_id = uuid.uuid5(uuid.UUID("fd7e0970-7164-11ed-80f0-00000003158a"), sandbox.chassis)
    assert neutron_agent["id"] == str(uuid.uuid5(chassis_id, "ovn_agent"))
    assert neutron_agent["binary"] == "neutron-ovn-agent"
    assert neutron_agent["host"] == sandbox.hostname
    assert neutron_agent["alive"] is True

    # metaproxy is stopped (and no neutron-ovn-agent runs): the entry goes dead
    sandbox.sync()
    sandbox.sync()
    await deferLater(reactor, 1.2, lambda: None)
    listed = upstream_agents(sandbox, agent_down_time=1)
    agents = {a["agent_type"]: a for a in listed}
    assert agents["OVN Neutron agent"]["alive"] is False
    assert "OVN Metadata agent" not in agents
