"""Keep the garbage collector off what start-up built.

The agent builds most of what it keeps at start (modules, the configuration, the lookup
table, the listeners), then serves requests that leave no reference cycles behind (the
request path drops its references on each way out). CPython's collector still walks
every object it tracks on each full collection: during a storm that is one walk of the
whole start-up heap every few seconds, about a tenth of the agent's CPU. Once the
reactor runs, start-up's garbage is collected once and what is left is moved out of the
collector's sight (C{gc.freeze}): it is still freed by reference counting when dropped
(a reloaded table, say); only a reference cycle among those objects would stay.
"""

from __future__ import annotations

import gc
from typing import Any

__all__ = ["freeze_after_start", "freeze_when_running"]


def freeze_after_start() -> None:
    """Collect start-up's garbage, then keep the collector off everything left."""
    gc.collect()
    gc.freeze()


def freeze_when_running(reactor: Any) -> None:
    """Freeze once C{reactor} runs and start-up (its C{callWhenRunning} calls queued
    before this one) is done."""
    reactor.callWhenRunning(freeze_after_start)
