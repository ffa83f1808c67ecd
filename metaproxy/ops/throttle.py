"""Log lines that load or a guest can trigger: at most a few per interval.

A refusal that a guest (or a storm) can cause many times a second must not write as
many log lines. L{LogThrottle} is the one mechanism for that, whoever writes the line:

  - a place that logs its own refusals (the request policy, the connection bounds, the
    Nova endpoints) asks L{LogThrottle.allow} before each line, with the default limit
    of one line per interval, and says in the line it writes how many were left out
    since the last one (what C{allow} returns);
  - the log observer (L{metaproxy.ops.logs.ThrottleFilter}), which cannot rewrite the
    lines of others, keeps one per kind of line with C{limit} lines per window, and
    writes one line of its own when a window ends saying how many were left out
    (L{LogThrottle.take_left_out}).

Both need the same thing: pass C{limit} lines per window, count the rest, hand the count
to whoever reports it. A throttle is a few numbers and needs no timer; the observer,
which must report at the window's end, sets its own timer from L{LogThrottle.window_end}.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

__all__ = ["LogThrottle"]


class LogThrottle:
    """At most C{limit} log lines per window of C{interval} seconds; the lines left out
    are counted and reported with the next one written (or taken by L{take_left_out}).

    A window starts with the first line after the previous window ended.

    @ivar suppressed: lines left out and not reported yet.
    """

    def __init__(self, clock: IReactorTime, interval: float, limit: int = 1) -> None:
        self._clock = clock
        self.interval = interval
        self.limit = limit
        self._window_end = float("-inf")
        self._written = 0
        self.suppressed = 0

    @property
    def window_end(self) -> float:
        """When the current window ends (C{clock.seconds()})."""
        return self._window_end

    def allow(self) -> int | None:
        """C{None} if this line is to be left out; else how many were left out since
        the last line written (the caller says so in its line)."""
        now = self._clock.seconds()
        if now >= self._window_end:
            self._window_end = now + self.interval
            self._written = 0
        if self._written >= self.limit:
            self.suppressed += 1
            return None
        self._written += 1
        left_out, self.suppressed = self.suppressed, 0
        return left_out

    def take_left_out(self) -> int:
        """The lines left out and not reported yet, which the caller now reports."""
        left_out, self.suppressed = self.suppressed, 0
        return left_out
