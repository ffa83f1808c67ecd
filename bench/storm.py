# -*- test-case-name: tests.bench.test_storm,tests.integration.test_storm_run -*-
"""The boot-storm load generator: many instances running cloud-init's metadata sequence.

    fleet = make_fleet(1000, 50)
    config = StormConfig(instances=1000, routers=50, concurrency=200,
                         target="shared", shared_socket="/tmp/x/metadata_proxy")
    result = run_storm(config, fleet, agent_pids=[agent.pid])   # a report.StormResult

Each boot replays L{bench.cloudinit.boot_sequence} for one instance of the fleet (about 28
requests), one connection per request as haproxy's C{option http-server-close} makes them
(or, with C{keepalive}, one connection per boot reused while the agent keeps it open).
Boots start all at once or spread linearly over C{ramp} seconds; at most C{concurrency}
run at a time. The work is split over C{workers} processes (C{multiprocessing}, spawn),
each running an asyncio loop over its share of the boots and of the concurrency, and
streaming compact per-request records (arrays) and its own CPU time to the parent, which
prints a progress line to stderr once a second and builds the result.

A request is what haproxy sends to the agent: cloud-init's headers, C{Connection: close}
(without keep-alive), then the target's headers (the namespace header haproxy sets, and
C{X-Forwarded-For} last). A L{Target} says how to open a connection for an instance and
which headers to add: L{SharedSocket} (Neutron's shared socket) and L{NamespaceSockets}
(one socket per namespace) are here; L{bench.nstarget.HaproxyNamespaces} goes through a
real haproxy in network namespaces (it connects from the instance's namespace and
address, and adds no header: haproxy adds them).

Every answer is checked against the instance it belongs to (L{check_answer}) and counted
under one of L{KINDS}: C{ok}, or an error. A status cloud-init does not accept ends the
boot (its C{BootFailed}), as does an error without an answer (refused, timeout, bad
HTTP): v1 does not retry, where cloud-init would retry (503 with Retry-After, timeouts)
and haproxy would retry a refused connection (C{retries 3}). A wrong answer cloud-init
would accept (another instance's uuid, wrong user data) is an error and the boot goes on.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import json
import multiprocessing
import os
import queue as queue_module
import resource
import socket
import sys
import time
import traceback
import urllib.request
from array import array
from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from bench.cloudinit import BootFailed, acceptable, boot_sequence
from bench.fleet import Fleet, FleetInstance
from bench.procstat import PeakRSS, host_cpu_times, tree_cpu_seconds
from bench.report import BARE_LF_NAME, HOST_SATURATED, SATURATED, TRAILING_NAME, StormResult
from bench.unixhttp import find_head_end, split_head
from metaproxy.namespace import namespace_socket_path

__all__ = [
    "OK",
    "KINDS",
    "REFUSALS",
    "kind_name",
    "Target",
    "SharedSocket",
    "NamespaceSockets",
    "StormConfig",
    "BadHTTP",
    "ClosedEarly",
    "Answer",
    "AnswerParser",
    "find_head_end",
    "split_head",
    "request_bytes",
    "check_answer",
    "run_storm",
    "nova_stats",
    "BARE_LF",
    "TRAILING",
    "framing_name",
]

# ---- error kinds: one code per request; "status" is spelt with the status, "status 403"

OK = 0
REFUSED = 1
BACKLOG_FULL = 2
CONNECT_ERROR = 3
TIMEOUT = 4
CLOSED = 5
BAD_HTTP = 6
STATUS = 7
WRONG_INSTANCE = 8
WRONG_BODY = 9

#: Code to name. C{status} becomes C{status <code>} in results (L{kind_name}).
KINDS = {
    OK: "ok",
    REFUSED: "connection refused",  # nothing listens (ECONNREFUSED)
    BACKLOG_FULL: "backlog full",  # the listen queue is full (EAGAIN on a Unix connect)
    CONNECT_ERROR: "connect error",  # any other failure to connect (no such socket...)
    TIMEOUT: "timeout",  # no complete answer within request_timeout
    CLOSED: "closed without answer",  # EOF or reset before the first byte of an answer
    BAD_HTTP: "bad http",  # an answer that is not well-formed HTTP/1.x, or cut short
    STATUS: "status",  # a status cloud-init would not accept here
    WRONG_INSTANCE: "wrong instance",  # another instance's uuid, id, address or hostname
    WRONG_BODY: "wrong body",  # user data not byte-exact, 200 for absent user data...
}
#: Kinds after which the boot cannot go on (no answer to give cloud-init).
_TRANSPORT = frozenset({REFUSED, BACKLOG_FULL, CONNECT_ERROR, TIMEOUT, CLOSED, BAD_HTTP})
#: The refusals: the agent did not take the connection at all (nothing listens, or its
#: listen queue is full). Errors like the others, and also counted on their own
#: (L{bench.report.REFUSAL_KINDS}, C{refused connections} in the report).
REFUSALS = frozenset({REFUSED, BACKLOG_FULL})

#: Per-request framing flags (L{Answer.bare_lf}, L{Answer.trailing}): the answer was
#: taken, but it was not plain HTTP/1.1 framing. Counted as C{non-CRLF answers}.
BARE_LF = 1
TRAILING = 2


def framing_name(flags: int) -> str:
    """The C{non-CRLF answers} kind of a request's framing flags (non-zero)."""
    return ", ".join(
        name for flag, name in ((BARE_LF, BARE_LF_NAME), (TRAILING, TRAILING_NAME)) if flags & flag
    )


#: Boot outcomes.
BOOT_CLEAN, BOOT_WRONG, BOOT_FAILED = 0, 1, 2


def kind_name(code: int, status: int = 0) -> str:
    if code == STATUS:
        return f"status {status}"
    return KINDS[code]


# ---- targets


class Target(Protocol):
    """Where the storm's requests go. Must be picklable (it is sent to the workers).

    C{name} names it in results (C{shared}, C{namespaces}, ...).
    """

    name: str

    async def open(self, instance: FleetInstance) -> socket.socket:
        """A connected, non-blocking stream socket for C{instance}'s next request.

        @raise OSError: C{ConnectionRefusedError}, C{BlockingIOError} (backlog full) or
            any other; the storm counts them by kind.
        """

    def headers(self, instance: FleetInstance) -> bytes:
        """Header lines (each ending with CRLF) added after the client's, as haproxy adds
        them in front of the agent."""

    def describe(self) -> str:
        """One line for the report."""


def unix_connect(path: str) -> socket.socket:
    """Connect to the Unix socket C{path} without blocking, as haproxy does: an
    C{EAGAIN} (a full listen queue) is not waited out but raised (C{BlockingIOError})."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def haproxy_headers(instance: FleetInstance) -> bytes:
    """What Neutron's haproxy adds for an instance: its namespace's header (set on every
    kind of socket; the agent ignores it on a per-namespace socket), then
    C{X-Forwarded-For} last (C{option forwardfor})."""
    namespace = instance.namespace
    return (
        f"{namespace.kind.header_name}: {namespace.id}\r\nX-Forwarded-For: {instance.ip}\r\n"
    ).encode("latin-1")


@attrs.frozen
class SharedSocket:
    """Neutron's shared socket: the namespace is told by the header."""

    path: str
    name: str = "shared"

    async def open(self, instance: FleetInstance) -> socket.socket:
        return unix_connect(self.path)

    def headers(self, instance: FleetInstance) -> bytes:
        return haproxy_headers(instance)

    def describe(self) -> str:
        return f"shared socket {self.path}"


@attrs.frozen
class NamespaceSockets:
    """One socket per namespace: C{<directory>/<namespace name>.sock}."""

    directory: str
    name: str = "namespaces"

    async def open(self, instance: FleetInstance) -> socket.socket:
        return unix_connect(namespace_socket_path(self.directory, instance.namespace))

    def headers(self, instance: FleetInstance) -> bytes:
        return haproxy_headers(instance)

    def describe(self) -> str:
        return f"per-namespace sockets in {self.directory}"


# ---- configuration

#: C{haproxy} (L{bench.nstarget}) needs a built topology: it is given to L{run_storm}.
TARGET_KINDS = ("shared", "namespaces", "haproxy")


@attrs.frozen
class StormConfig:
    """How to run a storm.

    @ivar instances: boots to run: the first C{instances} instances of the fleet.
    @ivar routers: the fleet's router count (checked against the fleet).
    @ivar concurrency: most boots in progress at once, over all workers.
    @ivar ramp: seconds over which boot starts are spread evenly (0: all at once).
    @ivar keepalive: reuse a boot's connection while the agent keeps it open.
    @ivar target: C{shared} or C{namespaces}: which socket(s) of L{shared_socket} and
        L{namespace_socket_dir}; ignored when L{run_storm} is given a target, which
        C{haproxy} needs (L{bench.nstarget.start_haproxy_front}).
    @ivar workers: generator processes.
    @ivar request_timeout: seconds for one request, connecting included.
    @ivar nova_url: the fake Nova's base URL (C{http://127.0.0.1:PORT}) for its counters.
    @ivar progress: print a progress line to stderr once a second.
    @ivar label: what is measured, for the report (C{metaproxy}, ...).
    """

    instances: int
    routers: int
    concurrency: int = 200
    ramp: float = 0.0
    keepalive: bool = False
    target: str = "shared"
    shared_socket: str | None = None
    namespace_socket_dir: str | None = None
    workers: int = 2
    request_timeout: float = 30.0
    nova_url: str | None = None
    progress: bool = False
    label: str = "metaproxy"

    def __attrs_post_init__(self) -> None:
        if self.instances < 1 or self.concurrency < 1 or self.workers < 1:
            raise ValueError("instances, concurrency and workers must be at least 1")
        if self.ramp < 0 or self.request_timeout <= 0:
            raise ValueError("ramp must be >= 0 and request_timeout > 0")
        if self.target not in TARGET_KINDS:
            raise ValueError(f"target must be one of {', '.join(TARGET_KINDS)}")

    def make_target(self) -> Target:
        if self.target == "shared":
            if not self.shared_socket:
                raise ValueError("target 'shared' needs shared_socket")
            return SharedSocket(self.shared_socket)
        if self.target == "haproxy":
            raise ValueError(
                "target 'haproxy' needs its namespaces built: pass "
                "bench.nstarget.start_haproxy_front(...).target to run_storm"
            )
        if not self.namespace_socket_dir:
            raise ValueError("target 'namespaces' needs namespace_socket_dir")
        return NamespaceSockets(self.namespace_socket_dir)


# ---- requests and answers (sans-IO)

#: What cloud-init (python-requests) sends, before haproxy's additions.
CLIENT_HEADERS = (
    b"Host: 169.254.169.254\r\nUser-Agent: Cloud-Init/24.1\r\n"
    b"Accept-Encoding: gzip, deflate\r\nAccept: */*\r\n"
)


def request_bytes(path: str, added_headers: bytes, *, keepalive: bool) -> bytes:
    """A GET as haproxy forwards it: cloud-init's headers, C{Connection: close} unless
    keep-alive (HTTP/1.1 is persistent by default), then C{added_headers}."""
    return (
        b"GET "
        + path.encode("ascii")
        + b" HTTP/1.1\r\n"
        + CLIENT_HEADERS
        + (b"" if keepalive else b"Connection: close\r\n")
        + added_headers
        + b"\r\n"
    )


class BadHTTP(Exception):
    """The answer is not well-formed HTTP/1.x, or ended before its framing said."""


class ClosedEarly(Exception):
    """The connection ended before the first byte of an answer."""


@attrs.frozen
class Answer:
    """A parsed answer. C{headers}: C{(lower-case name, value)} pairs in order.
    C{close}: the connection cannot carry another request.

    Two departures from HTTP/1.1's framing are accepted (upstream's agent makes both) and
    recorded, so a report can count them: C{bare_lf}, the head's lines end with a bare
    C{LF} instead of C{CRLF} (upstream's own 404, 400 and 503 pages); C{trailing}, how
    many bytes came after the answer's end in the same read (a server that appends
    C{CRLF CRLF} after a body).
    """

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    close: bool
    bare_lf: bool = False
    trailing: int = 0

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class AnswerParser:
    """Incremental HTTP/1.x answer parser: C{feed} bytes as they come, C{eof} when the
    peer closes. Framing: C{Transfer-Encoding: chunked}, else C{Content-Length}, else
    the body runs to EOF. Interim 1xx answers are skipped. Bytes after a complete
    answer mark it C{close} (nothing is pipelined) and are counted in its C{trailing}.
    A head whose lines end with bare C{LF}s is accepted and marked C{bare_lf}."""

    def __init__(self, max_head: int = 65536) -> None:
        self._buffer = bytearray()
        self._max_head = max_head
        self._status = 0
        self._headers: tuple[tuple[bytes, bytes], ...] = ()
        self._close = False
        self._mode = ""  # "", "length", "chunked", "eof"
        self._length = 0
        self._body = bytearray()
        self._chunk_left = -1  # chunked: bytes left in this chunk, -1 reading a size line
        self._trailers = False
        self._received = False
        self._bare_lf = False
        self.done: Answer | None = None

    def feed(self, data: bytes) -> Answer | None:
        """Add bytes; the answer once complete (and on every later call), else None.

        @raise BadHTTP: the bytes cannot be an HTTP answer.
        """
        if self.done is not None:
            if data:
                self.done = attrs.evolve(
                    self.done, close=True, trailing=self.done.trailing + len(data)
                )
            return self.done
        if data:
            self._received = True
        self._buffer += data
        while not self._mode:
            found = find_head_end(self._buffer)
            if found is None:
                if len(self._buffer) > self._max_head:
                    raise BadHTTP(f"no end of head within {self._max_head} bytes")
                if not b"HTTP/1.".startswith(bytes(self._buffer[:7])):
                    raise BadHTTP(f"not an HTTP answer: {bytes(self._buffer[:40])!r}")
                return None
            end, after = found
            head = bytes(self._buffer[:end])
            del self._buffer[:after]
            self._head(head)
        return self._body_bytes()

    def eof(self) -> Answer:
        """The peer closed: the answer, if it is complete now.

        @raise ClosedEarly: not one byte came.
        @raise BadHTTP: the answer is incomplete.
        """
        if self.done is not None:
            return self.done
        if not self._received:
            raise ClosedEarly("closed before answering")
        if self._mode == "eof":
            return self._finish(bytes(self._body) + bytes(self._buffer), close=True)
        if not self._mode:
            raise BadHTTP("closed within the answer's head")
        if self._mode == "length":
            raise BadHTTP(f"closed after {len(self._body)} of {self._length} body bytes")
        raise BadHTTP("closed within a chunked body")

    def _head(self, head: bytes) -> None:
        lines, bare_lf = split_head(head)
        if not lines:
            raise BadHTTP("an empty head")
        parts = lines[0].split(b" ", 2)
        if (
            len(parts) < 2
            or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0")
            or len(parts[1]) != 3
            or not parts[1].isdigit()
        ):
            raise BadHTTP(f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip() or b" " in name:
                raise BadHTTP(f"bad header line {line[:80]!r}")
            headers.append((name.lower(), value.strip(b" \t")))
        if 100 <= status < 200:
            if status == 101:
                raise BadHTTP("101 Switching Protocols to a GET")
            return  # interim answer: the real one follows
        self._bare_lf = bare_lf
        self._status = status
        self._headers = tuple(headers)
        connection = {
            token.strip().lower()
            for key, value in headers
            if key == b"connection"
            for token in value.split(b",")
        }
        self._close = b"close" in connection or (
            parts[0] == b"HTTP/1.0" and b"keep-alive" not in connection
        )
        encodings = [value for key, value in headers if key == b"transfer-encoding"]
        lengths = {value for key, value in headers if key == b"content-length"}
        if encodings:
            if encodings[-1].split(b",")[-1].strip().lower() != b"chunked":
                raise BadHTTP("Transfer-Encoding without chunked last")
            self._mode = "chunked"
        elif status in (204, 304):
            self._mode, self._length = "length", 0
        elif lengths:
            if len(lengths) > 1:
                raise BadHTTP("several different Content-Length values")
            value = lengths.pop()
            if not value.isdigit():
                raise BadHTTP(f"bad Content-Length {value[:20]!r}")
            self._mode, self._length = "length", int(value)
        else:
            self._mode = "eof"

    def _body_bytes(self) -> Answer | None:
        if self._mode == "length":
            need = self._length - len(self._body)
            self._body += self._buffer[:need]
            extra = len(self._buffer) > need
            del self._buffer[:need]
            if len(self._body) == self._length:
                trailing = len(self._buffer)
                self._buffer.clear()
                return self._finish(
                    bytes(self._body), close=self._close or extra, trailing=trailing
                )
            return None
        if self._mode == "eof":
            self._body += self._buffer
            self._buffer.clear()
            return None
        return self._chunked()

    def _chunked(self) -> Answer | None:
        buffer = self._buffer
        while True:
            if self._trailers:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return None
                line = bytes(buffer[:end])
                del buffer[: end + 2]
                if not line:
                    trailing = len(buffer)
                    buffer.clear()
                    return self._finish(
                        bytes(self._body), close=self._close or bool(trailing), trailing=trailing
                    )
                continue
            if self._chunk_left < 0:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > 1024:
                        raise BadHTTP("chunk size line too long")
                    return None
                size = bytes(buffer[:end]).split(b";", 1)[0].strip()
                del buffer[: end + 2]
                try:
                    self._chunk_left = int(size, 16)
                except ValueError:
                    raise BadHTTP(f"bad chunk size {size[:20]!r}") from None
                if self._chunk_left == 0:
                    self._trailers = True
                continue
            if len(buffer) < self._chunk_left + 2:
                return None
            if buffer[self._chunk_left : self._chunk_left + 2] != b"\r\n":
                raise BadHTTP("chunk not followed by CRLF")
            self._body += buffer[: self._chunk_left]
            del buffer[: self._chunk_left + 2]
            self._chunk_left = -1

    def _finish(self, body: bytes, *, close: bool, trailing: int = 0) -> Answer:
        self.done = Answer(self._status, self._headers, body, close, self._bare_lf, trailing)
        return self.done


_OPENSTACK_PREFIX = "/openstack/"


def check_answer(path: str, status: int, body: bytes, instance: FleetInstance) -> int:
    """L{OK} if C{(status, body)} is the right answer to C{path} for C{instance}, else the
    error kind: L{STATUS} (a status L{bench.cloudinit.acceptable} refuses, or a 404 for
    user data the instance has), L{WRONG_INSTANCE} (another instance's uuid, EC2 id,
    address, hostname or key), L{WRONG_BODY} (user data not byte-exact, a 200 for absent
    user data, an unreadable C{meta_data.json})."""
    if not acceptable(path, status):
        return STATUS
    if path.startswith(_OPENSTACK_PREFIX) and path.endswith("/user_data"):
        if instance.user_data is None:
            return OK if status == 404 else WRONG_BODY
        if status != 200:  # cloud-init takes the 404, but this instance has user data
            return STATUS
        return OK if body == instance.user_data else WRONG_BODY
    if path.startswith(_OPENSTACK_PREFIX) and path.endswith("/meta_data.json"):
        try:
            document = json.loads(body)
            uuid, hostname = document["uuid"], document["hostname"]
        except (ValueError, KeyError, TypeError):
            return WRONG_BODY
        if uuid != instance.instance_id or hostname != instance.hostname:
            return WRONG_INSTANCE
        return OK
    expected: str | None = None
    if path == "/latest/meta-data/instance-id":
        expected = instance.ec2_instance_id
    elif path == "/latest/meta-data/local-ipv4":
        expected = instance.ip
    elif path in ("/latest/meta-data/hostname", "/latest/meta-data/local-hostname"):
        expected = instance.hostname
    elif path.startswith("/latest/meta-data/public-keys/") and path.endswith("/openssh-key"):
        index = path.split("/")[4]
        keys = instance.public_keys
        if not index.isdigit() or int(index) >= len(keys):
            return WRONG_INSTANCE
        expected = keys[int(index)][1]
    if expected is not None and body != expected.encode("utf-8"):
        return WRONG_INSTANCE
    return OK


# ---- the worker processes


@attrs.frozen
class _WorkerSpec:
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


class _Worker:
    """One generator process: its boots, its records, its batches to the parent."""

    def __init__(self, spec: _WorkerSpec, out: Any, t0: float) -> None:
        self.spec = spec
        self.out = out
        self.t0 = t0
        self.target = spec.target
        self._new_records()
        self.connections = 0
        self.rusage0 = _cpu()

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
            _cpu() - self.rusage0,
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
                if kind in _TRANSPORT:
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


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker_main(spec: _WorkerSpec, out: Any, go: Any, t0: Any) -> None:
    """A generator process: say ready, wait for the start, run, say done."""
    try:
        out.put(("ready", spec.index, None))
        go.wait()
        worker = _Worker(spec, out, t0.value)
        asyncio.run(worker.run())
        out.put(("done", spec.index, _cpu() - worker.rusage0))
    except BaseException:
        out.put(("error", spec.index, traceback.format_exc()))
        raise


# ---- the parent: start workers, collect, measure, build the result


def nova_stats(nova_url: str, timeout: float = 10.0) -> dict[str, Any]:
    """The fake Nova's C{/_fakenova/stats}."""
    request = urllib.request.Request(
        nova_url.rstrip("/") + "/_fakenova/stats", headers={"X-Fakenova-Control": "1"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def _stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    def diff(key: str) -> dict[str, int]:
        a, b = before.get(key) or {}, after.get(key) or {}
        return {
            k: b.get(k, 0) - a.get(k, 0)
            for k in sorted(set(a) | set(b))
            if b.get(k, 0) - a.get(k, 0)
        }

    return {
        "total": after.get("total", 0) - before.get("total", 0),
        "by_status": diff("by_status"),
        "by_outcome": diff("by_outcome"),
    }


class _Collector:
    """The parent's side: merges the workers' batches."""

    def __init__(self, boots: int, workers: int) -> None:
        self.boots = boots
        self.r_boot, self.r_latency = array("i"), array("d")
        self.r_status, self.r_kind, self.r_flags = array("h"), array("b"), array("b")
        self.b_boot, self.b_start, self.b_end = array("i"), array("d"), array("d")
        self.b_requests, self.b_outcome = array("i"), array("b")
        self.b_kind, self.b_status = array("b"), array("h")
        self.connections = 0
        self.worker_cpu = [0.0] * workers
        self.errors = 0

    def add(self, worker: int, payload: tuple) -> None:
        (
            r_boot,
            r_latency,
            r_status,
            r_kind,
            r_flags,
            b_boot,
            b_start,
            b_end,
            b_requests,
            b_outcome,
            b_kind,
            b_status,
            connections,
            cpu,
        ) = payload
        self.r_boot += r_boot
        self.r_latency += r_latency
        self.r_status += r_status
        self.r_kind += r_kind
        self.r_flags += r_flags
        self.b_boot += b_boot
        self.b_start += b_start
        self.b_end += b_end
        self.b_requests += b_requests
        self.b_outcome += b_outcome
        self.b_kind += b_kind
        self.b_status += b_status
        self.connections += connections
        self.worker_cpu[worker] = cpu
        self.errors += sum(1 for k in r_kind if k != OK)

    def progress(self, label: str, elapsed: float, last: tuple[float, int]) -> str:
        done = len(self.r_kind)
        span = elapsed - last[0]
        rate = (done - last[1]) / span if span > 0 else 0.0
        busy = ", ".join(f"{cpu / elapsed:.0%}" if elapsed > 0 else "-" for cpu in self.worker_cpu)
        return (
            f"[storm {label}] {elapsed:6.1f} s  {done:,} requests  {rate:,.0f}/s  "
            f"boots {len(self.b_boot):,}/{self.boots:,}  errors {self.errors:,}  "
            f"generator CPU {busy}"
        )


def run_storm(
    config: StormConfig,
    fleet: Fleet,
    agent_pids: Sequence[int],
    *,
    target: Target | None = None,
    nova_pids: Sequence[int] = (),
    label: str | None = None,
) -> StormResult:
    """Run one storm and measure it.

    @param agent_pids: the agent's processes (their descendants are found and included)
        for CPU time and peak RSS; may be empty (no agent figures).
    @param target: where requests go; default C{config.make_target()}. Any L{Target}
        works, e.g. an upstream agent's socket: C{SharedSocket(path)}.
    @param nova_pids: the fake Nova's processes, for its CPU time.
    @raise ValueError: the config does not match the fleet.
    @raise RuntimeError: a generator process failed.
    """
    if config.instances > len(fleet.instances):
        raise ValueError(f"the fleet has {len(fleet.instances)} instances, not {config.instances}")
    if config.routers != fleet.routers:
        raise ValueError(f"the fleet has {fleet.routers} routers, not {config.routers}")
    target = target if target is not None else config.make_target()
    label = label or config.label
    instances = fleet.instances[: config.instances]
    workers = min(config.workers, len(instances))
    concurrency = min(config.concurrency, len(instances))
    boots = list(enumerate(instances))
    specs = []
    for w in range(workers):
        share = concurrency // workers + (1 if w < concurrency % workers else 0)
        specs.append(
            _WorkerSpec(
                index=w,
                target=target,
                boots=tuple(boots[w::workers]),
                total_boots=len(boots),
                concurrency=max(1, share),
                ramp=config.ramp,
                keepalive=config.keepalive,
                request_timeout=config.request_timeout,
            )
        )

    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    go = context.Event()
    t0 = context.Value("d", 0.0, lock=False)
    processes = [
        context.Process(
            target=_worker_main,
            args=(spec, out, go, t0),
            name=f"storm-worker-{spec.index}",
            daemon=True,
        )
        for spec in specs
    ]
    for process in processes:
        process.start()
    collector = _Collector(len(boots), workers)
    sampler: PeakRSS | None = None
    try:
        _wait_ready(out, processes)
        nova_before = nova_stats(config.nova_url) if config.nova_url else None
        agent_cpu0 = tree_cpu_seconds(agent_pids) if agent_pids else None
        nova_cpu0 = tree_cpu_seconds(nova_pids) if nova_pids else None
        host0 = host_cpu_times()
        collector_cpu0 = _cpu()
        sampler = PeakRSS(agent_pids).start() if agent_pids else None
        started = datetime.datetime.now(datetime.UTC)
        t0.value = time.monotonic() + 0.02
        go.set()
        worker_cpu = _collect(
            out, processes, collector, config.progress, f"{label} {target.name}", t0.value
        )
        wall = time.monotonic() - t0.value
        peak = sampler.stop() if sampler is not None else None
        agent_cpu = tree_cpu_seconds(agent_pids) - agent_cpu0 if agent_cpu0 is not None else None
        nova_cpu = tree_cpu_seconds(nova_pids) - nova_cpu0 if nova_cpu0 is not None else None
        host1 = host_cpu_times()
        collector_cpu = _cpu() - collector_cpu0
        nova_after = nova_stats(config.nova_url) if config.nova_url else None
    finally:
        if sampler is not None:
            sampler.stop()
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)
        out.close()

    return _result(
        config,
        fleet,
        target,
        label,
        collector,
        started,
        wall,
        worker_cpu,
        collector_cpu,
        agent_pids,
        agent_cpu,
        sampler,
        peak,
        nova_before,
        nova_after,
        nova_cpu,
        host0,
        host1,
        workers,
        concurrency,
    )


def _wait_ready(out: Any, processes: list, timeout: float = 120.0) -> None:
    ready = 0
    deadline = time.monotonic() + timeout
    while ready < len(processes):
        try:
            kind, index, detail = out.get(timeout=0.2)
        except queue_module.Empty:
            _check_alive(processes)
            if time.monotonic() > deadline:
                raise RuntimeError(f"generator processes not ready after {timeout} s") from None
            continue
        if kind == "error":
            raise RuntimeError(f"generator process {index} failed:\n{detail}")
        ready += kind == "ready"


def _check_alive(processes: list) -> None:
    for process in processes:
        if process.exitcode not in (None, 0):
            raise RuntimeError(f"generator process {process.name} exited with {process.exitcode}")


def _collect(
    out: Any, processes: list, collector: _Collector, progress: bool, label: str, t0: float
) -> list[float]:
    done: dict[int, float] = {}
    next_line = t0 + 1.0
    last = (0.0, 0)
    while len(done) < len(processes):
        try:
            kind, index, detail = out.get(timeout=0.2)
        except queue_module.Empty:
            kind = ""
            _check_alive([p for i, p in enumerate(processes) if i not in done])
        if kind == "batch":
            collector.add(index, detail)
        elif kind == "done":
            done[index] = detail
        elif kind == "error":
            raise RuntimeError(f"generator process {index} failed:\n{detail}")
        now = time.monotonic()
        if progress and now >= next_line:
            elapsed = now - t0
            print(collector.progress(label, elapsed, last), file=sys.stderr, flush=True)
            last = (elapsed, len(collector.r_kind))
            next_line += 1.0
    return [done[i] for i in range(len(processes))]


def _result(
    config: StormConfig,
    fleet: Fleet,
    target: Target,
    label: str,
    c: _Collector,
    started: datetime.datetime,
    wall: float,
    worker_cpu: list[float],
    collector_cpu: float,
    agent_pids: Sequence[int],
    agent_cpu: float | None,
    sampler: PeakRSS | None,
    peak: int | None,
    nova_before: dict | None,
    nova_after: dict | None,
    nova_cpu: float | None,
    host0: tuple[float, float],
    host1: tuple[float, float],
    workers: int,
    concurrency: int,
) -> StormResult:
    errors: collections.Counter[str] = collections.Counter()
    for kind, status in zip(c.r_kind, c.r_status, strict=False):
        if kind != OK:
            errors[kind_name(kind, status)] += 1
    nonstandard = collections.Counter(framing_name(flags) for flags in c.r_flags if flags)
    boot_failures: collections.Counter[str] = collections.Counter()
    boot_times, lengths = [], [0] * c.boots
    completed = clean = 0
    for boot, start, end, requests, outcome, kind, status in zip(
        c.b_boot, c.b_start, c.b_end, c.b_requests, c.b_outcome, c.b_kind, c.b_status, strict=False
    ):
        lengths[boot] = requests
        if outcome == BOOT_FAILED:
            boot_failures[kind_name(kind, status)] += 1
        else:
            completed += 1
            clean += outcome == BOOT_CLEAN
            boot_times.append(round(end - start, 6))
    duration = max(c.b_end) if len(c.b_end) else wall
    busy = [cpu / duration if duration > 0 else 0.0 for cpu in worker_cpu]
    host_busy = (host1[0] - host0[0]) / (host1[1] - host0[1]) if host1[1] > host0[1] else 0.0
    notes = []
    if max(busy, default=0) >= SATURATED:
        notes.append(
            f"the generator was saturated (a worker used {max(busy):.0%} of a core): "
            "the figures are a floor, not the agent's limit; add --workers or cores"
        )
    if host_busy >= HOST_SATURATED:
        notes.append(
            f"the host's CPUs were {host_busy:.0%} busy: the agent, the fake Nova and "
            "the generator shared them, so the figures are a floor for a node whose "
            "CPUs serve the agent alone"
        )
    if sum(boot_failures.values()):
        notes.append(
            "v1 does not retry: a boot ends at its first failure, where cloud-init "
            "would retry (503 with Retry-After, timeouts) and haproxy would retry "
            "a refused connection"
        )
    settings = {
        "instances": config.instances,
        "routers": fleet.routers,
        "fleet": fleet.describe()
        if config.instances == len(fleet.instances)
        else f"{config.instances} of {fleet.describe()}",
        "namespaces": len({i.namespace for i in fleet.instances[: config.instances]}),
        "seed": fleet.seed,
        "concurrency": concurrency,
        "ramp": config.ramp,
        "keepalive": config.keepalive,
        "workers": workers,
        "request_timeout": config.request_timeout,
        "target_description": target.describe(),
    }
    nova = None
    if nova_before is not None and nova_after is not None:
        nova = _stats_delta(nova_before, nova_after)
        nova["cpu_seconds"] = nova_cpu
    elif nova_cpu is not None:
        nova = {"cpu_seconds": nova_cpu}
    return StormResult(
        label=label,
        target=target.name,
        settings=settings,
        started=started.isoformat(timespec="seconds"),
        duration=round(duration, 6),
        requests=len(c.r_kind),
        good=sum(1 for k in c.r_kind if k == OK),
        connections=c.connections,
        errors=dict(errors),
        nonstandard=dict(nonstandard),
        boots=len(c.b_boot),
        boots_completed=completed,
        boots_clean=clean,
        boot_failures=dict(boot_failures),
        latencies=[round(v, 6) for v in c.r_latency if v >= 0],
        boot_times=boot_times,
        boot_lengths=lengths,
        generator={
            "workers": workers,
            "cpu_seconds": [round(v, 3) for v in worker_cpu],
            "busy": [round(v, 3) for v in busy],
            "collector_cpu_seconds": round(collector_cpu, 3),
        },
        agent={
            "pids": list(agent_pids),
            "processes": sampler.max_processes if sampler is not None else 0,
            "cpu_seconds": None if agent_cpu is None else round(agent_cpu, 3),
            "peak_rss_bytes": peak,
            "peak_hwm_bytes": sampler.peak_hwm_bytes if sampler is not None else None,
        },
        nova=nova,
        host={"cpus": os.cpu_count(), "busy": round(host_busy, 3)},
        notes=notes,
    )
