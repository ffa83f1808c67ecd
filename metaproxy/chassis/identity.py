"""Who this chassis is, as the OVN metadata agent works it out, and the ids it registers.

- the chassis name is the local C{Open_vSwitch} row's C{external_ids:system-id} (the
  name ovn-controller registered the chassis under);
- the integration bridge is C{external_ids:ovn-bridge}, C{br-int} when unset;
- the chassis id is the name when it is a UUID, else C{uuid5} of the name in the
  namespace of the agent metaproxy replaces (L{chassis_id}: the OVN metadata agent and
  neutron-ovn-agent each have their own);
- the agent id neutron-server lists is C{uuid5(chassis id, "metadata_agent")} for the
  OVN metadata agent (L{ChassisIdentity.agent_id}; neutron-ovn-agent's is
  L{metaproxy.chassis.shapes}'): the same on every restart, and the same as the agent
  metaproxy replaces, so the agent list keeps one row for the node.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import attrs

__all__ = [
    "IdentityError",
    "ChassisIdentity",
    "identity_from_external_ids",
    "OVN_METADATA_UUID_NAMESPACE",
    "OVN_AGENT_UUID_NAMESPACE",
    "chassis_id",
    "DEFAULT_BRIDGE",
]

#: The namespace of the chassis id of a chassis whose name is not a UUID.
OVN_METADATA_UUID_NAMESPACE = uuid.UUID("d34bf9f6-da32-4871-9af8-15a4626b41ab")
#: neutron-ovn-agent's namespace for the same (not the metadata agent's).
OVN_AGENT_UUID_NAMESPACE = uuid.UUID("fd7e0970-7164-11ed-80f0-00000003158a")
DEFAULT_BRIDGE = "br-int"


def chassis_id(name: str, namespace: uuid.UUID = OVN_METADATA_UUID_NAMESPACE) -> uuid.UUID:
    """The chassis id of chassis C{name}: the name when it is a UUID, else C{uuid5} of
    it in C{namespace} (the replaced agent's)."""
    try:
        return uuid.UUID(name)
    except ValueError:
        return uuid.uuid5(namespace, name)


class IdentityError(ValueError):
    """The local Open_vSwitch database does not name this chassis; str() says what to do."""


@attrs.frozen
class ChassisIdentity:
    """The chassis name (C{system-id}) and the integration bridge."""

    name: str
    bridge: str = DEFAULT_BRIDGE

    @property
    def chassis_id(self) -> uuid.UUID:
        """The OVN metadata agent's chassis id (L{chassis_id})."""
        return chassis_id(self.name)

    @property
    def agent_id(self) -> str:
        """The OVN metadata agent's id (C{neutron:ovn-metadata-id})."""
        return str(uuid.uuid5(self.chassis_id, "metadata_agent"))


def identity_from_external_ids(external_ids: Mapping[str, str]) -> ChassisIdentity:
    """The identity the C{Open_vSwitch} row's C{external_ids} give.

    @raise IdentityError: no C{system-id}.
    """
    name = external_ids.get("system-id", "").strip()
    if not name:
        raise IdentityError(
            "the local Open_vSwitch table has no external_ids:system-id, so this node's "
            "chassis name is unknown; configure ovn-controller on this node (ovs-vsctl set "
            "Open_vSwitch . external_ids:system-id=<name>) and metaproxy will follow"
        )
    bridge = external_ids.get("ovn-bridge", "").strip() or DEFAULT_BRIDGE
    return ChassisIdentity(name, bridge)
