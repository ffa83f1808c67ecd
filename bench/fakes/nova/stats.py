# -*- test-case-name: tests.bench.fakes.test_fakenova -*-
"""The fake Nova's counters, shared between its processes: how it answered
(L{OUTCOMES}), by status, and its queue; and the last requests each process received.

L{SharedBoard} is the memory the processes share; L{NovaStats} is one process's view of
it (it writes its own row, and sums every row for C{/_fakenova/stats}).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import mmap
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from bench.fakes.nova.recording import RecordedRequest

__all__ = ["OUTCOMES", "SharedBoard", "NovaStats"]

#: How the fake answered a request; L{NovaStats.by_outcome} has every one of these keys.
OUTCOMES: tuple[str, ...] = (
    "ok",  # served from the tree (root listing and password GET/POST included)
    "missing_header",  # 400: X-Instance-ID, X-Instance-ID-Signature or X-Tenant-ID absent
    "multiple_headers",  # 400: X-Instance-ID or X-Tenant-ID more than once
    "bad_signature",  # 403
    "unknown_instance",  # 404: no such instance
    "tenant_mismatch",  # 404: X-Tenant-ID is not the instance's project
    "not_found",  # 404: no such path or version in the tree
    "password_rejected",  # 400/409 from the password handler
    "override",  # status forced by status_override
)
_OUTCOME_INDEX = {outcome: index for index, outcome in enumerate(OUTCOMES)}

# A SharedBoard is an array of int64 slots: a header, one row per process, then a byte area
# holding the last configuration POSTed, as JSON.
_H_MAGIC, _H_PROCESSES, _H_EPOCH, _H_CONFIG_GEN, _H_CONFIG_LEN = range(5)
_HEADER_SLOTS = 8
_MAGIC = 0x46414B454E4F5641  # "FAKENOVA"
(_R_EPOCH, _R_PID, _R_IN_SERVICE, _R_QUEUED, _R_MAX_QUEUED, _R_TOTAL, _R_RECORDED) = range(7)
_R_OUTCOMES = 7
_R_STATUS = _R_OUTCOMES + len(OUTCOMES)
_STATUS_SLOTS = 600  # status codes 0..599, one slot each
_ROW_SLOTS = _R_STATUS + _STATUS_SLOTS
# Reset zeroes these (the gauges in service and queued are the current state).
_COUNTERS = slice(_R_TOTAL, _ROW_SLOTS)
_CONFIG_BYTES = 1 << 16
_SLOT = 8


class SharedBoard:
    """Counters and configuration shared by the processes of one fake Nova.

    A memory mapping (of a C{memfd}, or an unlinked temporary file, passed to the
    children as a descriptor) of int64 slots: a header (process count, reset epoch,
    configuration generation), one row per process, and the last configuration POSTed.

      - Each process writes only its own row (counters, gauges, pid), as it answers:
        no lock, nothing on the hot path but a few stores. C{/_fakenova/stats} in any
        process sums the rows, so it is exact and immediate.
      - C{reset} bumps the epoch; a row whose epoch is not the current one counts as
        zero, and its process zeroes it (and forgets its recorded requests) the next
        time it records or answers a control request.
      - C{/_fakenova/config} stores the whole new configuration as JSON and bumps the
        generation; every process compares the generation on each request (one load)
        and applies a new configuration before answering. Writing and reading the
        configuration hold a POSIX lock on the file (C{lockf}).
    """

    def __init__(self, buffer: mmap.mmap, fd: int | None) -> None:
        self._buffer = buffer
        self.fd = fd
        self.raw = memoryview(buffer)
        self.slots = self.raw.cast("q")
        if self.slots[_H_MAGIC] != _MAGIC:
            raise ValueError("not a fakenova board")
        self.processes: int = self.slots[_H_PROCESSES]
        self._config_offset = (_HEADER_SLOTS + self.processes * _ROW_SLOTS) * _SLOT

    @staticmethod
    def _size(processes: int) -> int:
        return (_HEADER_SLOTS + processes * _ROW_SLOTS) * _SLOT + _CONFIG_BYTES

    @classmethod
    def create(cls, processes: int = 1, *, shared: bool = False) -> SharedBoard:
        """A new board; with C{shared}, backed by a descriptor (L{fd}) children can map
        with L{attach}, otherwise by anonymous memory."""
        if processes < 1:
            raise ValueError("processes must be at least 1")
        size = cls._size(processes)
        fd = None
        if shared:
            if hasattr(os, "memfd_create"):
                fd = os.memfd_create("fakenova-board")
            else:
                with tempfile.TemporaryFile() as f:
                    fd = os.dup(f.fileno())
            os.ftruncate(fd, size)
            buffer = mmap.mmap(fd, size)
        else:
            buffer = mmap.mmap(-1, size)
        slots = memoryview(buffer).cast("q")
        slots[_H_PROCESSES] = processes
        slots[_H_EPOCH] = 1
        slots[_H_MAGIC] = _MAGIC
        slots.release()
        return cls(buffer, fd)

    @classmethod
    def attach(cls, fd: int) -> SharedBoard:
        """Map the board a parent passed as descriptor C{fd}."""
        return cls(mmap.mmap(fd, os.fstat(fd).st_size), fd)

    def row(self, index: int) -> int:
        """The first slot of process C{index}'s row."""
        if not 0 <= index < self.processes:
            raise ValueError(f"process index {index} not in 0..{self.processes - 1}")
        return _HEADER_SLOTS + index * _ROW_SLOTS

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.fd is None:
            yield
            return
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    @property
    def epoch(self) -> int:
        return self.slots[_H_EPOCH]

    @property
    def config_generation(self) -> int:
        return self.slots[_H_CONFIG_GEN]

    def bump_epoch(self) -> int:
        with self._locked():
            self.slots[_H_EPOCH] += 1
            return self.slots[_H_EPOCH]

    def publish_config(self, data: bytes) -> int:
        """Store a configuration for every process; return its generation.

        @raise ValueError: larger than the area.
        """
        if len(data) > _CONFIG_BYTES:
            raise ValueError(f"configuration larger than {_CONFIG_BYTES} bytes")
        with self._locked():
            start = self._config_offset
            self.raw[start : start + len(data)] = data
            self.slots[_H_CONFIG_LEN] = len(data)
            self.slots[_H_CONFIG_GEN] += 1
            return self.slots[_H_CONFIG_GEN]

    def read_config(self) -> tuple[int, bytes]:
        """The last configuration published and its generation (0: none yet)."""
        with self._locked():
            start = self._config_offset
            length = self.slots[_H_CONFIG_LEN]
            return self.slots[_H_CONFIG_GEN], bytes(self.raw[start : start + length])


class NovaStats:
    """Counters of everything the fake answered, and the last requests it received.

    The counters of this process live in its row of a L{SharedBoard} (a private one by
    default); L{as_json} sums the rows of all processes.

    @ivar requests: the last C{max_recorded} requests this process received, oldest
        first.
    """

    def __init__(
        self,
        max_recorded: int = 1000,
        *,
        board: SharedBoard | None = None,
        index: int = 0,
    ) -> None:
        self.max_recorded = max_recorded
        self.board = board if board is not None else SharedBoard.create(1)
        self.index = index
        self.requests: collections.deque[RecordedRequest] = collections.deque(maxlen=max_recorded)
        self._slots = self.board.slots
        self._base = self.board.row(index)
        self._slots[self._base + _R_PID] = os.getpid()
        self._epoch = -1
        self._catch_up()

    def _catch_up(self) -> None:
        """Zero this row's counters and recorded requests if a reset happened since."""
        slots, base = self._slots, self._base
        epoch = slots[_H_EPOCH]
        if epoch == self._epoch:
            return
        # Readers count a row with another epoch as zero, so the row never looks half reset.
        slots[base + _R_EPOCH] = -1
        start, stop = (base + _COUNTERS.start) * _SLOT, (base + _COUNTERS.stop) * _SLOT
        self.board.raw[start:stop] = bytes(stop - start)
        slots[base + _R_MAX_QUEUED] = slots[base + _R_QUEUED]
        self.requests.clear()
        slots[base + _R_EPOCH] = epoch
        self._epoch = epoch

    def record(self, request: RecordedRequest) -> None:
        slots, base = self._slots, self._base
        if slots[_H_EPOCH] != self._epoch:
            self._catch_up()
        slots[base + _R_TOTAL] += 1
        slots[base + _R_OUTCOMES + _OUTCOME_INDEX[request.outcome]] += 1
        status = request.status
        if 0 <= status < _STATUS_SLOTS:
            slots[base + _R_STATUS + status] += 1
        self.requests.append(request)
        slots[base + _R_RECORDED] = len(self.requests)

    def set_load(self, in_service: int, queued: int) -> None:
        """Publish this process's gauges: requests in their service time and waiting."""
        slots, base = self._slots, self._base
        if slots[_H_EPOCH] != self._epoch:
            self._catch_up()
        slots[base + _R_IN_SERVICE] = in_service
        slots[base + _R_QUEUED] = queued
        if queued > slots[base + _R_MAX_QUEUED]:
            slots[base + _R_MAX_QUEUED] = queued

    def reset(self) -> None:
        """Forget counters and recorded requests in every process sharing the board."""
        self.board.bump_epoch()
        self._catch_up()

    def requests_as_json(self) -> list[dict[str, Any]]:
        self._catch_up()
        return [request.as_json() for request in self.requests]

    # This process's own counters.

    def _slot(self, offset: int) -> int:
        self._catch_up()
        return self._slots[self._base + offset]

    @property
    def total(self) -> int:
        """Requests this process answered (control requests excluded)."""
        return self._slot(_R_TOTAL)

    @property
    def by_status(self) -> collections.Counter[int]:
        return collections.Counter(
            {s: n for s in range(_STATUS_SLOTS) if (n := self._slot(_R_STATUS + s))}
        )

    @property
    def by_outcome(self) -> collections.Counter[str]:
        return collections.Counter(
            {o: n for i, o in enumerate(OUTCOMES) if (n := self._slot(_R_OUTCOMES + i))}
        )

    @property
    def in_service(self) -> int:
        return self._slot(_R_IN_SERVICE)

    @property
    def queued(self) -> int:
        return self._slot(_R_QUEUED)

    @property
    def max_queued(self) -> int:
        return self._slot(_R_MAX_QUEUED)

    def as_json(self) -> dict[str, Any]:
        """The sums over all processes sharing the board::

            {"total", "by_status": {"200": n}, "by_outcome": {outcome: n},
             "recorded", "max_recorded", "in_service", "queued", "max_queued",
             "processes": [{"index", "pid", "total", "in_service", "queued",
                            "max_queued"}, ...]}

        C{by_outcome} lists every outcome, zeros included. C{recorded} sums what each
        process keeps for C{/_fakenova/requests}; C{max_recorded} is per process.
        C{in_service} and C{queued} are the requests now in their service time and
        waiting for a worker; C{max_queued} sums each process's largest queue since the
        last reset (so with several processes it is an upper bound of the largest total
        queue). A process not started yet has pid 0.
        """
        self._catch_up()
        slots = self._slots
        epoch = slots[_H_EPOCH]
        totals = [0] * _ROW_SLOTS
        processes = []
        for index in range(self.board.processes):
            base = self.board.row(index)
            row = slots[base : base + _ROW_SLOTS].tolist()
            if row[_R_EPOCH] != epoch:  # reset since this process last looked: all zero
                row[_COUNTERS] = [0] * (_COUNTERS.stop - _COUNTERS.start)
                row[_R_MAX_QUEUED] = row[_R_QUEUED]
            totals = [a + b for a, b in zip(totals, row, strict=False)]
            processes.append(
                {
                    "index": index,
                    "pid": row[_R_PID],
                    "total": row[_R_TOTAL],
                    "in_service": row[_R_IN_SERVICE],
                    "queued": row[_R_QUEUED],
                    "max_queued": row[_R_MAX_QUEUED],
                }
            )
        statuses = totals[_R_STATUS:]
        return {
            "total": totals[_R_TOTAL],
            "by_status": {str(s): n for s, n in enumerate(statuses) if n},
            "by_outcome": {o: totals[_R_OUTCOMES + i] for i, o in enumerate(OUTCOMES)},
            "recorded": totals[_R_RECORDED],
            "max_recorded": self.max_recorded,
            "in_service": totals[_R_IN_SERVICE],
            "queued": totals[_R_QUEUED],
            "max_queued": totals[_R_MAX_QUEUED],
            "processes": processes,
        }
