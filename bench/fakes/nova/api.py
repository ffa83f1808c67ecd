# -*- test-case-name: tests.bench.fakes.test_fakenova -*-
"""The fake Nova as one Twisted resource (L{FakeNova}) and the site serving it
(L{make_site}).

L{FakeNova} takes each request, records it, gets Nova's answer
(L{bench.fakes.nova.answers}) and writes it after its service time
(L{bench.fakes.nova.service_time}), queueing it while the concurrency limit is reached.
It also answers the control endpoints and applies the configuration they change, in
every process sharing its board (L{bench.fakes.nova.stats.SharedBoard}).
"""

from __future__ import annotations

import collections
import json
import math
import os
import random
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from bench.fakes import novatree
from bench.fakes.nova.answers import Answer, NovaAnswers
from bench.fakes.nova.instances import instances_from_table
from bench.fakes.nova.recording import QuietSite, RecordedRequest, RecordingRequest
from bench.fakes.nova.service_time import ServiceTime, concurrency_share
from bench.fakes.nova.stats import NovaStats, SharedBoard
from bench.fakes.novatree import InstanceRecord

__all__ = ["CONTROL_HEADER", "PID_HEADER", "FakeNova", "make_site"]

#: The header that marks a request to C{/_fakenova/...} as a control request.
CONTROL_HEADER = b"X-Fakenova-Control"
#: The header, on every answer, naming the process that answered.
PID_HEADER = b"X-Fakenova-Pid"
_CONTROL_PREFIX = b"/_fakenova/"


class _Job:
    """A request whose answer waits: in the queue, then in its service time."""

    __slots__ = ("request", "answer", "state", "call")

    QUEUED, SERVING, DONE, GONE = range(4)

    def __init__(self, request: Request, answer: Answer, state: int) -> None:
        self.request = request
        self.answer = answer
        self.state = state
        self.call: Any = None


_CONFIG_KEYS = frozenset({"delay", "delay_dist", "concurrency", "status_override"})


class FakeNova(Resource):
    """The whole fake Nova as one leaf resource.

    @ivar answers: Nova's answers (L{NovaAnswers}), from the instances and the secret.
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
        self.answers = NovaAnswers(
            dict(instances), secret.encode("utf-8") if isinstance(secret, str) else secret
        )
        self.instances = self.answers.instances
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

    @property
    def delay(self) -> float | None:
        """The fixed service time, or C{None} when it is drawn from a distribution."""
        return self.service_time.seconds

    @delay.setter
    def delay(self, seconds: float) -> None:
        self.service_time = ServiceTime.fixed(seconds)

    def render(self, request: Request) -> Any:
        if self._board.config_generation != self._config_generation:
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

    def _serve(self, request: Request, answer: Answer) -> None:
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

    def _write(self, request: Request, answer: Answer) -> None:
        request.setResponseCode(answer.status)
        request.setHeader(b"Content-Type", answer.content_type.encode("ascii"))
        request.setHeader(b"Content-Length", b"%d" % len(answer.body))
        request.setHeader(PID_HEADER, self._pid)
        request.write(answer.body)
        request.finish()

    # --- answers ---------------------------------------------------------------------------

    def _answer(self, request: Request, body: bytes) -> Answer:
        path = unquote_to_bytes(request.path).decode("utf-8", "replace")
        override = self.status_override.get(path)
        if override is not None:
            page = novatree.error_page(override) if override >= 400 else b""
            return Answer(override, novatree.TEXT_HTML, page, "override")
        return self.answers.answer(request, path, body)

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
    site = QuietSite(nova, requestFactory=RecordingRequest, reactor=reactor)
    site.noisy = False
    return site, stats
