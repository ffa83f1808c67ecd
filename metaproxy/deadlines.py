"""Many deadlines of one length on one reactor timer.

When every item gets the same timeout, deadlines come in the order items were added.
So the timer is set for the oldest, and when it fires every item past its deadline
expires and the timer is set again for the oldest left. It is cancelled when no item
is left, so a busy caller arms it about once per timeout instead of once per item.
Measured on the standard storm, a C{callLater} and a C{cancel} per request were the
largest cost of the Nova client after its Deferred, and of the server's request
timeouts before they were kept this way; the two users are
L{metaproxy.http.server.RequestTimeouts} and the Nova client's own timeouts.

A wall clock stepped back delays the expiries by the step, as it delays reactor timers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from twisted.internet.interfaces import IDelayedCall

__all__ = ["Deadlines"]

T = TypeVar("T")


class Deadlines(Generic[T]):
    """Items that expire C{timeout} seconds after they are added, unless discarded.

    @param clock: C{seconds()} and C{callLater()} (the reactor, or a C{Clock}).
    @param expired: called with each item whose deadline has passed, oldest first; the
        item is no longer held when it is called.
    @ivar timeout: the seconds each item is given.
    """

    def __init__(self, clock: Any, timeout: float, expired: Callable[[T], None]) -> None:
        self._clock = clock
        self.timeout = timeout
        self._expired = expired
        # item -> deadline, in the order added (= deadline order)
        self._waiting: dict[T, float] = {}
        self._call: IDelayedCall | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, item: T) -> None:
        """Expire C{item} after C{timeout} seconds, unless it is discarded first."""
        self._waiting[item] = self._clock.seconds() + self.timeout
        if self._call is None:
            self._call = self._clock.callLater(self.timeout, self._expire)

    def discard(self, item: T) -> None:
        """Forget C{item} (nothing happens if it is not there)."""
        if self._waiting.pop(item, None) is not None and not self._waiting:
            if self._call is not None:
                self._call.cancel()
                self._call = None

    def _expire(self) -> None:
        self._call = None
        now = self._clock.seconds()
        expired = []
        for item, deadline in self._waiting.items():
            if deadline > now:
                break
            expired.append(item)
        for item in expired:
            del self._waiting[item]
        for item in expired:
            self._expired(item)
        if self._waiting and self._call is None:
            oldest = next(iter(self._waiting.values()))
            self._call = self._clock.callLater(max(0.0, oldest - now), self._expire)
