"""The chassis registers as its OVN metadata agent in a real Southbound database, and
neutron-server would list it alive."""

from __future__ import annotations

import uuid
from functools import partial

import pytest
import pytest_twisted
from twisted.internet import reactor

from metaproxy.chassis.agent import ChassisAgent
from metaproxy.ovsdb.remote import parse_remotes
from tests.integration.chassis.conftest import needs_ovn
from tests.integration.chassis.conftest import until as _until

pytestmark = [needs_ovn, pytest.mark.slow]

#: The OVN metadata agent's namespace for chassis ids (neutron's agent.py).
METADATA_NAMESPACE = uuid.UUID("d34bf9f6-da32-4871-9af8-15a4626b41ab")


until = partial(_until, timeout=15.0, step=0.02)


def private_ids(sandbox) -> dict:
    [row] = sandbox.sb_select("Chassis_Private", [["name", "==", sandbox.chassis]])
    return row["external_ids"]


def start_agent(sandbox, **kw) -> ChassisAgent:
    agent = ChassisAgent(
        reactor,
        parse_remotes(sandbox.remote("ovs")),
        parse_remotes(sandbox.remote("sb", "tcp")),
        ovs_timeout=10,
        sb_timeout=10,
        probe_interval=0,
        retry_max_interval=1,
        **kw,
    )
    agent.start()
    return agent


@pytest_twisted.ensureDeferred
async def test_registers_with_upstreams_agent_id_bridge_and_sb_cfg(sandbox) -> None:
    agent = start_agent(sandbox)
    try:
        await until(lambda: "neutron:ovn-metadata-id" in private_ids(sandbox))
        ids = private_ids(sandbox)
        chassis_id = uuid.uuid5(METADATA_NAMESPACE, sandbox.chassis)  # not a UUID name
        assert ids["neutron:ovn-metadata-id"] == str(uuid.uuid5(chassis_id, "metadata_agent"))
        assert ids["neutron:ovn-bridge"] == "br-int"
        [row] = sandbox.sb_select("Chassis_Private", [["name", "==", sandbox.chassis]])
        assert ids["neutron:ovn-metadata-sb-cfg"] == str(row["nb_cfg"])
        assert "neutron:description-metadata" not in ids  # neutron-server's key
    finally:
        await agent.stop()


@pytest_twisted.ensureDeferred
async def test_sb_cfg_follows_nb_cfg_so_neutron_server_sees_it_alive(sandbox) -> None:
    delays = []

    def randint(a, b):
        delays.append((a, b))
        return 0

    agent = start_agent(sandbox, agent_down_time=9, randint=randint)
    try:
        await until(lambda: "neutron:ovn-metadata-sb-cfg" in private_ids(sandbox))
        for _ in range(3):
            sandbox.sync()  # NB_Global.nb_cfg + 1, copied to SB_Global by northd
            [nb_global] = sandbox.nb_select("NB_Global", [], ["nb_cfg"])
            target = str(nb_global["nb_cfg"])
            await until(lambda: private_ids(sandbox)["neutron:ovn-metadata-sb-cfg"] == target)
            # neutron-server's rule: alive while NB_Global.nb_cfg - sb-cfg <= 1
            assert nb_global["nb_cfg"] - int(target) <= 1
        assert delays and set(delays) == {(0, 3)}  # later changes: random 0..3 s delay
    finally:
        await agent.stop()


@pytest_twisted.ensureDeferred
async def test_keeps_an_existing_id_and_description_removes_the_other_agents_keys(
    sandbox,
) -> None:
    sandbox.sb_transact(
        [
            {
                "op": "mutate",
                "table": "Chassis_Private",
                "where": [["name", "==", sandbox.chassis]],
                "mutations": [
                    [
                        "external_ids",
                        "insert",
                        [
                            "map",
                            [
                                ["neutron:ovn-metadata-id", "kept-id"],
                                ["neutron:description-metadata", "rack 4"],
                                ["neutron:ovn-neutron-agent-id", "other"],
                                ["neutron:ovn-neutron-agent-sb-cfg", "3"],
                            ],
                        ],
                    ]
                ],
            }
        ]
    )
    agent = start_agent(sandbox)
    try:
        await until(lambda: "neutron:ovn-bridge" in private_ids(sandbox))
        ids = private_ids(sandbox)
        assert ids["neutron:ovn-metadata-id"] == "kept-id"
        assert ids["neutron:description-metadata"] == "rack 4"
        assert "neutron:ovn-neutron-agent-id" not in ids
        assert "neutron:ovn-neutron-agent-sb-cfg" not in ids
    finally:
        await agent.stop()


@pytest_twisted.ensureDeferred
async def test_registers_again_when_ovn_controller_recreates_its_row(sandbox) -> None:
    agent = start_agent(sandbox)
    try:
        await until(lambda: "neutron:ovn-metadata-id" in private_ids(sandbox))
        sandbox.sb_transact(
            [
                {
                    "op": "delete",
                    "table": "Chassis_Private",
                    "where": [["name", "==", sandbox.chassis]],
                }
            ]
        )
        # ovn-controller puts a fresh row back, without our keys; we put them back
        await until(
            lambda: (
                "neutron:ovn-metadata-id"
                in (
                    sandbox.sb_select("Chassis_Private", [["name", "==", sandbox.chassis]])
                    or [{"external_ids": {}}]
                )[0]["external_ids"]
            )
        )
        assert agent.registration.registered >= 2
    finally:
        await agent.stop()


@pytest_twisted.ensureDeferred
async def test_registers_again_after_the_southbound_restarts(sandbox) -> None:
    agent = start_agent(sandbox)
    try:
        await until(lambda: agent.registration is not None and agent.registration.registered)
        syncs = agent.sb_monitor.syncs
        sandbox.sb_transact(
            [
                {
                    "op": "mutate",
                    "table": "Chassis_Private",
                    "where": [["name", "==", sandbox.chassis]],
                    "mutations": [["external_ids", "delete", ["set", ["neutron:ovn-bridge"]]]],
                }
            ]
        )
        sandbox.restart_database("sb")
        await until(lambda: agent.sb_monitor.syncs > syncs)
        await until(lambda: private_ids(sandbox).get("neutron:ovn-bridge") == "br-int")
    finally:
        await agent.stop()
