# -*- test-case-name: tests.integration.test_scale -*-
"""What the scale checks read from the host: open descriptors, the C{nofile} limit
(raised for the agent and the generator, L{raise_nofile}), memory of a process tree from
/proc, and polling until something is true (L{wait_until})."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable, Sequence
from typing import Any

from bench.load.procstat import rss_bytes, tree_pids, tree_rss_bytes

__all__ = ["raise_nofile", "open_fds", "nofile_limit", "memory", "wait_until"]


def raise_nofile(needed: int) -> int:
    """Raise this process's soft C{RLIMIT_NOFILE} to at least C{needed} if the hard limit
    allows (children inherit it); return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


def open_fds(pids: Iterable[int]) -> int:
    """Open file descriptors of C{pids} and their descendants."""
    total = 0
    for pid in tree_pids(pids):
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except (FileNotFoundError, PermissionError):
            pass
    return total


def nofile_limit(pid: int) -> int | None:
    """The soft C{nofile} limit of process C{pid} (C{/proc/<pid>/limits}), if readable."""
    try:
        with open(f"/proc/{pid}/limits") as limits:
            for line in limits:
                if line.startswith("Max open files"):
                    soft = line.split()[3]
                    return None if soft == "unlimited" else int(soft)
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory(pids: Sequence[int]) -> dict[str, int]:
    """RSS of C{pids} and their descendants, their largest VmHWM, how many they are."""
    tree = tree_pids(pids)
    return {
        "rss_bytes": tree_rss_bytes(pids),
        "hwm_bytes": max((rss_bytes(p, peak=True) for p in tree), default=0),
        "processes": len(tree),
    }


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll C{condition()} until true; return the seconds it took.

    @raise RuntimeError: not true after C{timeout} seconds.
    """
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{what}: not done after {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start
