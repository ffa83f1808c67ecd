"""The coalescing TTL cache: single flight, TTL, fresh, bounds, errors, counters."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from metaproxy.resolve.base import LookupUnavailable, Port
from metaproxy.resolve.cache import CachingBackend

PORT = Port("p1", "n1", "fa:16:3e:00:00:01", ("10.0.0.5",), "vm-1", "proj")
OTHER = Port("p2", "n1", "fa:16:3e:00:00:02", ("10.0.0.5",), "vm-2", "proj")


class PendingBackend:
    """Records every call and hands back an unfired Deferred the test fires later."""

    name = "pending"

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], Deferred]] = []

    def _call(self, method: str, *args: Any) -> Deferred:
        d: Deferred = Deferred()
        self.calls.append((method, args, d))
        return d

    def router_networks(self, router_id: str) -> Deferred:
        return self._call("router_networks", router_id)

    def ports_by_ip(self, networks: Any, ip: str) -> Deferred:
        return self._call("ports_by_ip", networks, ip)

    def ports_by_mac(self, networks: Any, mac: str) -> Deferred:
        return self._call("ports_by_mac", networks, mac)


class AnsweringBackend:
    """Answers at once (like the table) with C{answer}, counting calls."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def router_networks(self, router_id: str) -> Deferred:
        self.calls.append(("router_networks", (router_id,)))
        return succeed(self.answer)

    def ports_by_ip(self, networks: Any, ip: str) -> Deferred:
        self.calls.append(("ports_by_ip", (networks, ip)))
        return succeed(self.answer)

    def ports_by_mac(self, networks: Any, mac: str) -> Deferred:
        self.calls.append(("ports_by_mac", (networks, mac)))
        return succeed(self.answer)


def outcome(d: Deferred) -> list[object]:
    """Collects what C{d} fires with (an empty list while it has not fired)."""
    box: list[object] = []
    d.addBoth(box.append)
    return box


def fired(d: Deferred) -> object:
    """The result of an already-fired Deferred."""
    box = outcome(d)
    assert box, "the Deferred has not fired"
    assert not isinstance(box[0], Failure), box[0]
    return box[0]


def counters(cache: CachingBackend) -> tuple[int, int, int, int]:
    return cache.hits, cache.misses, cache.coalesced, cache.failures


# --- TTL ---------------------------------------------------------------------------------


def test_second_lookup_within_ttl_makes_no_backend_call() -> None:
    """A kept answer serves the next lookup of the same key without a backend call."""
    backend, clock = AnsweringBackend([PORT]), Clock()
    cache = CachingBackend(backend, clock, ttl=10)
    assert fired(cache.ports_by_ip(("n1",), "10.0.0.5")) == [PORT]
    clock.advance(9.9)
    assert fired(cache.ports_by_ip(["n1"], "10.0.0.5")) == [PORT]
    assert len(backend.calls) == 1
    assert counters(cache) == (1, 1, 0, 0)


def test_lookup_after_ttl_calls_the_backend_again() -> None:
    """Once the TTL has passed the answer is dropped and the backend asked again."""
    backend, clock = AnsweringBackend(("n1",)), Clock()
    cache = CachingBackend(backend, clock, ttl=10)
    fired(cache.router_networks("r1"))
    clock.advance(10)
    backend.answer = ("n1", "n2")
    assert fired(cache.router_networks("r1")) == ("n1", "n2")
    assert backend.calls == [("router_networks", ("r1",))] * 2
    assert counters(cache) == (0, 2, 0, 0)
    assert len(cache) == 1


def test_keys_are_method_networks_and_address() -> None:
    """Different methods, networks or addresses are different keys."""
    backend = AnsweringBackend([PORT])
    cache = CachingBackend(backend, Clock(), ttl=10)
    for _ in range(2):
        fired(cache.ports_by_ip(("n1",), "10.0.0.5"))
        fired(cache.ports_by_ip(("n1", "n2"), "10.0.0.5"))
        fired(cache.ports_by_ip(("n1",), "10.0.0.6"))
        fired(cache.ports_by_mac(("n1",), "10.0.0.5"))
        fired(cache.router_networks("10.0.0.5"))
    assert len(backend.calls) == 5
    assert backend.calls[1] == ("ports_by_ip", (("n1", "n2"), "10.0.0.5"))
    assert counters(cache) == (5, 5, 0, 0)


def test_clock_going_back_does_not_keep_answers_alive() -> None:
    """An answer stored "in the future" (the clock jumped back) counts as expired."""
    backend, clock = AnsweringBackend([PORT]), Clock()
    clock.advance(1000)
    cache = CachingBackend(backend, clock, ttl=10)
    fired(cache.ports_by_ip(("n1",), "10.0.0.5"))
    clock.rightNow = 500.0
    fired(cache.ports_by_ip(("n1",), "10.0.0.5"))
    assert len(backend.calls) == 2


def test_disabled_cache_keeps_nothing_but_still_coalesces() -> None:
    """Disabled: every sequential lookup calls the backend; concurrent ones share a call."""
    backend = PendingBackend()
    cache = CachingBackend(backend, Clock(), ttl=10, enabled=False)
    assert not cache.enabled
    first, second = cache.ports_by_ip(("n1",), "10.0.0.5"), cache.ports_by_ip(("n1",), "10.0.0.5")
    assert len(backend.calls) == 1
    backend.calls[0][2].callback([PORT])
    assert fired(first) == fired(second) == [PORT]
    assert len(cache) == 0
    third = outcome(cache.ports_by_ip(("n1",), "10.0.0.5"))
    assert len(backend.calls) == 2 and third == []
    assert counters(cache) == (0, 2, 1, 0)


def test_zero_ttl_keeps_nothing() -> None:
    """C{ttl=0} is the same as disabled."""
    backend = AnsweringBackend([PORT])
    cache = CachingBackend(backend, Clock(), ttl=0)
    fired(cache.ports_by_mac(("n1",), "fa:16:3e:00:00:01"))
    fired(cache.ports_by_mac(("n1",), "fa:16:3e:00:00:01"))
    assert len(backend.calls) == 2 and len(cache) == 0 and not cache.enabled


@pytest.mark.parametrize(("ttl", "max_entries"), [(-1, 10), (float("nan"), 10), (5, 0)])
def test_bad_settings_are_refused(ttl: float, max_entries: int) -> None:
    """A negative or NaN TTL, or room for no entry, is a ValueError."""
    with pytest.raises(ValueError):
        CachingBackend(AnsweringBackend([]), Clock(), ttl=ttl, max_entries=max_entries)


# --- single flight -----------------------------------------------------------------------


def test_28_concurrent_lookups_share_one_backend_call() -> None:
    """One boot's 28 concurrent lookups make one backend call; each gets its own Deferred
    and all get the answer, which is then kept."""
    backend = PendingBackend()
    cache = CachingBackend(backend, Clock(), ttl=10)
    waiting = [cache.ports_by_ip(("n1",), "10.0.0.5") for _ in range(28)]
    assert len({id(d) for d in waiting}) == 28
    assert len(backend.calls) == 1 and cache.in_flight == 1
    assert backend.calls[0][:2] == ("ports_by_ip", (("n1",), "10.0.0.5"))
    results = [outcome(d) for d in waiting]
    assert results == [[]] * 28
    backend.calls[0][2].callback([PORT])
    assert results == [[[PORT]]] * 28
    assert cache.in_flight == 0
    assert counters(cache) == (0, 1, 27, 0)
    assert fired(cache.ports_by_ip(("n1",), "10.0.0.5")) == [PORT]
    assert len(backend.calls) == 1


def test_an_error_reaches_every_waiter_and_is_not_kept() -> None:
    """A failed backend call fails every waiter with the same error; the next lookup asks
    the backend again."""
    backend = PendingBackend()
    cache = CachingBackend(backend, Clock(), ttl=10)
    results = [outcome(cache.router_networks("r1")) for _ in range(3)]
    backend.calls[0][2].errback(LookupUnavailable("neutron down"))
    for box in results:
        (failure,) = box
        assert isinstance(failure, Failure)
        assert failure.check(LookupUnavailable) and str(failure.value) == "neutron down"
    assert len(cache) == 0 and cache.in_flight == 0
    again = outcome(cache.router_networks("r1"))
    assert len(backend.calls) == 2 and again == []
    backend.calls[1][2].callback(("n1",))
    assert again == [("n1",)]
    assert counters(cache) == (0, 2, 2, 1)


def test_a_backend_raising_at_once_fails_the_lookup() -> None:
    """A backend method that raises instead of returning a failed Deferred still fails the
    lookup's Deferred, and nothing is kept."""

    class Raising(AnsweringBackend):
        def ports_by_ip(self, networks: Any, ip: str) -> Deferred:
            raise ZeroDivisionError("boom")

    cache = CachingBackend(Raising([]), Clock(), ttl=10)
    (failure,) = outcome(cache.ports_by_ip(("n1",), "10.0.0.5"))
    assert isinstance(failure, Failure) and failure.check(ZeroDivisionError)
    assert len(cache) == 0 and cache.in_flight == 0 and cache.failures == 1


def test_cancelling_one_waiter_leaves_the_others_and_the_call() -> None:
    """A cancelled waiter gets CancelledError; the backend call goes on, the other waiters
    get the answer and it is kept."""
    backend = PendingBackend()
    cache = CachingBackend(backend, Clock(), ttl=10)
    first = cache.ports_by_ip(("n1",), "10.0.0.5")
    second = outcome(cache.ports_by_ip(("n1",), "10.0.0.5"))
    first.cancel()
    (cancelled,) = outcome(first)
    assert isinstance(cancelled, Failure) and cancelled.check(CancelledError)
    assert not backend.calls[0][2].called
    backend.calls[0][2].callback([PORT])
    assert second == [[PORT]]
    assert fired(cache.ports_by_ip(("n1",), "10.0.0.5")) == [PORT]


def test_cancelled_waiter_is_skipped_when_the_call_fails() -> None:
    """A failing call after one waiter was cancelled fails the other waiters only."""
    backend = PendingBackend()
    cache = CachingBackend(backend, Clock(), ttl=10)
    first = cache.ports_by_mac(("n1",), "fa:16:3e:00:00:01")
    second = outcome(cache.ports_by_mac(("n1",), "fa:16:3e:00:00:01"))
    first.cancel()
    assert outcome(first)[0].check(CancelledError)
    backend.calls[0][2].errback(LookupUnavailable("timeout"))
    (failure,) = second
    assert isinstance(failure, Failure) and failure.check(LookupUnavailable)
    assert cache.failures == 1


def test_a_waiter_callback_looking_up_again_gets_the_new_answer() -> None:
    """Waiters are fired after the answer is kept and the flight closed, so a lookup made
    from a waiter's callback is a hit, not a join of the finished flight."""
    backend = PendingBackend()
    cache = CachingBackend(backend, Clock(), ttl=10)
    again: list[object] = []
    d = cache.ports_by_ip(("n1",), "10.0.0.5")
    d.addCallback(lambda _: cache.ports_by_ip(("n1",), "10.0.0.5").addCallback(again.append))
    backend.calls[0][2].callback([PORT])
    assert again == [[PORT]] and len(backend.calls) == 1 and cache.hits == 1


# --- fresh -------------------------------------------------------------------------------


def test_fresh_bypasses_the_kept_answer_and_replaces_it() -> None:
    """C{fresh=True} calls the backend despite a kept answer and keeps the new answer."""
    backend, clock = AnsweringBackend([PORT]), Clock()
    cache = CachingBackend(backend, clock, ttl=10)
    assert CachingBackend.accepts_fresh is True
    fired(cache.ports_by_ip(("n1",), "10.0.0.5"))
    backend.answer = [OTHER]
    clock.advance(5)
    assert fired(cache.ports_by_ip(("n1",), "10.0.0.5", fresh=True)) == [OTHER]
    assert len(backend.calls) == 2
    clock.advance(9)  # 14 s after the first answer, 9 s after the fresh one
    assert fired(cache.ports_by_ip(("n1",), "10.0.0.5")) == [OTHER]
    assert len(backend.calls) == 2
    assert fired(cache.router_networks("r1", fresh=True)) == [OTHER]
    assert fired(cache.ports_by_mac(("n1",), "m", fresh=True)) == [OTHER]
    assert len(backend.calls) == 4


def test_fresh_lookups_share_a_fresh_call_but_not_an_older_one() -> None:
    """A fresh lookup does not join an ordinary call already in flight (it may predate
    the change); it joins a fresh one, and ordinary lookups join the fresh call too."""
    backend = PendingBackend()
    cache = CachingBackend(backend, Clock(), ttl=10)
    old = outcome(cache.ports_by_ip(("n1",), "10.0.0.5"))
    fresh1 = outcome(cache.ports_by_ip(("n1",), "10.0.0.5", fresh=True))
    assert len(backend.calls) == 2
    fresh2 = outcome(cache.ports_by_ip(("n1",), "10.0.0.5", fresh=True))
    plain = outcome(cache.ports_by_ip(("n1",), "10.0.0.5"))
    assert len(backend.calls) == 2
    backend.calls[1][2].callback([OTHER])
    assert fresh1 == fresh2 == plain == [[OTHER]]
    # the older call lands last: its waiter gets its answer, but it does not overwrite
    backend.calls[0][2].callback([PORT])
    assert old == [[PORT]]
    assert fired(cache.ports_by_ip(("n1",), "10.0.0.5")) == [OTHER]
    assert len(backend.calls) == 2


def test_older_call_landing_first_is_not_kept_over_the_newer_one() -> None:
    """When a fresh call supersedes an ordinary one and the ordinary one lands first, its
    answer goes to its waiters only; the fresh answer is what is kept."""
    backend = PendingBackend()
    cache = CachingBackend(backend, Clock(), ttl=10)
    old = outcome(cache.router_networks("r1"))
    new = outcome(cache.router_networks("r1", fresh=True))
    backend.calls[0][2].callback(("n-old",))
    assert old == [("n-old",)] and new == []
    assert len(cache) == 0
    backend.calls[1][2].callback(("n-new",))
    assert new == [("n-new",)]
    assert fired(cache.router_networks("r1")) == ("n-new",)


# --- bounds and clear --------------------------------------------------------------------


def test_size_is_bounded_dropping_the_oldest() -> None:
    """At most C{max_entries} answers are kept; the oldest goes first."""
    backend, clock = AnsweringBackend([PORT]), Clock()
    cache = CachingBackend(backend, clock, ttl=100, max_entries=3)
    for i in range(10):
        fired(cache.ports_by_ip(("n1",), f"10.0.0.{i}"))
        clock.advance(1)
        assert len(cache) <= 3
    assert len(cache) == 3
    fired(cache.ports_by_ip(("n1",), "10.0.0.9"))
    fired(cache.ports_by_ip(("n1",), "10.0.0.7"))
    assert len(backend.calls) == 10
    fired(cache.ports_by_ip(("n1",), "10.0.0.6"))
    assert len(backend.calls) == 11


def test_refreshed_answer_moves_to_the_back_of_the_eviction_order() -> None:
    """A key stored again (fresh) counts as new: older keys are evicted before it."""
    backend, clock = AnsweringBackend([PORT]), Clock()
    cache = CachingBackend(backend, clock, ttl=100, max_entries=3)
    fired(cache.router_networks("a"))
    fired(cache.router_networks("b"))
    fired(cache.router_networks("a", fresh=True))
    fired(cache.router_networks("c"))
    assert len(cache) == 3
    fired(cache.router_networks("d"))  # evicts b, the oldest stored
    calls = len(backend.calls)
    fired(cache.router_networks("a"))
    assert len(backend.calls) == calls
    fired(cache.router_networks("b"))
    assert len(backend.calls) == calls + 1


def test_expired_answers_are_dropped_when_storing() -> None:
    """Storing an answer first drops the expired ones, so the cache does not sit full of
    dead entries."""
    backend, clock = AnsweringBackend([PORT]), Clock()
    cache = CachingBackend(backend, clock, ttl=10, max_entries=1000)
    for i in range(50):
        fired(cache.ports_by_ip(("n1",), f"10.0.0.{i}"))
    clock.advance(5)
    fired(cache.ports_by_ip(("n1",), "10.0.1.1"))
    assert len(cache) == 51
    clock.advance(6)  # the first 50 are expired, the last is not
    fired(cache.ports_by_ip(("n1",), "10.0.1.2"))
    assert len(cache) == 2


def test_clear_forgets_answers_and_calls_in_flight() -> None:
    """clear() drops kept answers; a call in flight at the time still answers its
    waiters but its answer is not kept (it may predate a reload)."""
    backend = PendingBackend()
    cache = CachingBackend(backend, Clock(), ttl=10)
    kept = cache.router_networks("r1")
    backend.calls[0][2].callback(("n1",))
    fired(kept)
    pending = outcome(cache.router_networks("r2"))
    cache.clear()
    assert len(cache) == 0 and cache.in_flight == 0
    after = outcome(cache.router_networks("r2"))
    assert len(backend.calls) == 3
    backend.calls[1][2].callback(("n-before",))
    assert pending == [("n-before",)] and after == []
    backend.calls[2][2].callback(("n-after",))
    assert after == [("n-after",)]
    assert fired(cache.router_networks("r2")) == ("n-after",)
    outcome(cache.router_networks("r1"))
    assert len(backend.calls) == 4


def test_name_and_backend_are_exposed() -> None:
    """The cache names its backend (for error messages) and exposes it."""
    backend = PendingBackend()
    cache = CachingBackend(backend, Clock(), ttl=3)
    assert cache.name == "pending" and cache.backend is backend and cache.ttl == 3
    assert CachingBackend(AnsweringBackend([]), Clock(), 1).name == "AnsweringBackend"


# --- young flights only: a backend with join_within ------------------------------------


class BoundedBackend(PendingBackend):
    """A backend whose calls can still be answered only C{join_within} s after they
    began (the RPC backend's first call's bound)."""

    join_within = 3.0


def test_a_call_older_than_join_within_is_not_joined() -> None:
    backend = BoundedBackend()
    clock = Clock()
    cache = CachingBackend(backend, clock, ttl=30, enabled=False)
    first = outcome(cache.ports_by_ip(("n1",), "10.0.0.5"))
    clock.advance(2.9)
    joined = outcome(cache.ports_by_ip(("n1",), "10.0.0.5"))
    assert len(backend.calls) == 1 and cache.coalesced == 1
    clock.advance(0.1)  # the call is 3 s old: a late lookup makes a call of its own
    late = outcome(cache.ports_by_ip(("n1",), "10.0.0.5"))
    assert len(backend.calls) == 2 and cache.misses == 2
    later = outcome(cache.ports_by_ip(("n1",), "10.0.0.5"))  # joins the new one
    assert len(backend.calls) == 2 and cache.coalesced == 2
    # the old call fails: only its own waiters get the error
    backend.calls[0][2].errback(LookupUnavailable("lost"))
    assert isinstance(first[0], Failure) and isinstance(joined[0], Failure)
    assert late == [] and later == []
    backend.calls[1][2].callback([PORT])
    assert late == [[PORT]] and later == [[PORT]]


def test_without_join_within_any_call_in_flight_is_joined() -> None:
    backend = PendingBackend()
    clock = Clock()
    cache = CachingBackend(backend, clock, ttl=30, enabled=False)
    cache.ports_by_ip(("n1",), "10.0.0.5")
    clock.advance(60)
    cache.ports_by_ip(("n1",), "10.0.0.5")
    assert len(backend.calls) == 1 and cache.coalesced == 1
