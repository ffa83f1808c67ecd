"""metaproxy.deadlines: many deadlines of one length on one timer (Clock-driven)."""

from __future__ import annotations

from twisted.internet.task import Clock

from metaproxy.deadlines import Deadlines


def make(timeout: float = 10.0):
    clock = Clock()
    expired: list[str] = []
    deadlines: Deadlines[str] = Deadlines(clock, timeout, expired.append)
    return clock, deadlines, expired


def test_items_expire_after_the_timeout_oldest_first():
    clock, deadlines, expired = make()
    deadlines.add("a")
    clock.advance(3)
    deadlines.add("b")
    clock.advance(6.9)
    assert expired == []
    clock.advance(0.1)  # a's 10 s
    assert expired == ["a"] and len(deadlines) == 1
    clock.advance(2.9)
    assert expired == ["a"]
    clock.advance(0.1)  # b's 10 s, 13 s after the start
    assert expired == ["a", "b"] and len(deadlines) == 0


def test_one_timer_however_many_items():
    clock, deadlines, _ = make()
    for i in range(100):
        deadlines.add(str(i))
    assert len(clock.getDelayedCalls()) == 1


def test_discarding_the_last_item_cancels_the_timer():
    clock, deadlines, expired = make()
    deadlines.add("a")
    deadlines.add("b")
    deadlines.discard("a")
    assert len(clock.getDelayedCalls()) == 1
    deadlines.discard("b")
    assert clock.getDelayedCalls() == []
    clock.advance(60)
    assert expired == []


def test_discarding_what_is_not_there_changes_nothing():
    clock, deadlines, expired = make()
    deadlines.discard("never")
    deadlines.add("a")
    deadlines.discard("never")
    clock.advance(10)
    assert expired == ["a"]


def test_a_discarded_item_does_not_expire_and_the_rest_do():
    clock, deadlines, expired = make()
    deadlines.add("a")
    clock.advance(1)
    deadlines.add("b")
    deadlines.discard("a")
    clock.advance(9)  # where a would have expired: the timer finds nothing due
    assert expired == []
    clock.advance(1)
    assert expired == ["b"]


def test_an_item_is_no_longer_held_when_its_expiry_is_called():
    clock = Clock()
    seen: list[int] = []
    deadlines: Deadlines[str] = Deadlines(clock, 5, lambda item: seen.append(len(deadlines)))
    deadlines.add("a")
    clock.advance(5)
    assert seen == [0]


def test_added_again_after_a_quiet_moment_the_timer_is_set_again():
    clock, deadlines, expired = make(2)
    deadlines.add("a")
    clock.advance(2)
    assert expired == ["a"] and clock.getDelayedCalls() == []
    clock.advance(30)
    deadlines.add("b")
    clock.advance(2)
    assert expired == ["a", "b"]


def test_an_item_due_a_moment_later_waits_for_its_own_deadline():
    clock, deadlines, expired = make()
    deadlines.add("a")
    clock.advance(0.5)
    deadlines.add("b")
    clock.advance(9.5)
    assert expired == ["a"]
    clock.advance(0.4)
    assert expired == ["a"]
    clock.advance(0.1)
    assert expired == ["a", "b"]
