"""The rate limiter on a fake clock: base and burst windows, both families, bounded memory."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from metaproxy.guard.ratelimit import RateLimiter, Window


def limiter(base=(10, 10), burst=(10, 10), **kw):
    clock = Clock()
    clock.advance(1000)  # a period boundary: windows start empty and aligned
    return RateLimiter(clock, Window(*base), Window(*burst), **kw), clock


def admitted(lim, n, ns="r1", ip="10.0.0.5"):
    return sum(lim.check(ns, ip) == 0 for _ in range(n))


def test_limit_admits_exactly_the_limit_then_429_with_retry_after():
    """Base limit 2 (upstream's functional test): 2 admitted, the 3rd refused."""
    lim, clock = limiter(base=(60, 2), burst=(60, 100))
    assert admitted(lim, 2) == 2
    wait = lim.check("r1", "10.0.0.5")
    assert wait >= 1 and lim.rejected == 1


def test_ipv4_and_ipv6_are_limited_together():
    """Unlike haproxy's one stick table type, both families are limited at once."""
    lim, _ = limiter(base=(60, 2), burst=(60, 2))
    for ip in ("10.0.0.5", "2001:db8::5", "fe80::f816:3eff:fe00:1"):
        assert admitted(lim, 5, ip=ip) == 2


@pytest.mark.parametrize("versions, v4, v6", [((4,), 2, 5), ((6,), 5, 2), ((4, 6), 2, 2)])
def test_ip_versions_choose_the_families(versions, v4, v6):
    lim, _ = limiter(base=(60, 2), burst=(60, 2), ip_versions=versions)
    assert admitted(lim, 5, ip="10.0.0.5") == v4
    assert admitted(lim, 5, ip="2001:db8::5") == v6


def test_sources_are_per_namespace_and_address():
    """The same address behind two routers, and two addresses, are separate sources."""
    lim, _ = limiter(base=(60, 1), burst=(60, 1))
    assert lim.check("r1", "10.0.0.5") == 0
    assert lim.check("r2", "10.0.0.5") == 0
    assert lim.check("r1", "10.0.0.6") == 0
    assert lim.check("r1", "10.0.0.5") > 0


def test_burst_window_refuses_a_burst_the_base_allows():
    """Upstream: base 10/60 s with burst 2/5 s gives 2 at once, then 429; after the
    burst window has passed, 2 more."""
    lim, clock = limiter(base=(60, 10), burst=(5, 2))
    assert admitted(lim, 5) == 2
    clock.advance(10)
    assert admitted(lim, 5) == 2


def test_base_window_refuses_after_a_pause_in_the_burst():
    """Upstream: base 3/60 s, burst 2/5 s: 2 at once, a pause past the burst window, one
    more, and the next is over the base limit."""
    lim, clock = limiter(base=(60, 3), burst=(5, 2))
    assert admitted(lim, 2) == 2
    clock.advance(10)
    assert admitted(lim, 1) == 1
    assert lim.check("r1", "10.0.0.5") > 0


def test_retry_after_is_when_a_request_fits_again():
    """Asking again at Retry-After is admitted; a second before it is not."""
    lim, clock = limiter(base=(10, 4), burst=(10, 4))
    clock.advance(3)
    assert admitted(lim, 4) == 4
    wait = lim.check("r1", "10.0.0.5")
    assert wait > 1
    clock.advance(wait - 1)
    assert lim.check("r1", "10.0.0.5") > 0
    clock.advance(1)
    assert lim.check("r1", "10.0.0.5") == 0


def test_refused_requests_are_not_counted():
    """A guest that keeps asking while refused is admitted again once its admitted
    requests have aged out."""
    lim, clock = limiter(base=(10, 2), burst=(10, 2))
    assert admitted(lim, 2) == 2
    for _ in range(100):
        clock.advance(0.1)
        lim.check("r1", "10.0.0.5")
    clock.advance(20)
    assert admitted(lim, 2) == 2


def test_one_boot_fits_a_documented_setting():
    """README: burst 40 per 10 s lets one boot's ~28 requests through at once."""
    lim, _ = limiter(base=(60, 60), burst=(10, 40))
    assert admitted(lim, 28) == 28


def test_idle_sources_are_forgotten():
    """Sources idle for two of the longest window are dropped: memory follows the
    sources active lately, not every source ever seen."""
    lim, clock = limiter(base=(10, 5), burst=(5, 5))
    for i in range(1000):
        lim.check("r1", f"10.0.{i // 250}.{i % 250}")
    assert lim.sources == 1000
    clock.advance(41)
    lim.check("r1", "10.9.9.9")
    clock.advance(41)
    lim.check("r1", "10.9.9.9")
    assert lim.sources == 1


def test_an_active_source_is_kept_across_generations():
    lim, clock = limiter(base=(10, 3), burst=(10, 3))
    assert admitted(lim, 3) == 3
    for _ in range(6):  # 6 x 7 s: across two generations (20 s each)
        clock.advance(7)
        lim.check("r2", "10.0.0.9")
        assert lim.sources >= 1
    # the source's admitted requests are older than the window by now
    assert admitted(lim, 3) == 3


def test_sources_are_bounded_by_max_sources():
    """100,000 distinct sources within one window: memory stays under max_sources."""
    lim, _ = limiter(base=(60, 5), burst=(60, 5), max_sources=1000)
    for i in range(100_000):
        assert lim.check("n", f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}") == 0
        assert lim.sources <= 1000
    assert lim.evicted >= 99_000


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=80),
    st.integers(1, 8),
    st.sampled_from([1, 2, 5, 10]),
)
def test_never_more_than_the_limit_in_any_window(gaps, limit, seconds):
    """Whatever the timing, no stretch of `seconds` holds more than 2 x limit admitted
    requests (the sliding estimate is exact at period ends and at most doubles inside
    one, as haproxy's), and no period holds more than the limit."""
    lim, clock = limiter(base=(seconds, limit), burst=(seconds, limit))
    times = []
    for gap in gaps:
        clock.advance(gap)
        if lim.check("r", "10.0.0.1") == 0:
            times.append(clock.seconds())
    for t in times:
        assert sum(t <= u < t + seconds for u in times) <= 2 * limit
    periods = {}
    for t in times:
        periods[int(t // seconds)] = periods.get(int(t // seconds), 0) + 1
    assert max(periods.values(), default=0) <= limit


def test_bad_windows_and_versions_refused():
    with pytest.raises(ValueError):
        Window(0, 1)
    with pytest.raises(ValueError):
        Window(1, 0)
    with pytest.raises(ValueError):
        RateLimiter(Clock(), Window(1, 1), Window(1, 1), ip_versions=(5,))
