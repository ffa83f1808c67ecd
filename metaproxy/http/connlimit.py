"""Bounds on the connections open at once, per socket and for the whole process.

A connection over a bound is accepted, answered 503 with C{Retry-After} and closed at
once (the request is not read): the namespace proxy gets a clear answer, never a hang
nor a connection that waits in the backlog forever. The counts are plain integers
(C{open}, C{refused}); the server also counts each refusal by bound in its
L{metaproxy.ops.metrics.RequestStats}, which adds up every namespace's and is what the
metrics export.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from metaproxy.ops.throttle import LogThrottle

__all__ = ["ConnectionLimit"]


class ConnectionLimit:
    """At most C{limit} connections open at once (0: no bound).

    @ivar open: connections open now.
    @ivar refused: connections refused so far because the bound was reached.
    """

    __slots__ = ("limit", "open", "refused", "_throttle")

    def __init__(self, limit: int = 0) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self.limit = limit
        self.open = 0
        self.refused = 0
        self._throttle: LogThrottle | None = None

    def try_open(self) -> bool:
        """Count one more connection if the bound allows it; else count a refusal."""
        if self.limit and self.open >= self.limit:
            self.refused += 1
            return False
        self.open += 1
        return True

    def close(self) -> None:
        """A connection counted by L{try_open} has ended."""
        self.open -= 1

    def throttle(self, clock: IReactorTime, interval: float) -> LogThrottle:
        """The log throttle for this bound's refusals (made on first use)."""
        if self._throttle is None:
            self._throttle = LogThrottle(clock, interval)
        return self._throttle
