"""metaproxy.chassis.identity: the chassis name, bridge and the ids upstream derives."""

import uuid

import pytest

from metaproxy.chassis.identity import ChassisIdentity, IdentityError, identity_from_external_ids

NAMESPACE = uuid.UUID("d34bf9f6-da32-4871-9af8-15a4626b41ab")


def test_a_uuid_system_id_is_the_chassis_id_itself() -> None:
    name = "2f0bbe93-7b4c-4e8c-9c8e-0c4b1e9d3f11"
    identity = identity_from_external_ids({"system-id": name, "ovn-bridge": "br-ovn"})
    assert identity == ChassisIdentity(name, "br-ovn")
    assert identity.chassis_id == uuid.UUID(name)
    assert identity.agent_id == str(uuid.uuid5(uuid.UUID(name), "metadata_agent"))


def test_another_system_id_is_hashed_into_the_metadata_namespace() -> None:
    identity = identity_from_external_ids({"system-id": "compute-7"})
    assert identity.bridge == "br-int"
    assert identity.chassis_id == uuid.uuid5(NAMESPACE, "compute-7")
    # the value upstream's agent registers for a chassis named compute-7
    assert identity.agent_id == str(
        uuid.uuid5(uuid.uuid5(NAMESPACE, "compute-7"), "metadata_agent")
    )
    assert identity.agent_id == identity_from_external_ids({"system-id": "compute-7"}).agent_id


def test_no_system_id_says_what_to_configure() -> None:
    with pytest.raises(IdentityError, match="external_ids:system-id"):
        identity_from_external_ids({"ovn-bridge": "br-int"})
    with pytest.raises(IdentityError, match="ovn-controller"):
        identity_from_external_ids({"system-id": "  "})
