"""metaproxy.chassis.shapes and the registration per shape: the keys each of upstream's
agents writes in Chassis_Private.external_ids (neutron/agent/ovn/metadata/agent.py,
neutron/agent/ovn/agent/ovn_neutron_agent.py, neutron/common/ovn/constants.py), written
here as literals from upstream, not from the code under test."""

import uuid

import pytest
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from metaproxy.chassis.identity import ChassisIdentity
from metaproxy.chassis.registration import Registration, registration_operations
from metaproxy.chassis.shapes import METADATA_AGENT, NEUTRON_OVN_AGENT, agent_keys

#: upstream's OVN_METADATA_UUID_NAMESPACE and OVN_MONITOR_UUID_NAMESPACE
METADATA_NS = uuid.UUID("d34bf9f6-da32-4871-9af8-15a4626b41ab")
OVN_AGENT_NS = uuid.UUID("fd7e0970-7164-11ed-80f0-00000003158a")
WHERE = [["name", "==", "compute-1"]]


def mutations(ops):
    """(mutator, value) of each operation's one external_ids mutation."""
    out = []
    for op in ops:
        assert op["op"] == "mutate" and op["table"] == "Chassis_Private"
        assert op["where"] == WHERE
        for column, mutator, value in op["mutations"]:
            assert column == "external_ids"
            out.append((mutator, value))
    return out


def test_neutron_ovn_agent_shape_registers_the_ovn_neutron_agent() -> None:
    identity = ChassisIdentity("compute-1", "br-int")
    agent_id = str(uuid.uuid5(uuid.uuid5(OVN_AGENT_NS, "compute-1"), "ovn_agent"))
    ops = mutations(registration_operations(identity, 9, NEUTRON_OVN_AGENT))
    removed = ops[0]
    assert removed[0] == "delete"
    # _cleanup_previous_tags of neutron-ovn-agent: the metadata agent's three keys
    assert set(removed[1][1]) == {
        "neutron:ovn-metadata-sb-cfg",
        "neutron:description-metadata",
        "neutron:ovn-metadata-id",
    }
    # register_ovn_agent: db_add (an id already there is kept)
    assert ops[1] == ("insert", ["map", [["neutron:ovn-neutron-agent-id", agent_id]]])
    # update_neutron_sb_cfg_key, and the bridge the metadata extension writes
    set_keys = [
        dict(value[1]) for mutator, value in ops[2:] if mutator == "insert" and value[0] == "map"
    ]
    assert set_keys == [{"neutron:ovn-bridge": "br-int", "neutron:ovn-neutron-agent-sb-cfg": "9"}]
    written = {k for keys in set_keys for k in keys} | {"neutron:ovn-neutron-agent-id"}
    assert not any(key.startswith("neutron:description") for key in written)


def test_metadata_agent_shape_is_unchanged() -> None:
    identity = ChassisIdentity("compute-1", "br-int")
    agent_id = str(uuid.uuid5(uuid.uuid5(METADATA_NS, "compute-1"), "metadata_agent"))
    ops = mutations(registration_operations(identity, 9, METADATA_AGENT))
    assert set(ops[0][1][1]) == {
        "neutron:ovn-neutron-agent-sb-cfg",
        "neutron:description-neutron-agent",
        "neutron:ovn-neutron-agent-id",
    }
    assert ops[1] == ("insert", ["map", [["neutron:ovn-metadata-id", agent_id]]])


def test_a_uuid_chassis_name_is_the_chassis_id_in_both_shapes() -> None:
    name = "5d7c43c6-8f5e-4a7a-9f4d-3a7b1b7e2a11"
    assert NEUTRON_OVN_AGENT.agent_id(name) == str(uuid.uuid5(uuid.UUID(name), "ovn_agent"))
    assert METADATA_AGENT.agent_id(name) == str(uuid.uuid5(uuid.UUID(name), "metadata_agent"))


def test_a_named_chassis_gets_each_agents_own_namespace() -> None:
    # neutron-ovn-agent's chassis id is not the metadata agent's for the same name
    assert NEUTRON_OVN_AGENT.agent_id("compute-1") != str(
        uuid.uuid5(uuid.uuid5(METADATA_NS, "compute-1"), "ovn_agent")
    )


def test_following_nb_cfg_writes_the_shapes_sb_cfg_key() -> None:
    clock, sent = Clock(), []

    def transact(ops, must_match):
        sent.append(ops)
        return succeed([{"count": 1}] * len(ops))

    reg = Registration(
        clock,
        transact,
        ChassisIdentity("compute-1"),
        keys=NEUTRON_OVN_AGENT,
        randint=lambda a, b: 0,
    )
    reg.nb_cfg_changed(12)
    clock.advance(0)
    [[op]] = sent
    assert op["mutations"][-1] == [
        "external_ids",
        "insert",
        ["map", [["neutron:ovn-neutron-agent-sb-cfg", "12"]]],
    ]


def test_shapes_by_the_name_of_the_replaced_agent() -> None:
    assert agent_keys("neutron-ovn-agent").agent_type == "OVN Neutron agent"
    assert agent_keys("neutron-ovn-metadata-agent").agent_type == "OVN Metadata agent"
    with pytest.raises(ValueError, match="neutron-ovn-agent"):
        agent_keys("neutron-metadata-agent")
