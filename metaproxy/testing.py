"""In-memory doubles for testing code built on metaproxy, without sockets or processes.

In the spirit of C{treq.testing}: public, small, and free of any test framework, so
metaproxy's own tests and those of code that embeds its pipeline use the same doubles.

L{FakeNova}
    stands for Nova's metadata API where the pipeline sees it (a
    L{metaproxy.nova.endpoints.NovaEndpoints}), or for one
    L{metaproxy.nova.client.NovaClient} behind C{NovaEndpoints}: it records what each
    request would have sent and answers from a script, or from a function of the request.
L{echo_instance_id}
    a reply for L{FakeNova} whose body names the instance the request was made for, so
    a test can tell whose metadata an answer carries.
L{InMemoryPortBackend}
    a port backend (L{metaproxy.resolve.base.PortBackend}) over a table held in memory,
    answering every lookup with an already-fired Deferred and counting the lookups.

Nothing in metaproxy imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Union

from twisted.internet.defer import Deferred, fail, succeed

from metaproxy.nova.client import NovaResponse
from metaproxy.resolve.base import Port
from metaproxy.resolve.table import PortTable, parse_table

__all__ = ["FakeNova", "InMemoryPortBackend", "echo_instance_id"]

Headers = Sequence[tuple[bytes, bytes]]

#: What L{FakeNova} can be told to answer: a response, an exception (the request fails
#: with it), or a Deferred (returned as it is, for the test to fire or leave pending).
Answer = Union[NovaResponse, Exception, "Deferred[NovaResponse]"]

#: A function of one request (method, target, headers, body) giving its L{Answer}.
Reply = Callable[[bytes, bytes, Headers, bytes], Answer]

#: L{FakeNova}'s answer when it is given no script and no reply function.
DEFAULT_ANSWER = NovaResponse(200, b"OK", ((b"Content-Type", b"text/plain"),), b"data")


class FakeNova:
    """Nova's metadata API in memory: records each request, answers from a script.

    @param answers: answered in turn, one per request; the last one is repeated for
        every request after it. Without answers (and without C{reply}), every request
        gets L{DEFAULT_ANSWER}, a 200 with the body C{b"data"}.
    @param reply: instead of a script, a function of each request giving its answer
        (L{echo_instance_id}, say).
    @param in_flight: what a metrics scrape reads as the requests in flight to Nova.
    @param queued: what it reads as the requests waiting for a slot.
    @param idle: what it reads as the idle connections kept open to Nova.

    @ivar answers: the script still to come (a test may replace it midway).
    @ivar sent: C{(method, target, headers, body)} of each request, in order: what Nova
        would have received.
    @ivar time_limits: the optional fifth argument of each request, C{None} when none was
        given: the deadline (a clock time) a pipeline passes to C{NovaEndpoints}, or the
        timeout (seconds) C{NovaEndpoints} passes to a C{NovaClient}.
    @ivar closed: whether L{close} was called.
    """

    def __init__(
        self,
        *answers: Answer,
        reply: Reply | None = None,
        in_flight: int = 0,
        queued: int = 0,
        idle: int = 0,
    ) -> None:
        if answers and reply is not None:
            raise TypeError("FakeNova takes a script of answers or a reply function, not both")
        self.answers = list(answers) or [DEFAULT_ANSWER]
        self._reply = reply
        self.in_flight, self.queued, self.idle = in_flight, queued, idle
        self.sent: list[tuple[bytes, bytes, Headers, bytes]] = []
        self.time_limits: list[float | None] = []
        self.closed = False

    def forward(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes,
        time_limit: float | None = None,
    ) -> Deferred[NovaResponse]:
        """Record the request and answer it: at once, failed, or with the scripted Deferred."""
        self.sent.append((method, target, headers, body))
        self.time_limits.append(time_limit)
        if self._reply is not None:
            answer = self._reply(method, target, headers, body)
        elif len(self.answers) > 1:
            answer = self.answers.pop(0)
        else:
            answer = self.answers[0]
        if isinstance(answer, Exception):
            return fail(answer)
        if isinstance(answer, Deferred):
            return answer
        return succeed(answer)

    def close(self) -> Deferred[None]:
        """As a client's C{close}: nothing to close; fires at once."""
        self.closed = True
        return succeed(None)


def echo_instance_id(method: bytes, target: bytes, headers: Headers, body: bytes) -> NovaResponse:
    """A L{FakeNova} reply: 200 with the body C{b"metadata of <X-Instance-ID>"}."""
    instance = dict(headers)[b"X-Instance-ID"]
    return NovaResponse(200, b"OK", (), b"metadata of " + instance)


class InMemoryPortBackend:
    """A port backend over a table in memory; every lookup answers at once.

    It has the Deferred lookups only (no C{*_now} twins), so a resolver over it takes
    the same path as over a network backend.

    @param table: a parsed L{PortTable}, or the table's JSON document as Python values
        (C{{"routers": ..., "ports": [...]}}, see L{metaproxy.resolve.table}).
    @ivar calls: the lookups made so far, of any kind.
    """

    def __init__(self, table: PortTable | Mapping[str, object]) -> None:
        self.table = table if isinstance(table, PortTable) else parse_table(table)
        self.calls = 0

    def router_networks(self, router_id: str) -> Deferred[tuple[str, ...]]:
        self.calls += 1
        return succeed(self.table.router_networks(router_id))

    def ports_by_ip(self, networks: Sequence[str], ip: str) -> Deferred[list[Port]]:
        self.calls += 1
        return succeed(self.table.ports_by_ip(networks, ip))

    def ports_by_mac(self, networks: Sequence[str], mac: str) -> Deferred[list[Port]]:
        self.calls += 1
        return succeed(self.table.ports_by_mac(networks, mac))
