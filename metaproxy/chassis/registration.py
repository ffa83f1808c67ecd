"""Registering as the chassis's OVN metadata agent, and staying alive in neutron-server's
agent list.

neutron-server lists an OVN metadata agent for every C{Chassis_Private} row whose
C{external_ids} hold C{neutron:ovn-metadata-id}, and calls it alive while the number in
C{neutron:ovn-metadata-sb-cfg} is at most one behind C{NB_Global.nb_cfg} (or the
chassis's C{nb_cfg_timestamp}, which ovn-controller writes, is recent). So, on the
chassis's own C{Chassis_Private} row:

  1. at every (re)synchronisation: remove the keys of the other agent
     (C{neutron-ovn-agent}'s C{neutron:ovn-neutron-agent-id}, C{-sb-cfg},
     C{neutron:description-neutron-agent}: one agent per chassis), add
     C{neutron:ovn-metadata-id} if absent (an id already there is kept), set
     C{neutron:ovn-bridge} and set C{neutron:ovn-metadata-sb-cfg} to the row's own
     C{nb_cfg};
  2. when ovn-controller re-creates the row (it restarted): the same again;
  3. when C{SB_Global.nb_cfg} changes: set C{neutron:ovn-metadata-sb-cfg} to it; the
     first change at once, later ones after a random 0 to C{max(3, min(10,
     agent_down_time // 3))} seconds, so that a cloud's agents do not all write in the
     same instant (neutron-server is told within the delay, well inside
     C{agent_down_time}).

C{neutron:description-metadata} is neutron-server's (an operator's agent description):
it is never written here, and kept. A transaction that fails is logged and done again
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

METADATA_ID_KEY = "neutron:ovn-metadata-id"
METADATA_SB_CFG_KEY = "neutron:ovn-metadata-sb-cfg"
OVN_BRIDGE_KEY = "neutron:ovn-bridge"
METADATA_DESCRIPTION_KEY = "neutron:description-metadata"
#: What neutron-ovn-agent (the metadata agent's successor) writes: removed, so that
#: neutron-server does not list two agents for the chassis.
OTHER_AGENT_KEYS = (
    "neutron:ovn-neutron-agent-sb-cfg",
    "neutron:description-neutron-agent",
    "neutron:ovn-neutron-agent-id",
)
_TABLE = "Chassis_Private"


def _where(identity: ChassisIdentity) -> list[Any]:
    return [["name", "==", identity.name]]


def registration_operations(identity: ChassisIdentity, nb_cfg: int) -> list[dict[str, Any]]:
    """The transaction of step 1 (the row must exist: operation 0 must match)."""
    where = _where(identity)
    return [
        map_remove(_TABLE, where, "external_ids", OTHER_AGENT_KEYS),
        map_add(_TABLE, where, "external_ids", {METADATA_ID_KEY: identity.agent_id}),
        map_set(
            _TABLE,
            where,
            "external_ids",
            {OVN_BRIDGE_KEY: identity.bridge, METADATA_SB_CFG_KEY: str(nb_cfg)},
        ),
    ]


def sb_cfg_operations(identity: ChassisIdentity, nb_cfg: int) -> list[dict[str, Any]]:
    """The transaction of step 3."""
    return [map_set(_TABLE, _where(identity), "external_ids", {METADATA_SB_CFG_KEY: str(nb_cfg)})]


def follow_delay_max(agent_down_time: int) -> int:
    """The longest random delay before following a new C{nb_cfg}, in seconds."""
    return max(min(agent_down_time // 3, 10), 3)


Transact = Callable[[Sequence[dict[str, Any]], Sequence[int]], Deferred]


class Registration:
    """Keeps this chassis's C{Chassis_Private} row registered and current.

    @param transact: C{(operations, must_match) -> Deferred} on the Southbound
        (L{metaproxy.ovsdb.monitor.OvsdbMonitor.transact}).
    @param randint: C{(a, b) -> int}, the random delay (tests pass their own).
    """

    def __init__(
        self,
        clock: Any,
        transact: Transact,
        identity: ChassisIdentity,
        *,
        agent_down_time: int = 75,
        randint: Callable[[int, int], int] | None = None,
    ) -> None:
        self._clock = clock
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
        ops = registration_operations(self.identity, nb_cfg)
        d = self._transact(ops, [0])
        d.addCallbacks(self._registered, self._failed, errbackArgs=("register",))
        return d

    def _registered(self, _results: object) -> None:
        if self.registered == 0 or self.last_error:
            log.info(
                "Registered as the OVN metadata agent of chassis {chassis} "
                "(agent id {agent_id}, bridge {bridge})",
                chassis=self.identity.name,
                agent_id=self.identity.agent_id,
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
        d = self._transact(sb_cfg_operations(self.identity, nb_cfg), [0])
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
