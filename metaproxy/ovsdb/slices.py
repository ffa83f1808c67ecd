"""Long work in bounded slices, one per reactor turn, so that a full copy of a large
database (hundreds of thousands of rows applied, an index built from them) does not hold
the reactor for seconds: requests waiting meanwhile are served between the slices.

L{run_in_slices} drives a generator that does one slice of the work between each two
C{yield}s: the first slice runs at once, each further one in a reactor turn of its own
(C{callLater(0)}). Work that fits in one slice therefore finishes before the call
returns, as if it had not been sliced. L{slice_updates} cuts the table updates of a
full copy into parts of at most C{rows} rows each, applied one part per slice.

While work runs in slices, the garbage collector's full collections are held off
(L{hold_full_collections}; the OVSDB monitor also holds them from its request for a
copy, so that decoding the reply is covered too). A full copy makes hundreds of
thousands of objects that outlive the young generations, and CPython starts a full
collection each time those waiting in the oldest generation reach a quarter of those
already there: a copy of 100,000 rows paid for 12 walks of the whole heap, 1.9 s of its
7.7 s (C{bench.scale.ovsdb_fullcopy}). Held off, the young generations are still
collected as usual, and the oldest is collected once, at the first occasion after the
work is done (and after any work in slices its callbacks start: the index built from a
store just filled).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

__all__ = ["ROWS_PER_SLICE", "hold_full_collections", "run_in_slices", "slice_updates"]

#: rows applied, or indexed, per reactor turn: 10-30 ms each on a 2 GHz core
ROWS_PER_SLICE = 2000


#: the oldest generation's threshold while full collections are held off: never reached
_NEVER = 2**31 - 1


class _FullCollections:
    """How many runs hold the collector's full collections off, and the threshold to
    give back when the last one ends."""

    holders = 0
    threshold = 10


def hold_full_collections() -> Callable[[], None]:
    """Hold the garbage collector's full collections off until the returned callable is
    called (once; later calls do nothing). Holds nest: the oldest generation's threshold
    is given back when the last one is released, unless someone else set another
    meanwhile."""
    if _FullCollections.holders == 0:
        young, middle, oldest = gc.get_threshold()
        _FullCollections.threshold = oldest
        gc.set_threshold(young, middle, _NEVER)
    _FullCollections.holders += 1
    released = False

    def release() -> None:
        nonlocal released
        if released:
            return
        released = True
        _FullCollections.holders -= 1
        if _FullCollections.holders == 0:
            young, middle, oldest = gc.get_threshold()
            if oldest == _NEVER:
                gc.set_threshold(young, middle, _FullCollections.threshold)

    return release


def run_in_slices(reactor: Any, steps: Iterator[None]) -> Deferred[None]:
    """Run C{steps} to its end, the first slice at once and each next one in a reactor
    turn of its own, with full collections held off until it ends
    (L{hold_full_collections}). The Deferred fires when it has ended, or fails with what
    a slice raised. C{cancel()} on the Deferred stops it before the next slice.
    """
    release = hold_full_collections()
    try:
        next(steps)
    except StopIteration:
        release()
        return succeed(None)
    except Exception:
        release()
        return fail()
    call: Any = None

    def cancelled(_: Deferred[None]) -> None:
        if call is not None and call.active():
            call.cancel()
        steps.close()
        release()

    done: Deferred[None] = Deferred(cancelled)

    def step() -> None:
        nonlocal call
        call = None
        try:
            next(steps)
        except StopIteration:
            # given back once the callbacks have run: work they start in slices (the
            # index built from a store just filled) takes its hold first
            done.callback(None)
            release()
            return
        except Exception:
            done.errback()
            release()
            return
        call = reactor.callLater(0, step)

    call = reactor.callLater(0, step)
    return done


def slice_updates(updates: Any, rows: int = ROWS_PER_SLICE) -> Iterator[Any]:
    """The table updates C{updates} (C{{table: {uuid: row update}}}) as parts of at most
    C{rows} row updates each, in their order. Anything that is not of that form is
    yielded whole, for the store to refuse it with its own error."""
    if not isinstance(updates, dict) or not all(isinstance(v, dict) for v in updates.values()):
        yield updates
        return
    part: dict[str, dict[str, Any]] = {}
    count = 0
    for table, table_rows in updates.items():
        for uuid, update in table_rows.items():
            if count == rows:
                yield part
                part, count = {}, 0
            part.setdefault(table, {})[uuid] = update
            count += 1
    yield part
