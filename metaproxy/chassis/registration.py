"""Registering as the chassis's metadata-serving agent, and staying alive in
neutron-server's agent list.

Which agent metaproxy registers as is the deployment shape's
(L{metaproxy.chassis.shapes}: the OVN metadata agent, or neutron-ovn-agent whose
C{metadata} extension metaproxy replaces); its keys are an L{AgentKeys}. neutron-server
lists that agent for every C{Chassis_Private} row whose C{external_ids} hold the id key,
and calls it alive while the number in the sb-cfg key is at most one behind
C{NB_Global.nb_cfg} (or the chassis's C{nb_cfg_timestamp}, which ovn-controller writes,
is recent). So, on the chassis's own C{Chassis_Private} row:

  1. at every (re)synchronisation: remove the keys of the other agent (one agent per
     chassis, as each of upstream's agents does at its start), add the id key if absent
     (an id already there is kept), set C{neutron:ovn-bridge} and set the sb-cfg key to
     the row's own C{nb_cfg};
  2. when ovn-controller re-creates the row (it restarted): the same again;
  3. when C{SB_Global.nb_cfg} changes: set the sb-cfg key to it; the first change at
     once, later ones after a random 0 to C{max(3, min(10, agent_down_time // 3))}
     seconds, so that a cloud's agents do not all write in the same instant
     (neutron-server is told within the delay, well inside C{agent_down_time}).

The description keys are neutron-server's (an operator's agent description): this
shape's is never written, and kept. A transaction that fails is logged and done again
at the next synchronisation or change.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from metaproxy.chassis.identity import ChassisIdentity
from metaproxy.chassis.shapes import METADATA_AGENT, OVN_BRIDGE_KEY, AgentKeys
from metaproxy.ovsdb.operations import map_add, map_remove, map_set

__all__ = [
    "METADATA_ID_KEY",
    "METADATA_SB_CFG_KEY",
    "OVN_BRIDGE_KEY",
    "METADATA_DESCRIPTION_KEY",
    "OTHER_AGENT_KEYS",
    "registration_operations",
    "sb_cfg_operations",
    "follow_delay_max",
    "Registration",
]

log = Logger("metaproxy.chassis")

METADATA_ID_KEY = METADATA_AGENT.id_key
METADATA_SB_CFG_KEY = METADATA_AGENT.sb_cfg_key
METADATA_DESCRIPTION_KEY = METADATA_AGENT.description_key
#: What neutron-ovn-agent (the metadata agent's successor) writes: removed in the
#: metadata-agent shape, so that neutron-server does not list two agents for the chassis.
OTHER_AGENT_KEYS = METADATA_AGENT.other_keys
_TABLE = "Chassis_Private"


def _where(identity: ChassisIdentity) -> list[Any]:
    return [["name", "==", identity.name]]


def registration_operations(
    identity: ChassisIdentity, nb_cfg: int, keys: AgentKeys = METADATA_AGENT
) -> list[dict[str, Any]]:
    """The transaction of step 1 (the row must exist: operation 0 must match)."""
    where = _where(identity)
    return [
        map_remove(_TABLE, where, "external_ids", keys.other_keys),
        map_add(_TABLE, where, "external_ids", {keys.id_key: keys.agent_id(identity.name)}),
        map_set(
            _TABLE,
            where,
            "external_ids",
            {OVN_BRIDGE_KEY: identity.bridge, keys.sb_cfg_key: str(nb_cfg)},
        ),
    ]


def sb_cfg_operations(
    identity: ChassisIdentity, nb_cfg: int, keys: AgentKeys = METADATA_AGENT
) -> list[dict[str, Any]]:
    """The transaction of step 3."""
    return [map_set(_TABLE, _where(identity), "external_ids", {keys.sb_cfg_key: str(nb_cfg)})]


def follow_delay_max(agent_down_time: int) -> int:
    """The longest random delay before following a new C{nb_cfg}, in seconds."""
    return max(min(agent_down_time // 3, 10), 3)


Transact = Callable[[Sequence[dict[str, Any]], Sequence[int]], Deferred]


class Registration:
    """Keeps this chassis's C{Chassis_Private} row registered and current.

    @param transact: C{(operations, must_match) -> Deferred} on the Southbound
        (L{metaproxy.ovsdb.monitor.OvsdbMonitor.transact}).
    @param randint: C{(a, b) -> int}, the random delay (tests pass their own).
    @param keys: the agent registered as (the deployment shape's).
    """

    def __init__(
        self,
        clock: Any,
        transact: Transact,
        identity: ChassisIdentity,
        *,
        agent_down_time: int = 75,
        randint: Callable[[int, int], int] | None = None,
        keys: AgentKeys = METADATA_AGENT,
    ) -> None:
        self._clock = clock
        self.keys = keys
        self._transact = transact
        self.identity = identity
        self._delay_max = follow_delay_max(agent_down_time)
        self._randint = randint or secrets.SystemRandom().randint
        self._followed_once = False
        self._pending_call: Any = None
        self._latest_nb_cfg: int | None = None
        #: registrations and sb-cfg writes that succeeded (for tests and status)
        self.registered = 0
        self.followed = 0
        self.last_error = ""

    def register(self, nb_cfg: int) -> Deferred[None]:
        """Step 1 (and 2): register with C{nb_cfg}, the row's own."""
        ops = registration_operations(self.identity, nb_cfg, self.keys)
        d = self._transact(ops, [0])
        d.addCallbacks(self._registered, self._failed, errbackArgs=("register",))
        return d

    @property
    def agent_id(self) -> str:
        """The id registered (the shape's, for this chassis)."""
        return self.keys.agent_id(self.identity.name)

    def _registered(self, _results: object) -> None:
        if self.registered == 0 or self.last_error:
            if self.keys == METADATA_AGENT:
                log.info(
                    "Registered as the OVN metadata agent of chassis {chassis} "
                    "(agent id {agent_id}, bridge {bridge})",
                    chassis=self.identity.name,
                    agent_id=self.agent_id,
                    bridge=self.identity.bridge,
                )
            else:
                log.info(
                    "Registered as the {agent_type} of chassis {chassis}, in place of "
                    "{binary}'s metadata extension (agent id {agent_id}, bridge {bridge})",
                    agent_type=self.keys.agent_type,
                    binary=self.keys.binary,
                    chassis=self.identity.name,
                    agent_id=self.agent_id,
                    bridge=self.identity.bridge,
                )
        self.registered += 1
        self.last_error = ""

    def nb_cfg_changed(self, nb_cfg: int) -> None:
        """Step 3: C{SB_Global.nb_cfg} is now C{nb_cfg}."""
        self._latest_nb_cfg = nb_cfg
        if self._pending_call is not None and self._pending_call.active():
            return  # the pending write takes the latest value
        if not self._followed_once:
            self._followed_once = True
            delay = 0
        else:
            delay = self._randint(0, self._delay_max)
        self._pending_call = self._clock.callLater(delay, self._follow)

    def _follow(self) -> None:
        self._pending_call = None
        nb_cfg = self._latest_nb_cfg
        if nb_cfg is None:
            return
        d = self._transact(sb_cfg_operations(self.identity, nb_cfg, self.keys), [0])
        d.addCallbacks(self._followed, self._failed, errbackArgs=("follow nb_cfg",))

    def _followed(self, _results: object) -> None:
        self.followed += 1
        self.last_error = ""

    def _failed(self, failure: Failure, what: str) -> None:
        why = failure.getErrorMessage()
        if why != self.last_error:
            log.warn(
                "Chassis_Private {chassis}: could not {what}: {why}; "
                "trying again at the next Southbound change or reconnection",
                chassis=self.identity.name,
                what=what,
                why=why,
            )
        self.last_error = why

    def stop(self) -> None:
        if self._pending_call is not None and self._pending_call.active():
            self._pending_call.cancel()
        self._pending_call = None
