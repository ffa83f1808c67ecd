"""CPU time and memory of a process tree, read from /proc (Linux only).

The bench measures the agent from outside, whatever it is (metaproxy, the upstream agent
with its worker processes): give the PIDs, their descendants are found and included.

    before = tree_cpu_seconds([pid])
    with PeakRSS([pid]) as peak:          # samples every 100 ms in a thread
        ... run ...
    cpu = tree_cpu_seconds([pid]) - before
    peak.peak_bytes

CPU seconds are C{utime + stime} of every live process of the tree, plus C{cutime +
cstime} (children already exited and reaped) of each: a child that exits during a run is
still counted once its parent reaps it. RSS is C{VmRSS} summed over the tree (shared pages
are counted once per process, so for forked workers it overstates: a ceiling); each
process's own peak (C{VmHWM}) is also kept.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

__all__ = [
    "ProcSample",
    "descendants",
    "tree_pids",
    "process_cpu_seconds",
    "tree_cpu_seconds",
    "rss_bytes",
    "tree_rss_bytes",
    "host_cpu_times",
    "PeakRSS",
]

_TICKS = os.sysconf("SC_CLK_TCK")
_PROC = "/proc"


def _stat_fields(pid: int, proc: str = _PROC) -> list[str] | None:
    """The fields of C{/proc/<pid>/stat} after the command name (which may hold spaces
    and parentheses): index 0 is the state (field 3 of proc(5))."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    end = data.rfind(b")")
    if end < 0:
        return None
    return data[end + 2 :].decode("ascii", "replace").split()


def descendants(pids: Iterable[int], proc: str = _PROC) -> set[int]:
    """Every live descendant of C{pids} (not the PIDs themselves)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name), proc)
        if fields is None or len(fields) < 2:
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
    found: set[int] = set()
    stack = list(pids)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def tree_pids(pids: Iterable[int], proc: str = _PROC) -> set[int]:
    """C{pids} and their live descendants."""
    roots = {pid for pid in pids if os.path.exists(f"{proc}/{pid}")}
    return roots | descendants(roots, proc)


def process_cpu_seconds(pid: int, *, reaped_children: bool = True, proc: str = _PROC) -> float:
    """C{utime + stime} of one process (plus C{cutime + cstime}); 0 if it is gone."""
    fields = _stat_fields(pid, proc)
    if fields is None or len(fields) < 14:
        return 0.0
    # proc(5) fields 14-17 are utime, stime, cutime, cstime: indexes 11-14 here.
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def tree_cpu_seconds(pids: Iterable[int], proc: str = _PROC) -> float:
    """CPU seconds used so far by C{pids} and their descendants (see the module doc)."""
    return sum(process_cpu_seconds(pid, proc=proc) for pid in tree_pids(pids, proc))


def _status_kib(pid: int, key: bytes, proc: str = _PROC) -> int:
    try:
        with open(f"{proc}/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def rss_bytes(pid: int, *, peak: bool = False, proc: str = _PROC) -> int:
    """C{VmRSS} (or, with C{peak}, C{VmHWM}) of one process in bytes; 0 if it is gone."""
    return _status_kib(pid, b"VmHWM:" if peak else b"VmRSS:", proc) * 1024


def tree_rss_bytes(pids: Iterable[int], proc: str = _PROC) -> int:
    """C{VmRSS} summed over C{pids} and their descendants, in bytes."""
    return sum(rss_bytes(pid, proc=proc) for pid in tree_pids(pids, proc))


def host_cpu_times(proc: str = _PROC) -> tuple[float, float]:
    """C{(busy, total)} CPU seconds of the whole machine since boot (C{/proc/stat},
    all CPUs): the busy share of an interval is C{d(busy) / d(total)}."""
    with open(f"{proc}/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user and nice
    return (total - idle) / _TICKS, total / _TICKS


class ProcSample:
    """One reading of a tree: PIDs, summed RSS, and the largest per-process VmHWM."""

    __slots__ = ("pids", "rss", "hwm")

    def __init__(self, pids: Iterable[int], proc: str = _PROC) -> None:
        self.pids = tree_pids(pids, proc)
        self.rss = sum(rss_bytes(pid, proc=proc) for pid in self.pids)
        self.hwm = max((rss_bytes(pid, peak=True, proc=proc) for pid in self.pids), default=0)


class PeakRSS:
    """A thread that samples the tree's summed RSS every C{interval} seconds.

    @ivar peak_bytes: the largest summed C{VmRSS} seen (including one sample at start and
        one at stop, so a short run still has a figure).
    @ivar peak_hwm_bytes: the largest C{VmHWM} of any one process of the tree: the kernel's
        own peak, which catches spikes between samples.
    @ivar max_processes: the most processes seen in the tree at once.
    """

    def __init__(self, pids: Iterable[int], interval: float = 0.1, proc: str = _PROC) -> None:
        self._pids = list(pids)
        self._interval = interval
        self._proc = proc
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)
        self.peak_bytes = 0
        self.peak_hwm_bytes = 0
        self.max_processes = 0
        self.samples = 0

    def _sample(self) -> None:
        sample = ProcSample(self._pids, self._proc)
        self.samples += 1
        self.peak_bytes = max(self.peak_bytes, sample.rss)
        self.peak_hwm_bytes = max(self.peak_hwm_bytes, sample.hwm)
        self.max_processes = max(self.max_processes, len(sample.pids))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def start(self) -> PeakRSS:
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop sampling (one last sample); return L{peak_bytes}."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            self._sample()
        return self.peak_bytes

    def __enter__(self) -> PeakRSS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
