"""This process's own figures: its resident set now (L{rss_mib}), its largest so far
(L{peak_rss_mib}) and its CPU seconds (L{cpu_seconds}), as a measurement run in a process
of its own reports them.

Nothing but C{resource} is imported: a child that reports its RSS after its imports
(L{bench.scale.ovsdb_clients}) is not made larger by this module.
"""

from __future__ import annotations

import resource

__all__ = ["rss_mib", "peak_rss_mib", "cpu_seconds"]


def rss_mib() -> float:
    """This process's resident set now (C{/proc/self/statm}), MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    """This process's largest resident set so far (C{ru_maxrss}), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """This process's user and system CPU time so far, seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
