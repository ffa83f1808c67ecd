"""Long work in bounded slices, one per reactor turn, so that a full copy of a large
database (hundreds of thousands of rows applied, an index built from them) does not hold
the reactor for seconds: requests waiting meanwhile are served between the slices.

L{run_in_slices} drives a generator that does one slice of the work between each two
C{yield}s: the first slice runs at once, each further one in a reactor turn of its own
(C{callLater(0)}). Work that fits in one slice therefore finishes before the call
returns, as if it had not been sliced. L{slice_updates} cuts the table updates of a
full copy into parts of at most C{rows} rows each, applied one part per slice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

__all__ = ["ROWS_PER_SLICE", "run_in_slices", "slice_updates"]

#: rows applied, or indexed, per reactor turn: 10-30 ms each on a 2 GHz core
ROWS_PER_SLICE = 2000


def run_in_slices(reactor: Any, steps: Iterator[None]) -> Deferred[None]:
    """Run C{steps} to its end, the first slice at once and each next one in a reactor
    turn of its own. The Deferred fires when it has ended, or fails with what a slice
    raised. C{cancel()} on the Deferred stops it before the next slice.
    """
    try:
        next(steps)
    except StopIteration:
        return succeed(None)
    except Exception:
        return fail()
    call: Any = None

    def cancelled(_: Deferred[None]) -> None:
        if call is not None and call.active():
            call.cancel()
        steps.close()

    done: Deferred[None] = Deferred(cancelled)

    def step() -> None:
        nonlocal call
        call = None
        try:
            next(steps)
        except StopIteration:
            done.callback(None)
            return
        except Exception:
            done.errback()
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
