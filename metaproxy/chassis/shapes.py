"""The two deployment shapes of the chassis mode: which of upstream's two agents
metaproxy stands in for, and so which C{Chassis_Private.external_ids} keys it writes.

Upstream has two generations of the agent that serves metadata on an ML2/OVN chassis,
and neutron-server turns the chassis's C{Chassis_Private.external_ids} into agent-list
entries by their keys:

- C{neutron-ovn-metadata-agent} (L{METADATA_AGENT}): C{neutron:ovn-metadata-id},
  C{neutron:ovn-metadata-sb-cfg}; listed as an "OVN Metadata agent";
- C{neutron-ovn-agent} with its C{metadata} extension (L{NEUTRON_OVN_AGENT}):
  C{neutron:ovn-neutron-agent-id}, C{neutron:ovn-neutron-agent-sb-cfg}; listed as an
  "OVN Neutron agent". When its id is there, neutron-server lists no OVN Metadata agent
  for the chassis, whatever metadata keys remain.

Each agent removes the other's keys when it starts; metaproxy does so at every
registration. Both write C{neutron:ovn-bridge}. The id is C{uuid5(chassis id, name)},
the chassis id itself (for a chassis name that is not a UUID) a C{uuid5} in the agent's
own namespace (L{metaproxy.chassis.identity.chassis_id}): the same id the replaced agent
wrote. The description keys are neutron-server's (an operator's agent description):
metaproxy never writes them, and keeps its own shape's.

What neutron-server's agent list shows, besides the chassis's "OVN Controller agent":

- metadata-agent shape: one "OVN Metadata agent" (binary neutron-ovn-metadata-agent),
  alive while metaproxy runs (it follows C{nb_cfg}), dead once it stops;
- neutron-ovn-agent shape, with neutron-ovn-agent stopped (C{metadata} was its only
  extension): one "OVN Neutron agent" (binary neutron-ovn-agent), alive while metaproxy
  runs, dead once it stops;
- neutron-ovn-agent shape, with neutron-ovn-agent still running for other extensions
  (C{ovn-bgp}, C{qos_hwol}, ...): still one "OVN Neutron agent". Both processes write the
  same id and follow C{nb_cfg} into the same key, so either keeps it alive: the entry
  says the chassis has a live neutron-ovn-agent, not that metadata is served. Whether
  metaproxy serves is its own C{/healthz} (check C{ovn_chassis}) and metric
  C{metaproxy_ovn_chassis_ready}.
"""

from __future__ import annotations

import uuid

import attrs

from metaproxy.chassis.identity import (
    OVN_AGENT_UUID_NAMESPACE,
    OVN_METADATA_UUID_NAMESPACE,
    chassis_id,
)

__all__ = [
    "AgentKeys",
    "METADATA_AGENT",
    "NEUTRON_OVN_AGENT",
    "SHAPES",
    "OVN_BRIDGE_KEY",
    "agent_keys",
]

#: The integration bridge, which both agents write (neutron-server reads it).
OVN_BRIDGE_KEY = "neutron:ovn-bridge"

_METADATA_ID = "neutron:ovn-metadata-id"
_METADATA_SB_CFG = "neutron:ovn-metadata-sb-cfg"
_METADATA_DESCRIPTION = "neutron:description-metadata"
_NEUTRON_ID = "neutron:ovn-neutron-agent-id"
_NEUTRON_SB_CFG = "neutron:ovn-neutron-agent-sb-cfg"
_NEUTRON_DESCRIPTION = "neutron:description-neutron-agent"


@attrs.frozen
class AgentKeys:
    """What one of upstream's agents writes in C{Chassis_Private.external_ids}."""

    #: the agent metaproxy stands in for (its binary's name, as the agent list shows it)
    binary: str
    #: the agent list's C{agent_type} for it
    agent_type: str
    #: the agent's id (added if absent: an id already there is kept)
    id_key: str
    #: the C{nb_cfg} the agent has seen (its liveness)
    sb_cfg_key: str
    #: neutron-server's (an operator's description): never written, kept
    description_key: str
    #: the id is C{uuid5(chassis id, id_name)}
    id_name: str
    #: the namespace of the chassis id of a chassis whose name is not a UUID
    chassis_namespace: uuid.UUID
    #: the other agent's keys, removed at every registration (one agent per chassis)
    other_keys: tuple[str, ...]

    def agent_id(self, chassis_name: str) -> str:
        """The id this agent registers for chassis C{chassis_name}."""
        return str(uuid.uuid5(chassis_id(chassis_name, self.chassis_namespace), self.id_name))


METADATA_AGENT = AgentKeys(
    binary="neutron-ovn-metadata-agent",
    agent_type="OVN Metadata agent",
    id_key=_METADATA_ID,
    sb_cfg_key=_METADATA_SB_CFG,
    description_key=_METADATA_DESCRIPTION,
    id_name="metadata_agent",
    chassis_namespace=OVN_METADATA_UUID_NAMESPACE,
    other_keys=(_NEUTRON_SB_CFG, _NEUTRON_DESCRIPTION, _NEUTRON_ID),
)

NEUTRON_OVN_AGENT = AgentKeys(
    binary="neutron-ovn-agent",
    agent_type="OVN Neutron agent",
    id_key=_NEUTRON_ID,
    sb_cfg_key=_NEUTRON_SB_CFG,
    description_key=_NEUTRON_DESCRIPTION,
    id_name="ovn_agent",
    chassis_namespace=OVN_AGENT_UUID_NAMESPACE,
    other_keys=(_METADATA_SB_CFG, _METADATA_DESCRIPTION, _METADATA_ID),
)

#: The shapes by the name of the agent they replace.
SHAPES = {keys.binary: keys for keys in (METADATA_AGENT, NEUTRON_OVN_AGENT)}


def agent_keys(shape: str) -> AgentKeys:
    """The keys of shape C{shape} (C{neutron-ovn-metadata-agent} or C{neutron-ovn-agent}).

    @raise ValueError: no such shape.
    """
    try:
        return SHAPES[shape]
    except KeyError:
        raise ValueError(
            f"unknown OVN agent shape {shape!r}: expected one of {', '.join(SHAPES)}"
        ) from None
