"""The remotes of one database as a client sees them: the order it tries them in, each
one's state, the wait before the next attempt, and what it counts.

  - Order: the remotes are shuffled once per client (per process, in practice), so that
    the clients of a cluster do not all start with its first member, nor all move to the
    same one when a member goes away. Then they are tried in turn.
  - Backoff: after C{n} failed attempts in a row the wait is C{min(retry_max,
    retry_min * 2**n)}, of which a random part is taken between half and all of it
    ("equal jitter"): clients that lost the same member come back spread over time, and
    a member that is down still sees each client at most once per half-wait.
  - State: one of L{metaproxy.ovsdb.cluster.MEMBER_STATES} per remote. A change of state
    is logged once, with the reason; the same state again is not (a member refused at
    every attempt for an hour is one line).
  - Counts (plain integers, read when metrics are scraped): attempts per remote,
    refusals per remote and state.

Plain object: no reactor, no I/O but the log; the random source is passed in.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from twisted.logger import Logger

from metaproxy.ovsdb.cluster import USABLE
from metaproxy.ovsdb.remote import Remote

__all__ = ["Members"]

log = Logger("metaproxy.ovsdb")

_STATE_WORDS = {
    "unreachable": "unreachable",
    "cluster_disconnected": "refused (cluster_disconnected)",
    "stale": "refused (stale)",
    "no_database": "refused (no_database)",
    "failed": "cannot be monitored (failed)",
}


class Members:
    """@param database: its name, for the log.
    @param remotes: as configured (at least one).
    @param rng: C{shuffle} and C{uniform} (C{random.Random}); default: the process's.
    @param shuffle: shuffle the remotes (True), or keep the configured order.
    """

    def __init__(
        self,
        database: str,
        remotes: Sequence[Remote],
        *,
        retry_min: float,
        retry_max: float,
        rng: random.Random | None = None,
        shuffle: bool = True,
    ) -> None:
        self._database = database
        self._rng = rng if rng is not None else random.Random()
        order = list(remotes)
        if shuffle:
            self._rng.shuffle(order)
        #: the remotes in the order this client tries them
        self.order: tuple[Remote, ...] = tuple(order)
        self._retry_min = retry_min
        self._retry_max = max(retry_max, retry_min)
        self._next = 0
        self._failures = 0
        #: remote -> its state (L{metaproxy.ovsdb.cluster.MEMBER_STATES})
        self.states: dict[Remote, str] = dict.fromkeys(self.order, "unknown")
        #: remote -> connection attempts
        self.attempts: dict[Remote, int] = dict.fromkeys(self.order, 0)
        #: (remote, state) -> times the remote was refused or failed in that state
        self.refusals: dict[tuple[Remote, str], int] = {}

    def next_remote(self) -> Remote:
        """The remote to try now (counted as an attempt); the next call gives the one
        after it unless L{again} is called."""
        remote = self.order[self._next % len(self.order)]
        self._next = (self._next + 1) % len(self.order)
        self.attempts[remote] += 1
        return remote

    def again(self) -> None:
        """Try the remote just given once more first (a connection that worked and was
        lost: the member is likely still there)."""
        self._next = (self._next - 1) % len(self.order)

    def succeeded(self) -> None:
        """A connection is in use: the next failure waits the shortest time again."""
        self._failures = 0

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; each call counts one more failure."""
        full = min(self._retry_max, self._retry_min * (2 ** min(self._failures, 30)))
        self._failures += 1
        return self._rng.uniform(full / 2, full)

    def set_state(self, remote: Remote, state: str, why: str) -> None:
        """C{remote} is now in C{state}, for the reason C{why}; logged when it changed."""
        if state != USABLE:
            key = (remote, state)
            self.refusals[key] = self.refusals.get(key, 0) + 1
        if self.states.get(remote) == state:
            return
        self.states[remote] = state
        if state == USABLE:
            log.info(
                "OVSDB {database} at {remote} is usable: {why}",
                database=self._database,
                remote=str(remote),
                why=why,
            )
            return
        others = len(self.order) > 1
        log.warn(
            "OVSDB {database} at {remote} {word}: {why}; {then}",
            database=self._database,
            remote=str(remote),
            word=_STATE_WORDS.get(state, state),
            state=state,
            why=why,
            then="trying the other members" if others else "trying it again with backoff",
        )
