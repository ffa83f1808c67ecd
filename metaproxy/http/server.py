"""The thin Twisted shell around the pipeline: one request per connection.

Bytes go to a L{RequestParser}; a complete request goes to the L{Pipeline}; the answer's
bytes go back and the connection is closed. A malformed, oversized or too slow request
is answered by the agent (400/408/413/431/501/505) and logged; nothing is ever dropped
without an answer while the client is still there.

On a TCP listener inside a namespace (C{peer=True}) the caller is the connection's peer
(L{metaproxy.caller.identify_peer}), found once per connection and handed to the
pipeline; the headers a guest may have written to pass for someone else
(C{X-Forwarded-For}, the namespace headers) are not read for it, only counted.

Request timeouts are kept by one L{RequestTimeouts} per reactor and timeout, not by a
timer per connection: a connection lives for a millisecond or so, and costs a dict entry
instead of a reactor timer armed and cancelled; thousands of slow connections cost the
reactor one timer, not thousands.
"""

from __future__ import annotations

import weakref
from typing import Protocol as TypingProtocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from metaproxy.caller import Identity, identify_peer
from metaproxy.deadlines import Deadlines
from metaproxy.http.connlimit import ConnectionLimit
from metaproxy.http.request import Request, RequestError, RequestParser
from metaproxy.http.response import error_response
from metaproxy.namespace import Namespace, NamespaceKind
from metaproxy.ops.metrics import RequestStats

__all__ = ["Handler", "Limits", "MetadataProtocol", "MetadataFactory", "RequestTimeouts"]

log = Logger("metaproxy.server")


class Handler(TypingProtocol):
    """What answers a parsed request: L{metaproxy.pipeline.Pipeline}, one layer up. The
    shell knows only this shape, so http/ never imports the pipeline."""

    def handle(
        self, request: Request, namespace: Namespace | None, caller: Identity | None = None
    ) -> Deferred[bytes]: ...


_UNKNOWN = "An unknown error has occurred. Please try your request again."
#: A namespace header's name as the parser gives it (lower case) -> its metric label.
_NAMESPACE_HEADER_LABEL = {kind.header: kind.header_name for kind in NamespaceKind}


@attrs.frozen
class Limits:
    """Request limits ([metaproxy] options).

    @ivar max_connections_per_namespace: connections open at once on one namespace's
        socket (0: no bound); the shared socket is bounded by C{connections} alone.
    @ivar connections: the bound on connections open at once in this process, over
        every listener that shares this L{Limits} (C{connections.open},
        C{connections.refused}).
    @ivar refusal_log_interval: seconds between two log lines about refused connections.
    """

    max_header_bytes: int = 16384
    max_headers: int = 100
    max_body_bytes: int = 65536
    request_timeout: float = 30.0
    max_connections_per_namespace: int = 0
    connections: ConnectionLimit = attrs.field(factory=ConnectionLimit, eq=False, repr=False)
    refusal_log_interval: float = 60.0
    retry_after: int = 1


class RequestTimeouts(Deadlines["MetadataProtocol"]):
    """The request timeout of every connection waiting for its request, on one timer
    (L{Deadlines}).

    A connection is added when it is made and discarded once its request is complete
    (or it is answered, or lost); one past its deadline is timed out
    (L{MetadataProtocol.request_timed_out}). The timer is set again only when a
    connection arrives after a quiet moment: in a boot storm (50 at once) once per ~20
    connections instead of once per connection.

    @ivar timeout: seconds a connection has to send its whole request.
    """

    def __init__(self, clock: IReactorTime, timeout: float) -> None:
        super().__init__(clock, timeout, _time_out)

    @classmethod
    def shared(cls, clock: IReactorTime, timeout: float) -> RequestTimeouts:
        """The one instance for C{clock} and C{timeout}, shared by every listener."""
        try:
            by_timeout = _shared.setdefault(clock, {})
        except TypeError:  # a clock that cannot be referred to weakly: not shared
            return cls(clock, timeout)
        timeouts = by_timeout.get(timeout)
        if timeouts is None:
            # through a weak proxy, so that the entry does not keep its clock alive
            timeouts = by_timeout[timeout] = cls(weakref.proxy(clock), timeout)
        return timeouts


def _time_out(connection: MetadataProtocol) -> None:
    try:
        connection.request_timed_out()
    except Exception:
        log.failure("Error while timing out a request")


#: RequestTimeouts.shared's instances, per clock (usually the one reactor)
_shared: weakref.WeakKeyDictionary[IReactorTime, dict[float, RequestTimeouts]] = (
    weakref.WeakKeyDictionary()
)


class MetadataProtocol(Protocol):
    """One connection from a namespace proxy."""

    def __init__(self, factory: MetadataFactory) -> None:
        self._factory = factory
        limits = factory.limits
        self._parser = RequestParser(
            limits.max_header_bytes, limits.max_headers, limits.max_body_bytes
        )
        self._timeouts = factory.timeouts
        self._pending: Deferred[bytes] | None = None
        self._done = False
        self._lost = False
        self._started = 0.0
        #: the caller, on a TCP listener inside the namespace (the peer)
        self._caller: Identity | None = None

    def connectionMade(self) -> None:
        factory = self._factory
        if factory.peer:
            assert factory.namespace is not None
            self._caller = identify_peer(factory.namespace, self.transport.getPeer().host)
        self._timeouts.add(self)
        self._started = factory.clock.seconds()
        factory.stats.open += 1

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return  # one request per connection; anything after it is ignored
        try:
            request = self._parser.feed(data)
        except RequestError as e:
            log.warn(
                "Refused a malformed request on {socket}: {status} {reason}",
                socket=self._factory.describe(),
                status=e.status,
                reason=e.message,
            )
            self._factory.stats.refuse(e.status)
            self._answer(error_response(e.status, e.message))
            return
        if request is None:
            return
        self._done = True
        self._timeouts.discard(self)
        factory = self._factory
        caller = self._caller
        if caller is None:
            self._pending = factory.pipeline.handle(request, factory.namespace)
        else:
            if request.forwarded_for_count or request.namespace_headers:
                _count_guest_headers(factory.stats, request)
            self._pending = factory.pipeline.handle(request, factory.namespace, caller)
        self._pending.addCallbacks(self._answer, self._failed)

    def _answer(self, data: bytes) -> None:
        self._pending = None
        self._done = True
        self._timeouts.discard(self)
        if not self._lost:
            self.transport.write(data)
            self.transport.loseConnection()
            # the one place every answer is counted (metaproxy.ops.metrics)
            factory = self._factory
            factory.stats.record(factory.kind, data[9:12], factory.clock.seconds() - self._started)

    def _failed(self, failure: Failure) -> None:
        self._pending = None
        if self._lost:
            return  # cancelled because the client went away: nobody to answer
        # the pipeline answers every error itself, so this is a bug; still answer
        log.failure("Unexpected error while answering a request", failure)
        self._answer(error_response(500, _UNKNOWN))

    def request_timed_out(self) -> None:
        """The request did not arrive within the request timeout (L{RequestTimeouts})."""
        if self._done or self._lost:
            return
        if self._parser.started:
            log.warn(
                "Request on {socket} not complete after {timeout} seconds; answered 408",
                socket=self._factory.describe(),
                timeout=self._factory.limits.request_timeout,
            )
            self._factory.stats.refuse(408)
            self._answer(error_response(408, "The request was not received in time."))
        else:
            self._done = True
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._lost = True
        self._factory.connectionClosed()
        self._factory.stats.open -= 1
        self._timeouts.discard(self)
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()


def _count_guest_headers(stats: RequestStats, request: Request) -> None:
    """Count the identity headers a guest sent to a TCP listener (once per request
    and header)."""
    if request.forwarded_for_count:
        stats.guest_header("X-Forwarded-For")
    seen = set()
    for name, _ in request.namespace_headers:
        if name not in seen:
            seen.add(name)
            stats.guest_header(_NAMESPACE_HEADER_LABEL[name])


class RefusedConnection(Protocol):
    """A connection over a connection bound: answered 503 and closed; nothing is read."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    def connectionMade(self) -> None:
        self.transport.write(self._answer)
        self.transport.loseConnection()  # also stops reading

    def dataReceived(self, data: bytes) -> None:
        pass


class MetadataFactory(Factory):
    """Builds protocols for one listener: the shared socket (C{namespace=None}), one
    namespace's socket, or (C{peer=True}) a namespace's TCP listener inside it, whose
    callers are the connections' peers (its sockets share this factory and its bound).

    @param timeouts: keeps the request timeouts; by default the one
        L{RequestTimeouts} of C{clock} and C{limits.request_timeout}, shared with every
        other listener on that clock.
    @param stats: where answers and open connections are counted (L{metaproxy.ops.metrics});
        by default this factory's own.
    @param peer: the callers are the connections' peers, the listener being a TCP socket
        inside C{namespace} (L{metaproxy.http.listeners.Listeners.add_tcp}).
    """

    noisy = False
    protocol = MetadataProtocol

    def __init__(
        self,
        pipeline: Handler,
        namespace: Namespace | None,
        limits: Limits,
        clock: IReactorTime,
        *,
        timeouts: RequestTimeouts | None = None,
        stats: RequestStats | None = None,
        peer: bool = False,
    ) -> None:
        if peer and namespace is None:
            raise ValueError("a TCP listener's factory needs its namespace")
        self.pipeline = pipeline
        self.namespace = namespace
        #: the callers are the connections' peers (a TCP listener inside the namespace)
        self.peer = peer
        self.limits = limits
        self.clock = clock
        self.timeouts = (
            timeouts
            if timeouts is not None
            else RequestTimeouts.shared(clock, limits.request_timeout)
        )
        #: this listener's own bound (namespace sockets only); C{limits.connections}
        #: bounds the process
        self.connections = ConnectionLimit(
            limits.max_connections_per_namespace if namespace is not None else 0
        )
        self.stats = stats if stats is not None else RequestStats()
        #: the socket kind the answers are counted under
        self.kind = namespace.kind.value if namespace is not None else "shared"

    def buildProtocol(self, addr: object) -> Protocol:
        total = self.limits.connections
        if not total.try_open():
            return self._refuse(total, "max_connections")
        if not self.connections.try_open():
            total.close()
            return self._refuse(self.connections, "max_connections_per_namespace")
        return self.protocol(self)

    def connectionClosed(self) -> None:
        """A connection L{buildProtocol} admitted has ended."""
        self.connections.close()
        self.limits.connections.close()

    def _refuse(self, bound: ConnectionLimit, option: str) -> RefusedConnection:
        self.stats.refuse_connection(option)
        left_out = bound.throttle(self.clock, self.limits.refusal_log_interval).allow()
        if left_out is not None:
            log.warn(
                "{open} connections open on {socket}, the most allowed ([metaproxy] "
                "{option} = {limit}): new ones are answered 503 and closed ({left_out} "
                "more since the last line)",
                open=bound.open,
                socket=self.describe(),
                option=option,
                limit=bound.limit,
                left_out=left_out,
            )
        return RefusedConnection(
            error_response(
                503,
                "Too many connections to the metadata agent. Please try again later.",
                retry_after=self.limits.retry_after,
            )
        )

    def describe(self) -> str:
        if self.namespace is None:
            return "the shared socket"
        if self.peer:
            return f"the TCP listener in {self.namespace.name}"
        return f"the socket of {self.namespace.name}"
