"""Log lines that load or a guest can trigger, at most one per interval.

A refusal that a guest (or a storm) can cause many times a second must not write as
many log lines: L{LogThrottle} lets one line through per interval and counts the ones
it holds back, for the next line to say how many there were.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

__all__ = ["LogThrottle"]


class LogThrottle:
    """At most one log line per C{interval} seconds; the lines left out are counted and
    reported with the next one written."""

    def __init__(self, clock: IReactorTime, interval: float) -> None:
        self._clock = clock
        self.interval = interval
        self._next = float("-inf")
        self.suppressed = 0

    def allow(self) -> int | None:
        """C{None} if this line is to be left out; else how many were left out since
        the last line written (the caller says so in its line)."""
        now = self._clock.seconds()
        if now < self._next:
            self.suppressed += 1
            return None
        self._next = now + self.interval
        left_out, self.suppressed = self.suppressed, 0
        return left_out
