"""metaproxy.ovsdb.slices: work run a slice per reactor turn, and a full copy's table
updates cut into parts, on a Clock."""

import gc

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock

from metaproxy.ovsdb.slices import hold_full_collections, run_in_slices, slice_updates
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


@pytest.fixture
def oldest_threshold():
    """The collector's thresholds as the test found them, given back after it."""
    saved = gc.get_threshold()
    yield saved[2]
    gc.set_threshold(*saved)


def test_full_collections_are_held_off_while_slices_run_and_given_back_after(
    oldest_threshold,
) -> None:
    clock, done, held = Clock(), [], []
    d = run_in_slices(clock, counted(done, 3))
    assert gc.get_threshold()[2] > 10**9  # held off
    reactor_turn(clock)
    assert gc.get_threshold()[2] > 10**9
    d.addCallback(lambda _: held.append(gc.get_threshold()[2]))
    reactor_turn(clock)
    assert d.called
    assert held[0] > 10**9  # still held while the callbacks run
    assert gc.get_threshold()[2] == oldest_threshold


def test_work_started_by_a_finished_runs_callback_keeps_the_hold(oldest_threshold) -> None:
    clock, first, second = Clock(), [], []
    held = []
    d = run_in_slices(clock, counted(first, 2))
    d.addCallback(lambda _: run_in_slices(clock, counted(second, 2)))
    d.addCallback(lambda _: held.append(gc.get_threshold()[2]))
    while clock.getDelayedCalls():
        held.append(gc.get_threshold()[2])
        reactor_turn(clock)
    assert first == [0, 1] and second == [0, 1]
    assert all(threshold > 10**9 for threshold in held)
    assert gc.get_threshold()[2] == oldest_threshold


@pytest.mark.parametrize("ending", ["fails", "cancelled", "fits in one slice"])
def test_the_hold_is_given_back_however_the_run_ends(oldest_threshold, ending) -> None:
    clock, done = Clock(), []
    if ending == "fails":
        d = run_in_slices(clock, counted(done, 3, fail_at=1))
    elif ending == "cancelled":
        d = run_in_slices(clock, counted(done, 3))
        d.cancel()
    else:
        d = run_in_slices(clock, counted(done, 1))
    d.addErrback(lambda _: None)
    while clock.getDelayedCalls():
        reactor_turn(clock)
    assert gc.get_threshold()[2] == oldest_threshold


def test_holds_nest_and_a_threshold_set_meanwhile_is_kept(oldest_threshold) -> None:
    first = hold_full_collections()
    second = hold_full_collections()
    first()
    first()  # a second call does nothing
    assert gc.get_threshold()[2] > 10**9
    second()
    assert gc.get_threshold()[2] == oldest_threshold
    third = hold_full_collections()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 42)  # someone else's choice meanwhile
    third()
    assert gc.get_threshold()[2] == 42
