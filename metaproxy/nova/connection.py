"""A keep-alive HTTP/1.1 client for one Nova endpoint: the connection and the pool.

This is the transport under L{metaproxy.nova.client.NovaClient}, which validates and builds the
request bytes, caps the requests in flight, times them out and turns failures into
L{metaproxy.nova.client.NovaError}s. Here:

  - L{metaproxy.nova.response_parser.ResponseParser} (its own module): sans-IO parsing
    of the responses on one connection.
  - L{HTTPConnection}: one persistent connection carrying one request at a time (no
    pipelining). The request goes out in a single write, sent at once when the socket
    takes it (L{metaproxy.nova.eagerwrite}).
  - L{ConnectionPool}: idle connections to the endpoint, reused newest first, kept up to
    C{size} and closed after C{idle_timeout} seconds unused; new connections through
    one endpoint built once (with TLS, one connection creator).

A request is an L{IExchange} provider: the pool sends it and calls back exactly one of
C{responded(response)} or C{failed(exception)}, unless L{ConnectionPool.abort} was called
first. The exceptions passed to C{failed} are L{ResponseError} (Nova answered, but not
usable HTTP), L{ConnectionClosed} (the connection ended before the response was
complete), or whatever the endpoint failed to connect with.

Nothing here logs or builds Twisted's HTTP objects (no C{Headers}, no URI parsing), and a
request on a pooled connection creates no Deferred at all.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from metaproxy.nova.eagerwrite import write_now
from metaproxy.nova.response_parser import NovaResponse, ResponseError, ResponseParser

__all__ = [
    "tcp_endpoint",
    "ConnectionClosed",
    "IExchange",
    "HTTPConnection",
    "ConnectionPool",
]


class ConnectionClosed(Exception):
    """The connection ended before the response was complete.

    @ivar reason: Why, as Twisted reported it (a clean close, a reset, a TLS error...).
    @ivar started: Whether any byte of the response had been received.
    """

    def __init__(self, reason: Failure, started: bool) -> None:
        super().__init__(reason, started)
        self.reason = reason
        self.started = started


class IExchange(TypingProtocol):
    """One request, as the pool sees it. L{metaproxy.nova.client} provides it.

    @ivar data: The whole request, written in one go.
    @ivar head: It is a C{HEAD}.
    @ivar limit: The largest response body accepted.
    @ivar retryable: It may be sent again on a fresh connection when a reused one closes
        before any byte of the response (an idempotent request without a body).
    @ivar retried: It has been, once (the pool sets it).
    @ivar connection: The connection carrying it now (the pool sets it), or C{None}.
    @ivar connecting: The pending connection attempt for it (the pool sets it), or
        C{None}.
    """

    data: bytes
    head: bool
    limit: int
    retryable: bool
    retried: bool
    connection: HTTPConnection | None
    connecting: Deferred | None

    def responded(self, response: NovaResponse) -> None: ...

    def failed(self, reason: BaseException) -> None: ...


class HTTPConnection(Protocol):
    """A persistent HTTP/1.1 connection to Nova carrying one request at a time.

    @ivar exchange: The request in progress, or C{None} when idle.
    @ivar pooled: It is in the pool's idle list.
    @ivar idle_since: When it last became idle (reactor time).
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._parser = ResponseParser()
        self._reused = False
        self._when_closed: list[Deferred[None]] = []
        self.exchange: IExchange | None = None
        self.pooled = False
        self.idle_since = 0.0

    def connectionMade(self) -> None:
        # Requests are single writes, but a lone small write after an unacknowledged one
        # must not wait for the delayed ACK (Twisted's own HTTP client does the same).
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:
                pass

    def send(self, exchange: IExchange, reused: bool) -> None:
        """Write C{exchange}'s request; C{reused}: this connection served one before."""
        self.exchange = exchange
        exchange.connection = self
        self._reused = reused
        self._parser.expect(exchange.head, exchange.limit)
        write_now(self.transport, exchange.data)

    def abort(self) -> None:
        """Drop the request in progress without a word to it, and the connection."""
        exchange = self.exchange
        if exchange is not None:
            exchange.connection = None
            self.exchange = None
        self.transport.abortConnection()  # type: ignore[union-attr]

    def when_closed(self) -> Deferred[None]:
        """Fires once the connection is lost."""
        d: Deferred[None] = Deferred()
        self._when_closed.append(d)
        return d

    def dataReceived(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes nobody asked for (or after an answer we stopped reading): this
            # connection is out of step.
            self._pool.lost(self)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        try:
            response = self._parser.feed(data)
        except ResponseError as e:
            self.exchange = None
            exchange.connection = None
            self.transport.abortConnection()  # type: ignore[union-attr]
            exchange.failed(e)
            return
        if response is None:
            return
        self.exchange = None
        exchange.connection = None
        if self._parser.keep_alive:
            self._pool.release(self)
        else:
            self.transport.loseConnection()  # type: ignore[union-attr]
        exchange.responded(response)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        pool = self._pool
        pool.lost(self)
        parser = self._parser
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.connection = None
            response = parser.eof()
            if response is not None:
                exchange.responded(response)
            elif (
                not parser.started and self._reused and exchange.retryable and not exchange.retried
            ):
                # The server closed the idle connection as we reused it: once more, on a
                # new one (Twisted's pool does the same for idempotent requests).
                exchange.retried = True
                pool.connect(exchange)
            else:
                exchange.failed(ConnectionClosed(reason, parser.started))
        parser.close()
        waiting, self._when_closed = self._when_closed, []
        for d in waiting:
            d.callback(None)


class _ConnectionFactory(Factory):
    """Builds L{HTTPConnection}s for one pool, without "Starting factory" log lines."""

    noisy = False

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def buildProtocol(self, addr: object) -> HTTPConnection:
        return HTTPConnection(self._pool)


def tcp_endpoint(reactor, host: str, port: int, timeout: float) -> IStreamClientEndpoint:
    """The endpoint new connections to C{host}:C{port} come from.

    An IP address is connected to directly. A name goes through L{HostnameEndpoint}
    (resolved at every connection, both families tried): it costs a resolver thread
    round trip and about twice the CPU per new connection, which the pool makes rare.
    """
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    if version == 4:
        return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)


class ConnectionPool:
    """Persistent connections to one endpoint.

    Unlike Twisted's C{HTTPConnectionPool}, C{size} is the number of idle connections
    kept, and concurrency is bounded by the caller (L{metaproxy.nova.client.NovaClient}'s
    C{max_in_flight}). An idle connection is reused newest first, so that connections
    beyond what the load needs go idle and expire. One timer serves every idle
    connection: it fires when the oldest one reaches C{idle_timeout}.

    @param reactor: Provides C{IReactorTime}.
    @param endpoint: Where new connections come from (TLS included).
    @param size: Idle connections kept; when one more goes idle, the oldest is closed.
    @param idle_timeout: Seconds an idle connection is kept.
    """

    def __init__(
        self, reactor, endpoint: IStreamClientEndpoint, *, size: int, idle_timeout: float
    ) -> None:
        self._reactor = reactor
        self._endpoint = endpoint
        self.size = size
        self.idle_timeout = idle_timeout
        self.factory = _ConnectionFactory(self)
        self._idle: list[HTTPConnection] = []  # Oldest first.
        self._timer: IDelayedCall | None = None

    @property
    def idle(self) -> int:
        """Idle connections kept now."""
        return len(self._idle)

    def send(self, exchange: IExchange) -> None:
        """Send C{exchange} on the newest idle connection, or on a new one."""
        idle = self._idle
        if idle:
            connection = idle.pop()
            connection.pooled = False
            connection.send(exchange, True)
        else:
            self.connect(exchange)

    def connect(self, exchange: IExchange) -> None:
        """Send C{exchange} on a new connection."""
        d = self._endpoint.connect(self.factory)
        exchange.connecting = d
        d.addCallbacks(self._connected, self._connect_failed, (exchange, d), None, (exchange, d))

    def abort(self, exchange: IExchange) -> None:
        """Stop C{exchange}: abort its connection or its connection attempt. It hears
        nothing more from the pool."""
        connection = exchange.connection
        if connection is not None:
            connection.abort()
        connecting = exchange.connecting
        if connecting is not None:
            exchange.connecting = None
            connecting.cancel()

    def release(self, connection: HTTPConnection) -> None:
        """Keep C{connection}, which finished a request and may carry another."""
        connection.idle_since = self._reactor.seconds()
        idle = self._idle
        if len(idle) >= self.size:
            oldest = idle.pop(0)
            oldest.pooled = False
            oldest.transport.loseConnection()  # type: ignore[union-attr]
        connection.pooled = True
        idle.append(connection)
        if self._timer is None:
            self._timer = self._reactor.callLater(self.idle_timeout, self._expire)

    def lost(self, connection: HTTPConnection) -> None:
        """C{connection} is closing: never hand it out again."""
        if connection.pooled:
            connection.pooled = False
            self._idle.remove(connection)

    def close(self) -> Deferred[None]:
        """Close the idle connections; fires when they are closed. Connections carrying
        a request finish it (and then go idle, until they expire)."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        idle, self._idle = self._idle, []
        closed = []
        for connection in idle:
            connection.pooled = False
            closed.append(connection.when_closed())
            connection.transport.loseConnection()  # type: ignore[union-attr]
        return DeferredList(closed).addCallback(lambda _: None)

    def _connected(self, connection: HTTPConnection, exchange: IExchange, d: Deferred) -> None:
        if exchange.connecting is not d:  # Aborted meanwhile: keep the connection.
            self.release(connection)
            return
        exchange.connecting = None
        connection.send(exchange, False)

    def _connect_failed(self, reason: Failure, exchange: IExchange, d: Deferred) -> None:
        if exchange.connecting is not d:
            return None  # We cancelled it (L{abort}): nobody to tell.
        exchange.connecting = None
        exchange.failed(reason.value)
        return None

    def _expire(self) -> None:
        self._timer = None
        now = self._reactor.seconds()
        timeout = self.idle_timeout
        idle = self._idle
        # A hair of slack: the timer may fire a rounding error early.
        while idle and now - idle[0].idle_since >= timeout - 1e-6:
            connection = idle.pop(0)
            connection.pooled = False
            connection.transport.loseConnection()  # type: ignore[union-attr]
        if idle:
            delay = idle[0].idle_since + timeout - now
            self._timer = self._reactor.callLater(max(delay, 0.0), self._expire)
