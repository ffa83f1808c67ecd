"""Rate limiting per (namespace, source address), IPv4 and IPv6 alike.

Neutron limits metadata requests in haproxy (docs/upstream.md, "Rate limiting in
haproxy"): two stick tables, a base window and a burst window, C{http_req_rate(<window>)}
per source, 429 above the limit, and only one address family at a time. L{RateLimiter}
keeps the same two windows in the agent, keyed by the namespace and the source address,
so both families are limited together and an address reused behind two routers is two
sources.

Each window is counted the way haproxy's C{http_req_rate} is: a counter for the current
period and one for the period before, the rate being C{previous * (1 - elapsed
fraction) + current} (a sliding window, two integers per source). A request is admitted
when the rate, itself included, is at most the limit in B{both} windows; only admitted
requests are counted, so a guest that keeps asking while refused gets its answers again
as soon as its admitted requests age out, and the C{Retry-After} it is given is exact.

Memory is bounded: sources live in two generations of dicts. Every C{2 x} the longest
window the older generation is dropped whole (a source idle that long has no say in any
window any more) and the current one becomes the older; a source seen again moves to the
current one. C{max_sources} caps the two together: reaching it drops the older
generation at once (C{evicted} counts what was dropped that way).

C{rejected} and C{evicted} are plain integers, exported by L{RateLimiter.metric_samples}
when metrics are scraped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import attrs
from twisted.internet.interfaces import IReactorTime

from metaproxy.ops.metrics import Sample

__all__ = ["Window", "RateLimiter"]


@attrs.frozen
class Window:
    """At most C{limit} requests per C{seconds} (a sliding window)."""

    seconds: float
    limit: int

    def __attrs_post_init__(self) -> None:
        if self.seconds <= 0 or self.limit < 1:
            raise ValueError("a window needs seconds > 0 and a limit >= 1")


class _Source:
    """One source's counters: for each window, its period number, the count in that
    period and the count in the period before."""

    __slots__ = (
        "base_period",
        "base_now",
        "base_before",
        "burst_period",
        "burst_now",
        "burst_before",
    )

    def __init__(self) -> None:
        self.base_period = self.burst_period = -2
        self.base_now = self.base_before = self.burst_now = self.burst_before = 0


def _wait(
    period: int, now_count: int, before_count: int, position: float, seconds: float, limit: int
) -> float:
    """Seconds until one more request fits in a window whose current period is
    C{period} (counts as given, already rolled to it) at C{position} (0..1) into it;
    0 if it fits now."""
    fraction = 1.0 - position
    if before_count * fraction + now_count + 1 <= limit:
        return 0.0
    if now_count + 1 > limit:
        # not before the next period, and then until this period's count has aged enough
        later = max(0.0, 1.0 - (limit - 1) / now_count) if now_count else 0.0
        return (1.0 - position) * seconds + later * seconds
    # within this period, once the previous period's share has aged enough
    needed = 1.0 - (limit - 1 - now_count) / before_count
    return max(0.0, (needed - position) * seconds)


class RateLimiter:
    """The base and burst windows of every source.

    @ivar rejected: requests refused so far.
    @ivar evicted: sources dropped early because C{max_sources} was reached.
    """

    def __init__(
        self,
        clock: IReactorTime,
        base: Window,
        burst: Window,
        *,
        ip_versions: Iterable[int] = (4, 6),
        max_sources: int = 100_000,
    ) -> None:
        self._clock = clock
        self.base = base
        self.burst = burst
        versions = frozenset(ip_versions)
        if not versions or not versions <= {4, 6}:
            raise ValueError("ip_versions must be 4, 6 or both")
        self._v4 = 4 in versions
        self._v6 = 6 in versions
        if max_sources < 1:
            raise ValueError("max_sources must be at least 1")
        self._max_sources = max_sources
        self._lifetime = 2.0 * max(base.seconds, burst.seconds)
        self._current: dict[tuple[str, str], _Source] = {}
        self._older: dict[tuple[str, str], _Source] = {}
        self._rotate_at = clock.seconds() + self._lifetime
        self.rejected = 0
        self.evicted = 0

    @property
    def sources(self) -> int:
        """Sources currently remembered."""
        return len(self._current) + len(self._older)

    def limits(self, ip: str) -> bool:
        """Whether requests from address C{ip} are limited (its family is)."""
        return self._v6 if ":" in ip else self._v4

    def check(self, namespace_id: str, ip: str) -> int:
        """Count one request from C{ip} in namespace C{namespace_id}.

        @return: 0 if admitted (and counted), else the whole seconds after which the
            source may ask again (at least 1): the request is refused and not counted.
        """
        if ":" in ip:
            if not self._v6:
                return 0
        elif not self._v4:
            return 0
        now = self._clock.seconds()
        if now >= self._rotate_at:
            self._rotate(now)
        key = (namespace_id, ip)
        source = self._current.get(key)
        if source is None:
            source = self._older.pop(key, None)
            if source is None:
                if len(self._current) + len(self._older) >= self._max_sources:
                    # full: the older generation goes now (the current one too if it
                    # alone is full), and the current one becomes the older
                    self.evicted += len(self._older)
                    if len(self._current) >= self._max_sources:
                        self.evicted += len(self._current)
                        self._current = {}
                    self._rotate(now)
                source = _Source()
            self._current[key] = source

        base, burst = self.base, self.burst
        position = now / base.seconds
        period = math.floor(position)
        position -= period
        if source.base_period != period:
            source.base_before = source.base_now if source.base_period == period - 1 else 0
            source.base_now = 0
            source.base_period = period
        base_wait = _wait(
            period, source.base_now, source.base_before, position, base.seconds, base.limit
        )

        burst_position = now / burst.seconds
        burst_period = math.floor(burst_position)
        burst_position -= burst_period
        if source.burst_period != burst_period:
            source.burst_before = source.burst_now if source.burst_period == burst_period - 1 else 0
            source.burst_now = 0
            source.burst_period = burst_period
        burst_wait = _wait(
            burst_period,
            source.burst_now,
            source.burst_before,
            burst_position,
            burst.seconds,
            burst.limit,
        )

        if base_wait == 0.0 and burst_wait == 0.0:
            source.base_now += 1
            source.burst_now += 1
            return 0
        self.rejected += 1
        return max(1, math.ceil(max(base_wait, burst_wait) - 1e-9))

    def _rotate(self, now: float) -> None:
        self._older = self._current
        self._current = {}
        self._rotate_at = now + self._lifetime

    def metric_samples(self) -> list[Sample]:
        """C{evicted} as a metric (L{metaproxy.ops.metrics.Metrics.add_source}); C{rejected}
        is exported by the policy that answers those requests 429, as
        C{metaproxy_rate_limited_total}."""
        return [
            Sample(
                "metaproxy_rate_limit_evicted_sources_total",
                "counter",
                "Sources (namespace, address) the rate limiter forgot before they were "
                "idle for twice the longest window, because [metaproxy] "
                "rate_limit_max_sources was reached.",
                (),
                self.evicted,
            ),
        ]
