# -*- test-case-name: tests.bench.load.test_storm,tests.integration.test_storm_run -*-
"""A storm's generator process (L{worker_main}): an asyncio loop running its share of
the boots and of the concurrency, each boot replaying cloud-init's sequence for one
instance, and sending its per-request and per-boot records (compact arrays) and its CPU
time to the parent in batches."""

from __future__ import annotations

import asyncio
import collections
import resource
import time
import traceback
from array import array
from typing import Any

import attrs

from bench.load.answer_parser import Answer, AnswerParser, BadHTTP, ClosedEarly
from bench.load.checks import (
    BACKLOG_FULL,
    BAD_HTTP,
    BARE_LF,
    BOOT_CLEAN,
    BOOT_FAILED,
    BOOT_WRONG,
    CLOSED,
    CONNECT_ERROR,
    OK,
    REFUSED,
    STATUS,
    TIMEOUT,
    TRAILING,
    TRANSPORT,
    check_answer,
)
from bench.load.cloudinit import BootFailed, boot_sequence
from bench.load.fleet import FleetInstance
from bench.load.targets import request_bytes

__all__ = ["WorkerSpec", "Worker", "worker_main", "cpu_seconds"]


@attrs.frozen
class WorkerSpec:
    index: int
    target: Any
    boots: tuple[tuple[int, FleetInstance], ...]  # (boot number, instance)
    total_boots: int
    concurrency: int
    ramp: float
    keepalive: bool
    request_timeout: float


class _Connection(asyncio.Protocol):
    """One connection to the target, carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = 0
        self._parser: AnswerParser | None = None
        self._waiter: asyncio.Future[Answer] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: this connection cannot be trusted
            return
        try:
            answer = parser.feed(data)
        except BadHTTP as e:
            self._waiter.set_exception(e)
            self.close()
            return
        if answer is not None:
            self._waiter.set_result(answer)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, parser = self._waiter, self._parser
        if waiter is None or waiter.done() or parser is None:
            return
        try:
            waiter.set_result(parser.eof())
        except (BadHTTP, ClosedEarly) as e:
            waiter.set_exception(e)

    async def request(self, data: bytes) -> Answer:
        if self.closed or self.transport is None:
            raise ClosedEarly("connection already closed")
        self.used += 1
        self._parser = AnswerParser()
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Worker:
    """One generator process: its boots, its records, its batches to the parent."""

    def __init__(self, spec: WorkerSpec, out: Any, t0: float) -> None:
        self.spec = spec
        self.out = out
        self.t0 = t0
        self.target = spec.target
        self._new_records()
        self.connections = 0
        self.rusage0 = cpu_seconds()

    def _new_records(self) -> None:
        self.r_boot, self.r_latency = array("i"), array("d")
        self.r_status, self.r_kind, self.r_flags = array("h"), array("b"), array("b")
        self.b_boot, self.b_start, self.b_end = array("i"), array("d"), array("d")
        self.b_requests, self.b_outcome = array("i"), array("b")
        self.b_kind, self.b_status = array("b"), array("h")

    def flush(self) -> None:
        payload = (
            self.r_boot,
            self.r_latency,
            self.r_status,
            self.r_kind,
            self.r_flags,
            self.b_boot,
            self.b_start,
            self.b_end,
            self.b_requests,
            self.b_outcome,
            self.b_kind,
            self.b_status,
            self.connections,
            cpu_seconds() - self.rusage0,
        )
        self.out.put(("batch", self.spec.index, payload))
        self._new_records()
        self.connections = 0

    async def run(self) -> None:
        pending = collections.deque(self.spec.boots)
        runners = [
            asyncio.create_task(self._runner(pending))
            for _ in range(min(self.spec.concurrency, len(pending)))
        ]
        flusher = asyncio.create_task(self._flush_loop())
        try:
            await asyncio.gather(*runners)
        finally:
            flusher.cancel()
        self.flush()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            self.flush()

    async def _runner(self, pending: collections.deque) -> None:
        spec = self.spec
        while pending:
            number, instance = pending.popleft()
            if spec.ramp:
                delay = self.t0 + spec.ramp * number / spec.total_boots - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self._boot(number, instance)

    async def _boot(self, number: int, instance: FleetInstance) -> None:
        spec = self.spec
        headers = self.target.headers(instance)
        keepalive = spec.keepalive
        sequence = boot_sequence()
        path = next(sequence)
        connection: _Connection | None = None
        start = time.monotonic()
        requests, outcome, end_kind, end_status = 0, BOOT_CLEAN, OK, 0
        try:
            while True:
                requests += 1
                data = request_bytes(path, headers, keepalive=keepalive)
                began = time.monotonic()
                kind, answer, connection = await self._request(instance, data, connection)
                now = time.monotonic()
                status = answer.status if answer is not None else 0
                flags = 0
                if answer is not None:
                    kind = check_answer(path, status, answer.body, instance)
                    self.r_latency.append(now - began)
                    flags = (BARE_LF if answer.bare_lf else 0) | (
                        TRAILING if answer.trailing else 0
                    )
                else:
                    self.r_latency.append(-1.0)  # no answer: not a latency sample
                self.r_flags.append(flags)
                self.r_boot.append(number)
                self.r_status.append(status)
                self.r_kind.append(kind)
                if kind in TRANSPORT:
                    outcome, end_kind, end_status = BOOT_FAILED, kind, status
                    break
                if kind != OK and outcome == BOOT_CLEAN:
                    outcome = BOOT_WRONG
                try:
                    path = sequence.send((status, answer.body))  # type: ignore[union-attr]
                except StopIteration:
                    break
                except BootFailed:
                    outcome, end_kind, end_status = BOOT_FAILED, STATUS, status
                    break
        finally:
            if connection is not None:
                connection.close()
        end = time.monotonic()
        self.b_boot.append(number)
        self.b_start.append(start - self.t0)
        self.b_end.append(end - self.t0)
        self.b_requests.append(requests)
        self.b_outcome.append(outcome)
        self.b_kind.append(end_kind)
        self.b_status.append(end_status)

    async def _request(
        self, instance: FleetInstance, data: bytes, connection: _Connection | None
    ) -> tuple[int, Answer | None, _Connection | None]:
        """One request: C{(kind, answer or None, connection to reuse or None)}."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.spec.request_timeout):
                while True:
                    reused = connection is not None and not connection.closed
                    if not reused:
                        if connection is not None:
                            connection.close()
                        try:
                            sock = await self.target.open(instance)
                        except ConnectionRefusedError:
                            return REFUSED, None, None
                        except BlockingIOError:
                            return BACKLOG_FULL, None, None
                        except OSError:
                            return CONNECT_ERROR, None, None
                        _, connection = await loop.create_connection(_Connection, sock=sock)
                        self.connections += 1
                    assert connection is not None
                    try:
                        answer = await connection.request(data)
                    except (ClosedEarly, ConnectionError):
                        connection.close()
                        if reused:  # the agent closed an idle kept-alive connection: retry
                            connection = None
                            continue
                        return CLOSED, None, None
                    except BadHTTP:
                        connection.close()
                        return BAD_HTTP, None, None
                    if answer.close or not self.spec.keepalive:
                        connection.close()
                        connection = None
                    return OK, answer, connection
        except TimeoutError:
            if connection is not None:
                connection.close()
            return TIMEOUT, None, None


def cpu_seconds() -> float:
    """This process's user and system CPU time, in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker_main(spec: WorkerSpec, out: Any, go: Any, t0: Any) -> None:
    """A generator process: say ready, wait for the start, run, say done."""
    try:
        out.put(("ready", spec.index, None))
        go.wait()
        worker = Worker(spec, out, t0.value)
        asyncio.run(worker.run())
        out.put(("done", spec.index, cpu_seconds() - worker.rusage0))
    except BaseException:
        out.put(("error", spec.index, traceback.format_exc()))
        raise
