"""metaproxy.ovsdb.slices: work run a slice per reactor turn, and a full copy's table
updates cut into parts, on a Clock."""

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock

from metaproxy.ovsdb.slices import run_in_slices, slice_updates
from tests.doubles import reactor_turn


def counted(done, slices, fail_at=None):
    for n in range(slices):
        if n:
            yield
        if n == fail_at:
            raise ValueError(f"slice {n} failed")
        done.append(n)


def test_the_first_slice_runs_at_once_then_one_per_reactor_turn() -> None:
    clock, done, fired = Clock(), [], []
    d = run_in_slices(clock, counted(done, 3))
    d.addCallback(fired.append)
    assert done == [0] and not fired
    reactor_turn(clock)
    assert done == [0, 1] and not fired
    reactor_turn(clock)
    assert done == [0, 1, 2] and fired == [None]
    assert clock.getDelayedCalls() == []


def test_work_that_fits_in_one_slice_is_done_before_the_call_returns() -> None:
    clock, done = Clock(), []
    d = run_in_slices(clock, counted(done, 1))
    assert done == [0] and d.called
    assert clock.getDelayedCalls() == []


def test_a_failing_slice_fails_the_deferred_and_stops() -> None:
    clock, done, failures = Clock(), [], []
    d = run_in_slices(clock, counted(done, 4, fail_at=1))
    d.addErrback(failures.append)
    reactor_turn(clock)
    assert done == [0]
    assert failures[0].check(ValueError) and "slice 1 failed" in str(failures[0].value)
    assert clock.getDelayedCalls() == []


def test_a_failing_first_slice_fails_at_once() -> None:
    failures = []
    run_in_slices(Clock(), counted([], 2, fail_at=0)).addErrback(failures.append)
    assert failures[0].check(ValueError)


def test_cancelled_it_runs_no_further_slice() -> None:
    clock, done, failures = Clock(), [], []
    d = run_in_slices(clock, counted(done, 3))
    d.addErrback(failures.append)
    d.cancel()
    assert failures[0].check(CancelledError)
    assert clock.getDelayedCalls() == []
    clock.advance(1)
    assert done == [0]


def test_updates_are_cut_into_parts_of_at_most_n_rows_in_order() -> None:
    updates = {
        "A": {"a1": {"initial": 1}, "a2": {"initial": 2}, "a3": {"initial": 3}},
        "B": {"b1": {"initial": 4}},
    }
    parts = list(slice_updates(updates, 2))
    assert parts == [
        {"A": {"a1": {"initial": 1}, "a2": {"initial": 2}}},
        {"A": {"a3": {"initial": 3}}, "B": {"b1": {"initial": 4}}},
    ]
    assert list(slice_updates(updates, 10)) == [updates]
    assert list(slice_updates({}, 2)) == [{}]


@pytest.mark.parametrize("bad", [[1, 2], {"A": [1]}, "x"])
def test_updates_not_of_the_form_are_passed_whole(bad) -> None:
    assert list(slice_updates(bad, 1)) == [bad]
