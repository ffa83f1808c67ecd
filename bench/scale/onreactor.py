"""A bench's coroutine on the Twisted reactor: run it once to its end (L{run_once}), and
wait on the reactor until something is true (L{until}, the reactor's
L{bench.scale.host.wait_until})."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater, react

__all__ = ["run_once", "until"]


def run_once(main: Callable[[Any], Coroutine[Any, Any, Any]]) -> None:
    """Run C{main(reactor)} on the reactor until it returns (the reactor cannot be run
    again in this process). C{react}'s exit is swallowed when it is a success; a failure
    (logged by C{react}) raises C{SystemExit} with its non-zero code."""
    try:
        react(lambda reactor: ensureDeferred(main(reactor)), [])
    except SystemExit as e:
        if e.code:
            raise


async def until(
    reactor: Any, predicate: Callable[[], Any], timeout: float, *, interval: float
) -> None:
    """Poll C{predicate()} every C{interval} seconds on the reactor until it is true.

    @raise RuntimeError: not true after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not true within {timeout} s")
        await deferLater(reactor, interval, lambda: None)
