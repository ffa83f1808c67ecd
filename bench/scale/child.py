"""A measurement in a process of its own (so that its RSS is its own), both ends of its
line protocol on the child's stdin and stdout.

The parent starts C{python -m MODULE ARGS} (L{measure_in_child}); the child may say
C{ready} and wait (L{ready_then_wait}) while the parent changes something
(C{on_ready}), then answered C{go}; the child's figures are its last line, one JSON
object (L{send_figures}).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["measure_in_child", "ready_then_wait", "send_figures"]


def measure_in_child(
    module: str,
    args: Sequence[str],
    *,
    on_ready: Callable[[], None] | None = None,
    what: str = "the measurement",
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run C{python -m module args}; at its C{ready}, C{on_ready()} and C{go}; return its
    figures.

    @raise RuntimeError: it ended without figures (C{what} failed, with its exit code).
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
    )
    assert proc.stdout is not None and proc.stdin is not None
    for line in proc.stdout:
        if line.strip() == "ready" and on_ready is not None:
            on_ready()
            proc.stdin.write("go\n")
            proc.stdin.flush()
        elif line.startswith("{"):
            proc.wait()
            return json.loads(line)
    raise RuntimeError(f"{what} failed (exit {proc.wait()})")


def ready_then_wait() -> None:
    """In the child: say C{ready}; return once the parent answers."""
    print("ready", flush=True)
    sys.stdin.readline()


def send_figures(figures: Mapping[str, Any]) -> None:
    """In the child: the figures, the last line."""
    print(json.dumps(figures), flush=True)
