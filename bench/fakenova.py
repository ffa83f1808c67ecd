# -*- test-case-name: tests.bench.test_fakenova,tests.integration.test_fakenova_process -*-
"""A fake Nova metadata API for the demo, the integration tests and the bench.

It checks the proxy headers the way Nova does with C{[neutron] service_metadata_proxy =
True} (docs/upstream.md, "Nova's checks and answers"), serves the tree from
L{bench.novatree}, and records every request it receives (method, request-target, headers
exactly as on the wire, body) so tests can assert what metaproxy forwarded, byte for
byte. Every answer carries an C{X-Fakenova-Pid} header: the process that answered.

A slow Nova can be modelled: each answer waits a service time (L{ServiceTime}: fixed or
drawn from a distribution, after the header checks), and with a concurrency limit at
most that many requests are in their service time at once, the others wait in FIFO
order. C{--processes N} runs N processes on one listening socket (L{bench.fakenova_pool})
so that the fake is never the bottleneck.

Control endpoints (only with the header C{X-Fakenova-Control: 1}; they skip the
signature checks, the service time and the queue, and are not recorded):

  - C{GET /_fakenova/stats}: L{NovaStats.as_json}, summed over all processes;
  - C{GET /_fakenova/requests}: the requests recorded by the process that answers
    (with several processes, each keeps its own);
  - C{POST /_fakenova/reset}: forget the counters and the recorded requests, in all
    processes;
  - C{GET|POST /_fakenova/config}: read or change C{delay} (fixed seconds),
    C{delay_dist} (a L{ServiceTime} spec), C{concurrency} and C{status_override}
    (POST a JSON object with any of these keys), in all processes.

How processes share counters and configuration: L{SharedBoard}.

Run it with C{python -m bench.fakenova --table ports.json --secret S}; see L{main}.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import contextlib
import fcntl
import gzip
import hashlib
import hmac
import ipaddress
import json
import math
import mmap
import os
import posixpath
import random
import re
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from bench import novatree
from bench.novatree import InstanceRecord

__all__ = [
    "OUTCOMES",
    "CONTROL_HEADER",
    "PID_HEADER",
    "RecordedRequest",
    "ServiceTime",
    "SharedBoard",
    "NovaStats",
    "FakeNova",
    "QuietSite",
    "concurrency_share",
    "instances_from_table",
    "load_table",
    "make_site",
    "tls_options",
    "main",
]

_log = Logger()

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

#: The header that marks a request to C{/_fakenova/...} as a control request.
CONTROL_HEADER = b"X-Fakenova-Control"
#: The header, on every answer, naming the process that answered.
PID_HEADER = b"X-Fakenova-Pid"
_CONTROL_PREFIX = b"/_fakenova/"


@attrs.frozen
class RecordedRequest:
    """One request as the fake received it, and how it answered.

    @ivar uri: the request-target exactly as on the wire (path and query, not decoded).
    @ivar headers: C{(name, value)} in wire order, names in their wire case.
    """

    method: bytes
    uri: bytes
    version: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    status: int
    outcome: str

    def header_values(self, name: bytes) -> list[bytes]:
        """All values of header C{name} (case-insensitive), in order."""
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    def as_json(self) -> dict[str, Any]:
        """JSON-ready form: bytes become latin-1 strings (a lossless mapping)."""
        return {
            "method": self.method.decode("latin-1"),
            "uri": self.uri.decode("latin-1"),
            "version": self.version.decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in self.headers],
            "body": self.body.decode("latin-1"),
            "status": self.status,
            "outcome": self.outcome,
        }


# --- service time -------------------------------------------------------------------------

_DISTRIBUTIONS = {"fixed": 1, "uniform": 2, "exp": 1, "lognormal": 2}


@attrs.frozen
class ServiceTime:
    """How long Nova takes to answer one request, in seconds.

    Specs (L{parse}): C{fixed:S}; C{uniform:A:B} (A <= B); C{exp:MEAN} (exponential);
    C{lognormal:MEDIAN:SIGMA} (the log of the time is normal with mean C{ln(MEDIAN)} and
    standard deviation C{SIGMA}). All values are seconds except SIGMA, all >= 0, MEDIAN
    > 0.
    """

    kind: str
    params: tuple[float, ...]

    @classmethod
    def fixed(cls, seconds: float) -> ServiceTime:
        return cls.parse(f"fixed:{seconds!r}")

    @classmethod
    def parse(cls, spec: str) -> ServiceTime:
        """@raise ValueError: not one of the specs above."""
        kind, *fields = str(spec).split(":")
        if kind not in _DISTRIBUTIONS:
            raise ValueError(
                f"{spec!r}: expected fixed:S, uniform:A:B, exp:MEAN or lognormal:MEDIAN:SIGMA"
            )
        if len(fields) != _DISTRIBUTIONS[kind]:
            raise ValueError(f"{spec!r}: {kind} takes {_DISTRIBUTIONS[kind]} value(s)")
        try:
            params = tuple(float(f) for f in fields)
        except ValueError:
            raise ValueError(f"{spec!r}: not a number") from None
        if not all(math.isfinite(p) and p >= 0 for p in params):
            raise ValueError(f"{spec!r}: values must be finite and not negative")
        if kind == "uniform" and params[0] > params[1]:
            raise ValueError(f"{spec!r}: A must not exceed B")
        if kind == "lognormal" and params[0] == 0:
            raise ValueError(f"{spec!r}: the median must be positive")
        return cls(kind, params)

    @property
    def spec(self) -> str:
        """The canonical spec, which L{parse} reads back."""
        return ":".join([self.kind, *(repr(p) for p in self.params)])

    @property
    def seconds(self) -> float | None:
        """The fixed time, or C{None} for a distribution."""
        return self.params[0] if self.kind == "fixed" else None

    def draw(self, rng: random.Random) -> float:
        """One service time; a fixed time draws nothing from C{rng}."""
        kind = self.kind
        if kind == "fixed":
            return self.params[0]
        if kind == "uniform":
            return rng.uniform(*self.params)
        if kind == "exp":
            mean = self.params[0]
            return rng.expovariate(1.0 / mean) if mean > 0 else 0.0
        median, sigma = self.params
        return rng.lognormvariate(math.log(median), sigma)


def concurrency_share(total: int, processes: int, index: int) -> int:
    """The part of a C{total} concurrency limit process C{index} of C{processes} enforces:
    the total split as evenly as possible (0, unlimited, stays 0).

    @raise ValueError: a limit below the number of processes (some would get none).
    """
    if total == 0:
        return 0
    if total < processes:
        raise ValueError(f"concurrency {total} is below the number of processes ({processes})")
    return total // processes + (1 if index < total % processes else 0)


# --- counters shared between processes ----------------------------------------------------

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


@attrs.frozen
class _Answer:
    status: int
    content_type: str
    body: bytes
    outcome: str


def _error(status: int, outcome: str, explanation: str | None = None) -> _Answer:
    return _Answer(status, novatree.TEXT_HTML, novatree.error_page(status, explanation), outcome)


class _Job:
    """A request whose answer waits: in the queue, then in its service time."""

    __slots__ = ("request", "answer", "state", "call")

    QUEUED, SERVING, DONE, GONE = range(4)

    def __init__(self, request: Request, answer: _Answer, state: int) -> None:
        self.request = request
        self.answer = answer
        self.state = state
        self.call: Any = None


_MEMO_LIMIT = 4096


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> Any:
    """Store C{value} in C{memo}, which is emptied when it reaches L{_MEMO_LIMIT}."""
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = value
    return value


_CONFIG_KEYS = frozenset({"delay", "delay_dist", "concurrency", "status_override"})


class FakeNova(Resource):
    """The whole fake Nova as one leaf resource.

    @ivar instances: instance id to record (password POSTs replace records; with
        several processes, in the process that answered only).
    @ivar service_time: how long each answer waits (not control requests).
    @ivar concurrency: at most this many requests in their service time at once, over
        all processes (0: no limit); this process enforces its L{concurrency_share}.
    @ivar status_override: decoded request path (no query) to a status answered
        instead, before any header check, with webob's page for that status.
    """

    isLeaf = True

    def __init__(
        self,
        instances: Mapping[str, InstanceRecord],
        secret: str | bytes,
        reactor: IReactorTime,
        stats: NovaStats,
        *,
        delay: float = 0.0,
        service_time: ServiceTime | None = None,
        concurrency: int = 0,
        rng: random.Random | None = None,
        status_override: MutableMapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.instances = dict(instances)
        self._secret = secret.encode("utf-8") if isinstance(secret, str) else secret
        self._reactor = reactor
        self.stats = stats
        if service_time is not None and delay:
            raise ValueError("give delay or service_time, not both")
        self.service_time = service_time if service_time is not None else ServiceTime.fixed(delay)
        self.rng = rng if rng is not None else random.Random()
        self.status_override: MutableMapping[str, int] = (
            status_override if status_override is not None else {}
        )
        self._board = stats.board
        self._limit = concurrency_share(concurrency, self._board.processes, stats.index)
        self.concurrency = concurrency
        self._in_service = 0
        self._queued = 0
        self._queue: collections.deque[_Job] = collections.deque()
        self._config_generation = self._board.config_generation
        self._pid = b"%d" % os.getpid()
        # Memos for the hot path (bounded by _remember).
        self._signatures: dict[str, bytes] = {}
        self._password_paths: dict[str, bool] = {}
        self._lookups: dict[tuple[int, str, str | None], tuple[InstanceRecord, _Answer]] = {}

    @property
    def delay(self) -> float | None:
        """The fixed service time, or C{None} when it is drawn from a distribution."""
        return self.service_time.seconds

    @delay.setter
    def delay(self, seconds: float) -> None:
        self.service_time = ServiceTime.fixed(seconds)

    def render(self, request: Request) -> Any:
        if self._board.slots[_H_CONFIG_GEN] != self._config_generation:
            self._load_config()
        if request.path.startswith(_CONTROL_PREFIX) and request.getHeader(CONTROL_HEADER) == b"1":
            return self._control(request)
        request.content.seek(0)
        body = request.content.read()
        answer = self._answer(request, body)
        self.stats.record(
            RecordedRequest(
                method=request.method,
                uri=request.uri,
                version=request.clientproto,
                headers=tuple(getattr(request, "raw_headers", ())),
                body=body,
                status=answer.status,
                outcome=answer.outcome,
            )
        )
        self._serve(request, answer)
        return NOT_DONE_YET

    # --- service time and the worker queue -------------------------------------------

    def _serve(self, request: Request, answer: _Answer) -> None:
        limit = self._limit
        if limit and self._in_service >= limit:
            job = _Job(request, answer, _Job.QUEUED)
            request.notifyFinish().addErrback(self._gone, job)
            self._queue.append(job)
            self._queued += 1
            self.stats.set_load(self._in_service, self._queued)
            return
        delay = self.service_time.draw(self.rng)
        if delay > 0:
            job = _Job(request, answer, _Job.SERVING)
            request.notifyFinish().addErrback(self._gone, job)
            self._begin(job, delay)
        else:
            self._write(request, answer)

    def _begin(self, job: _Job, delay: float) -> None:
        job.state = _Job.SERVING
        self._in_service += 1
        job.call = self._reactor.callLater(delay, self._finish, job)
        self.stats.set_load(self._in_service, self._queued)

    def _finish(self, job: _Job) -> None:
        job.state = _Job.DONE
        self._in_service -= 1
        # Start the next queued request before answering: answering may let a pipelined
        # request on the same connection in, which must not jump the queue.
        self._pump()
        self._write(job.request, job.answer)

    def _pump(self) -> None:
        queue = self._queue
        while queue and (not self._limit or self._in_service < self._limit):
            job = queue.popleft()
            if job.state != _Job.QUEUED:
                continue  # the client went away while it waited
            self._queued -= 1
            delay = self.service_time.draw(self.rng)
            if delay > 0:
                self._begin(job, delay)
            else:
                job.state = _Job.DONE
                self._write(job.request, job.answer)
        self.stats.set_load(self._in_service, self._queued)

    def _gone(self, _: Failure, job: _Job) -> None:
        """The client disconnected before its answer."""
        if job.state == _Job.SERVING:
            job.call.cancel()
            self._in_service -= 1
            job.state = _Job.GONE
            self._pump()
        elif job.state == _Job.QUEUED:
            job.state = _Job.GONE
            self._queued -= 1
            self.stats.set_load(self._in_service, self._queued)

    def _write(self, request: Request, answer: _Answer) -> None:
        request.setResponseCode(answer.status)
        request.setHeader(b"Content-Type", answer.content_type.encode("ascii"))
        request.setHeader(b"Content-Length", b"%d" % len(answer.body))
        request.setHeader(PID_HEADER, self._pid)
        request.write(answer.body)
        request.finish()

    # --- answers ---------------------------------------------------------------------------

    def _answer(self, request: Request, body: bytes) -> _Answer:
        path = unquote_to_bytes(request.path).decode("utf-8", "replace")
        override = self.status_override.get(path)
        if override is not None:
            page = novatree.error_page(override) if override >= 400 else b""
            return _Answer(override, novatree.TEXT_HTML, page, "override")
        if posixpath.normpath(path) == "/":
            status, content_type, data = novatree.lookup(_ROOT_RECORD, "/")
            return _Answer(status, content_type, data, "ok")

        headers = request.requestHeaders
        instance_ids = headers.getRawHeaders(b"X-Instance-ID")
        signatures = headers.getRawHeaders(b"X-Instance-ID-Signature")
        tenant_ids = headers.getRawHeaders(b"X-Tenant-ID")
        if instance_ids is None:
            return _error(400, "missing_header", "X-Instance-ID header is missing from request.")
        if signatures is None:
            return _error(
                400, "missing_header", "X-Instance-ID-Signature header is missing from request."
            )
        if tenant_ids is None:
            return _error(400, "missing_header", "X-Tenant-ID header is missing from request.")
        if len(instance_ids) > 1:
            return _error(
                400, "multiple_headers", "Multiple X-Instance-ID headers found within request."
            )
        if len(tenant_ids) > 1:
            return _error(
                400, "multiple_headers", "Multiple X-Tenant-ID headers found within request."
            )

        # A WSGI server joins repeated headers with ", "; so does this for the others.
        instance_id = instance_ids[0].decode("latin-1")
        tenant_id = tenant_ids[0].decode("latin-1")
        signature = b", ".join(signatures)
        forwarded = headers.getRawHeaders(b"X-Forwarded-For")
        address = b", ".join(forwarded).decode("latin-1") if forwarded else None

        expected = self._signatures.get(instance_id)
        if expected is None:
            digest = hmac.digest(self._secret, instance_id.encode("utf-8"), hashlib.sha256)
            expected = _remember(self._signatures, instance_id, digest.hex().encode("ascii"))
        if not (signature and hmac.compare_digest(expected, signature)):
            if instance_id:
                # Since Nova bug #2150094 the expected signature is not logged.
                _log.warn(
                    "X-Instance-ID-Signature: {signature} does not match the expected "
                    "signature for id: {instance_id}. Request From: {remote_address}",
                    signature=signature.decode("latin-1"),
                    instance_id=instance_id,
                    remote_address=address,
                )
            return _error(403, "bad_signature", "Invalid proxy request signature.")

        record = self.instances.get(instance_id)
        if record is None:
            _log.error(
                "Failed to get metadata for instance id: {instance_id}", instance_id=instance_id
            )
            return _error(404, "unknown_instance")
        if record.project_id != tenant_id:
            _log.warn(
                "Tenant_id {tenant_id} does not match tenant_id of instance {instance_id}.",
                tenant_id=tenant_id,
                instance_id=instance_id,
            )
            return _error(404, "tenant_mismatch")

        is_password = self._password_paths.get(path)
        if is_password is None:
            is_password = _remember(self._password_paths, path, novatree.is_password_path(path))
        if is_password:
            return self._password(request, record, body)
        # The tree is a pure function of the record, path and address (novatree): the
        # entry keeps the record, so a replaced record never matches by a reused id.
        key = (id(record), path, address)
        known = self._lookups.get(key)
        if known is not None and known[0] is record:
            return known[1]
        status, content_type, data = novatree.lookup(record, path, address=address)
        answer = _Answer(status, content_type, data, "ok" if status == 200 else "not_found")
        _remember(self._lookups, key, (record, answer))
        return answer

    def _password(self, request: Request, record: InstanceRecord, body: bytes) -> _Answer:
        """Nova's C{handle_password}: GET reads, POST sets once, anything else is a 400."""
        if request.method == b"GET":
            return _Answer(200, novatree.TEXT_HTML, record.password.encode("utf-8"), "ok")
        if request.method != b"POST":
            return _error(400, "password_rejected", "GET and POST only are supported.")
        if record.password:
            return _error(409, "password_rejected")
        length = request.getHeader(b"Content-Length")
        declared = int(length) if length is not None and length.isdigit() else 0
        if declared > novatree.PASSWORD_MAX_SIZE or len(body) > novatree.PASSWORD_MAX_SIZE:
            return _error(400, "password_rejected", "Request is too large.")
        password = body.decode("utf-8", "replace")[: novatree.PASSWORD_MAX_SIZE]
        self.instances[record.instance_id] = attrs.evolve(record, password=password)
        return _Answer(200, novatree.TEXT_HTML, b"", "ok")

    # --- control endpoints -------------------------------------------------------------

    def _control(self, request: Request) -> bytes:
        name = request.path[len(_CONTROL_PREFIX) :]
        method = request.method
        result: Any
        if name == b"stats" and method == b"GET":
            result = self.stats.as_json()
        elif name == b"requests" and method == b"GET":
            result = self.stats.requests_as_json()
        elif name == b"reset" and method == b"POST":
            self.stats.reset()
            result = self.stats.as_json()
        elif name == b"config" and method in (b"GET", b"POST"):
            if method == b"POST":
                try:
                    self._configure(request.content.read())
                except ValueError as e:
                    request.setResponseCode(400)
                    return self._json(request, {"error": str(e)})
            result = self.config()
        else:
            request.setResponseCode(404)
            result = {"error": "no such control endpoint or method"}
        return self._json(request, result)

    def _json(self, request: Request, value: Any) -> bytes:
        body = json.dumps(value).encode("utf-8")
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.setHeader(PID_HEADER, self._pid)
        return body

    def config(self) -> dict[str, Any]:
        """C{{"delay": fixed seconds or None, "delay_dist": spec, "concurrency": n,
        "status_override": {path: status}}}."""
        return {
            "delay": self.delay,
            "delay_dist": self.service_time.spec,
            "concurrency": self.concurrency,
            "status_override": dict(self.status_override),
        }

    def _configure(self, raw: bytes) -> None:
        """Validate a POSTed configuration, apply it here and publish it to the other
        processes.

        @raise ValueError: not valid; nothing changed.
        """
        try:
            config = json.loads(raw)
        except ValueError as e:
            raise ValueError(f"not JSON: {e}") from None
        if not isinstance(config, dict) or set(config) - _CONFIG_KEYS:
            raise ValueError(
                'expected {"delay": seconds, "delay_dist": spec, "concurrency": n, '
                '"status_override": {path: status}}'
            )
        new = self.config()
        if "delay" in config and "delay_dist" in config:
            raise ValueError("give delay or delay_dist, not both")
        if "delay" in config:
            delay = config["delay"]
            if (
                not isinstance(delay, (int, float))
                or isinstance(delay, bool)
                or not math.isfinite(delay)
                or delay < 0
            ):
                raise ValueError("delay must be a non-negative number")
            new["delay_dist"] = ServiceTime.fixed(float(delay)).spec
        if "delay_dist" in config:
            if not isinstance(config["delay_dist"], str):
                raise ValueError("delay_dist must be a string such as exp:0.05")
            new["delay_dist"] = ServiceTime.parse(config["delay_dist"]).spec
        if "concurrency" in config:
            concurrency = config["concurrency"]
            if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 0:
                raise ValueError("concurrency must be a non-negative integer")
            concurrency_share(concurrency, self._board.processes, self.stats.index)
            new["concurrency"] = concurrency
        if "status_override" in config:
            overrides = config["status_override"]
            if not isinstance(overrides, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599
                for v in overrides.values()
            ):
                raise ValueError("status_override must map paths to HTTP status codes")
            new["status_override"] = overrides
        del new["delay"]
        self._config_generation = self._board.publish_config(json.dumps(new).encode("utf-8"))
        self._apply(new)

    def _load_config(self) -> None:
        """Apply the configuration another process published."""
        generation, raw = self._board.read_config()
        self._config_generation = generation
        self._apply(json.loads(raw))

    def _apply(self, config: Mapping[str, Any]) -> None:
        self.service_time = ServiceTime.parse(config["delay_dist"])
        self.concurrency = config["concurrency"]
        self._limit = concurrency_share(self.concurrency, self._board.processes, self.stats.index)
        self.status_override.clear()
        self.status_override.update(config["status_override"])
        self._pump()  # a higher limit lets queued requests in


# The root listing does not depend on the instance.
_ROOT_RECORD = InstanceRecord(instance_id="", project_id="", hostname="")


class _RecordingRequest(Request):
    """A request that also keeps its header lines as received: name case and order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raw_headers: list[tuple[bytes, bytes]] = []


class _RecordingChannel(HTTPChannel):
    def headerReceived(self, line: bytes) -> bool:
        ok = super().headerReceived(line)
        if ok and self.requests:
            raw = getattr(self.requests[-1], "raw_headers", None)
            if raw is not None:
                name, _, value = line.partition(b":")
                raw.append((name, value.strip(b" \t")))
        return ok


class QuietSite(Site):
    """A L{Site} with no access log, speaking plain HTTP/1.1 on a recording channel."""

    def log(self, request: Request) -> None:
        pass

    def protocol(self) -> HTTPChannel:  # type: ignore[override]
        # HTTPFactory.buildProtocol calls self.protocol(); a plain channel (no HTTP/2
        # negotiation wrapper) lets the channel record raw header lines.
        return _RecordingChannel()


def _fixed_ips(port: Mapping[str, Any]) -> list[str]:
    ips = []
    for item in port.get("fixed_ips") or ():
        ips.append(item["ip_address"] if isinstance(item, Mapping) else str(item))
    return ips


def _network_data(ports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    links, networks = [], []
    for index, port in enumerate(ports):
        port_id = str(port.get("id") or "port-%d" % index)
        link_id = "tap" + port_id[:11]
        links.append(
            {
                "id": link_id,
                "vif_id": port_id,
                "type": "ovs",
                "mtu": 1450,
                "ethernet_mac_address": port.get("mac_address", ""),
            }
        )
        for ip in _fixed_ips(port):
            version = ipaddress.ip_address(ip).version
            networks.append(
                {
                    "id": "network%d" % len(networks),
                    "type": "ipv4_dhcp" if version == 4 else "ipv6_dhcpv6-stateful",
                    "link": link_id,
                    "network_id": port.get("network_id", ""),
                }
            )
    return {"links": links, "networks": networks, "services": []}


_INSTANCE_KEYS = frozenset(
    {
        "hostname",
        "name",
        "project_id",
        "user_data",
        "user_data_base64",
        "user_data_gzip_base64",
        "public_keys",
        "floating_ip",
        "availability_zone",
        "password",
        "meta",
        "vendor_data",
        "instance_type",
        "launch_index",
        "security_groups",
    }
)


def _user_data(instance_id: str, entry: Mapping[str, Any]) -> bytes | None:
    keys = ("user_data", "user_data_base64", "user_data_gzip_base64")
    given = [k for k in keys if entry.get(k) is not None]
    if len(given) > 1:
        raise ValueError(f"instance {instance_id}: more than one of {', '.join(given)}")
    if not given:
        return None
    key = given[0]
    if key == "user_data":
        return str(entry[key]).encode("utf-8")
    try:
        data = base64.b64decode(entry[key], validate=True)
    except (binascii.Error, TypeError) as e:
        raise ValueError(f"instance {instance_id}: {key} is not base64: {e}") from None
    if key == "user_data_gzip_base64":
        try:
            gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ValueError(f"instance {instance_id}: {key} is not gzip: {e}") from None
    return data


def instances_from_table(table: Mapping[str, Any]) -> dict[str, InstanceRecord]:
    """The instances of a metaproxy lookup table (the C{ports.json} format).

    Every port with a C{device_id} whose C{device_owner} is not C{network:*} belongs to
    an instance; the project is the first such port's, C{local-ipv4} the first IPv4 on
    the instance's ports. The optional C{instances} section adds what Neutron does not
    know (hostname, user data, keys...); an instance with no entry gets a hostname from
    its id, no user data and no keys. An C{instances} entry with no port needs a
    C{project_id}. Gzipped user data (C{user_data_gzip_base64}) and other binary user
    data (C{user_data_base64}) are served byte for byte.

    @raise ValueError: an inconsistent or misspelt table.
    """
    ports_by_device: dict[str, list[Mapping[str, Any]]] = {}
    for port in table.get("ports") or ():
        device_id = port.get("device_id") or ""
        owner = port.get("device_owner") or ""
        if device_id and not owner.startswith("network:"):
            ports_by_device.setdefault(device_id, []).append(port)
    entries: Mapping[str, Any] = table.get("instances") or {}
    instance_ids = list(ports_by_device) + [i for i in entries if i not in ports_by_device]

    records = {}
    for instance_id in instance_ids:
        entry = entries.get(instance_id) or {}
        unknown = set(entry) - _INSTANCE_KEYS
        if unknown:
            raise ValueError(f"instance {instance_id}: unknown keys {sorted(unknown)}")
        ports = ports_by_device.get(instance_id, [])
        project_id = entry.get("project_id") or (ports[0].get("project_id") if ports else None)
        if not project_id:
            raise ValueError(f"instance {instance_id}: no port and no project_id")
        ipv4 = [
            ip for port in ports for ip in _fixed_ips(port) if ipaddress.ip_address(ip).version == 4
        ]
        records[instance_id] = InstanceRecord(
            instance_id=instance_id,
            project_id=project_id,
            hostname=entry.get("hostname") or "server-" + instance_id,
            local_ipv4=ipv4[0] if ipv4 else "",
            user_data=_user_data(instance_id, entry),
            public_keys=entry.get("public_keys") or {},
            floating_ip=entry.get("floating_ip") or "",
            availability_zone=entry.get("availability_zone") or "nova",
            name=entry.get("name") or "",
            launch_index=int(entry.get("launch_index", 0)),
            instance_type=entry.get("instance_type") or "m1.small",
            security_groups=entry.get("security_groups") or ("default",),
            password=entry.get("password") or "",
            meta=entry.get("meta") or {},
            vendor_data=entry.get("vendor_data") or {},
            network_data=_network_data(ports),
        )
    return records


def load_table(path: str) -> dict[str, Any]:
    """Read a lookup table file (JSON)."""
    with open(path, encoding="utf-8") as f:
        table = json.load(f)
    if not isinstance(table, dict):
        raise ValueError(f"{path}: the table must be a JSON object")
    return table


def make_site(
    table: Mapping[str, Any],
    secret: str | bytes,
    reactor: IReactorTime,
    delay: float = 0.0,
    *,
    service_time: ServiceTime | None = None,
    concurrency: int = 0,
    seed: int | None = None,
    status_override: MutableMapping[str, int] | None = None,
    max_recorded: int = 1000,
    board: SharedBoard | None = None,
    index: int = 0,
) -> tuple[QuietSite, NovaStats]:
    """Build the fake Nova for a parsed lookup table.

    @param table: the parsed C{ports.json} (see L{instances_from_table}).
    @param secret: C{metadata_proxy_shared_secret}.
    @param reactor: used for the service time and the channels' timeouts.
    @param delay: a fixed service time, in seconds; or give C{service_time}.
    @param concurrency: the total limit over all the processes of C{board}.
    @param seed: service times are drawn from C{random.Random(seed + index)}; C{None}
        seeds from the system.
    @param status_override: kept by reference: changing it later changes the answers.
    @param board: shared with the other processes of the fake (a private one if
        C{None}); C{index} is this process's row.
    @return: the site (its C{resource} is the L{FakeNova}) and its stats.
    @raise ValueError: an inconsistent table, or a concurrency limit below the number of
        processes.
    """
    stats = NovaStats(max_recorded=max_recorded, board=board, index=index)
    nova = FakeNova(
        instances_from_table(table),
        secret,
        reactor,
        stats,
        delay=delay,
        service_time=service_time,
        concurrency=concurrency,
        rng=random.Random(None if seed is None else seed + index),
        status_override=status_override,
    )
    site = QuietSite(nova, requestFactory=_RecordingRequest, reactor=reactor)
    site.noisy = False
    return site, stats


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _pem_certificates(data: bytes, path: str) -> list[bytes]:
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        raise ValueError(f"{path}: no PEM certificate")
    return blocks


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def tls_options(cert_path: str, key_path: str, client_ca_path: str | None = None) -> Any:
    """The server's C{CertificateOptions}; with a client CA, client certificates are
    required and checked against it."""
    from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate

    blocks = _pem_certificates(_read(cert_path), cert_path)
    leaf = PrivateCertificate.loadPEM(blocks[0] + b"\n" + _read(key_path))
    options: dict[str, Any] = {
        "privateKey": leaf.privateKey.original,
        "certificate": leaf.original,
        "extraCertChain": [Certificate.loadPEM(b).original for b in blocks[1:]],
    }
    if client_ca_path is not None:
        options["verify"] = True
        options["caCerts"] = [
            Certificate.loadPEM(b).original
            for b in _pem_certificates(_read(client_ca_path), client_ca_path)
        ]
        options["requireCertificate"] = True
    return CertificateOptions(**options)


def _describe(address: Any, scheme: str) -> str:
    host = getattr(address, "host", None)
    if host is None:
        return f"unix:{getattr(address, 'name', address)}"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{address.port}"


def _service_time_arg(spec: str) -> ServiceTime:
    try:
        return ServiceTime.parse(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fakenova", description="A fake Nova metadata API."
    )
    parser.add_argument("--table", required=True, help="lookup table (ports.json format)")
    secret = parser.add_mutually_exclusive_group(required=True)
    secret.add_argument("--secret", help="metadata_proxy_shared_secret")
    secret.add_argument(
        "--secret-file", help="file holding the secret (one trailing newline ignored)"
    )
    parser.add_argument(
        "--listen",
        default="tcp:8775:interface=127.0.0.1",
        help="server endpoint string (default %(default)s; tcp:0 picks a free port)",
    )
    parser.add_argument("--tls-cert", help="serve TLS with this certificate (PEM, chain allowed)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    parser.add_argument("--tls-client-ca", help="require client certificates issued by this CA")
    service = parser.add_mutually_exclusive_group()
    service.add_argument(
        "--delay", type=float, default=0.0, help="seconds before each answer (fixed)"
    )
    service.add_argument(
        "--delay-dist",
        type=_service_time_arg,
        metavar="SPEC",
        help="service time drawn for each request, in seconds: fixed:S, uniform:A:B, "
        "exp:MEAN (exponential) or lognormal:MEDIAN:SIGMA",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="seed for the service time draws (process I of --processes uses SEED+I; "
        "default: seeded from the system)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        metavar="N",
        help="Nova's workers: at most N requests in their service time at once, the others "
        "wait in FIFO order; 0 (default) is no limit. With --processes P, each process "
        "takes its share of N (N >= P)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="serve from N processes sharing the listening socket (default 1)",
    )
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--max-recorded",
        type=int,
        default=1000,
        help="requests kept (per process) for /_fakenova/requests",
    )
    parser.add_argument(
        "--log-level",
        default="warn",
        choices=["debug", "info", "warn", "error", "critical"],
        help="log to stderr from this level (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    if not (math.isfinite(args.delay) and args.delay >= 0):
        parser.error("--delay must not be negative")
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    if args.concurrency < 0:
        parser.error("--concurrency must not be negative")
    try:
        concurrency_share(args.concurrency, args.processes, 0)
    except ValueError as e:
        parser.error(f"--concurrency: {e}")
    if args.worker_index is not None and not 1 <= args.worker_index < args.processes:
        parser.error("--worker-index is for the processes --processes starts")
    args.service_time = args.delay_dist or ServiceTime.fixed(args.delay)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def _read_secret(args: argparse.Namespace) -> str:
    if args.secret is not None:
        return str(args.secret)
    with open(args.secret_file, encoding="utf-8") as f:
        value = f.read()
    return value[:-1] if value.endswith("\n") else value


def _site_from_args(
    reactor: Any, args: argparse.Namespace, board: SharedBoard, index: int
) -> tuple[Any, str]:
    """The factory to listen with (TLS-wrapped if asked) and its URL scheme."""
    site, _ = make_site(
        load_table(args.table),
        _read_secret(args),
        reactor,
        service_time=args.service_time,
        concurrency=args.concurrency,
        seed=args.seed,
        max_recorded=args.max_recorded,
        board=board,
        index=index,
    )
    if args.tls_cert is None:
        return site, "http"
    from twisted.protocols.tls import TLSMemoryBIOFactory

    options = tls_options(args.tls_cert, args.tls_key, args.tls_client_ca)
    return TLSMemoryBIOFactory(options, False, site), "https"


async def _serve(reactor: Any, args: argparse.Namespace) -> None:
    from twisted.internet.endpoints import serverFromString

    board = SharedBoard.create(args.processes, shared=args.processes > 1)
    factory, scheme = _site_from_args(reactor, args, board, 0)
    port = await serverFromString(reactor, args.listen).listen(factory)
    # Serve until the reactor stops (SIGTERM, SIGINT): react then exits with 0.
    running: Deferred[None] = Deferred()
    if args.processes > 1:
        from bench.fakenova_pool import WorkerPool

        pool = WorkerPool(reactor, args.argv, args.processes - 1, port.fileno(), board.fd)
        reactor.addSystemEventTrigger("before", "shutdown", pool.stop)
        await pool.start()
        running = pool.failed  # fails (exit status 1) if a worker exits on its own
    print(f"fakenova listening on {_describe(port.getHost(), scheme)}", flush=True)
    await running


async def _serve_worker(reactor: Any, args: argparse.Namespace) -> None:
    """A child of L{_serve}: serve the parent's socket until the parent closes our stdin."""
    from bench.fakenova_pool import BOARD_FD, LISTEN_FD, READY, watch_parent

    board = SharedBoard.attach(BOARD_FD)
    if board.processes != args.processes:
        raise RuntimeError(f"the board is for {board.processes} processes, not {args.processes}")
    factory, _ = _site_from_args(reactor, args, board, args.worker_index)
    listening = socket.socket(fileno=LISTEN_FD)
    family = listening.family
    port = reactor.adoptStreamPort(LISTEN_FD, family, factory)  # adopts a duplicate
    listening.close()
    if family == socket.AF_UNIX:
        # The socket file is the parent's: a worker must not unlink it when it stops.
        from twisted.internet.tcp import Port

        port.connectionLost = lambda reason: Port.connectionLost(port, reason)
    parent_gone = watch_parent(reactor, 0)
    try:
        os.write(1, READY)
    except BrokenPipeError:
        return  # the parent is gone already
    await parent_gone


def main(argv: Sequence[str] | None = None) -> None:
    """C{python -m bench.fakenova --table PATH (--secret S | --secret-file PATH)
    [--listen tcp:8775:interface=127.0.0.1] [--tls-cert PEM --tls-key PEM
    [--tls-client-ca PEM]] [--delay SECONDS | --delay-dist SPEC] [--seed N]
    [--concurrency N] [--processes N] [--max-recorded N] [--log-level warn]}.

    Prints C{fakenova listening on <url>} once listening (with all its processes),
    serves until SIGTERM, then exits with 0 (after its worker processes).
    """
    from twisted.internet.task import react  # imports the global reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    args = _parse_args(argv)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(args.log_level))
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])],
        redirectStandardIO=False,
    )
    if args.worker_index is not None:
        # Ctrl-C reaches the whole process group: the parent stops its workers itself.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        react(_serve_worker, (args,))
    react(_serve, (args,))


if __name__ == "__main__":
    main()
