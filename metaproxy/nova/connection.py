"""A keep-alive HTTP/1.1 client for one Nova endpoint: response parser, connection, pool.

This is the transport under L{metaproxy.nova.client.NovaClient}, which validates and builds the
request bytes, caps the requests in flight, times them out and turns failures into
L{metaproxy.nova.client.NovaError}s. Here:

  - L{ResponseParser}: sans-IO parsing of the responses on one connection with
    C{httptools} (llhttp, in C, strict: no bare LF, no ambiguous framing). It keeps
    Nova's status, reason phrase, raw headers and body bytes, and knows the request was
    a C{HEAD} (no body follows) and the body limit.
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

import attrs
import httptools
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from metaproxy.nova.eagerwrite import write_now

__all__ = [
    "tcp_endpoint",
    "NovaResponse",
    "ResponseError",
    "BodyTooLarge",
    "ConnectionClosed",
    "ResponseParser",
    "IExchange",
    "HTTPConnection",
    "ConnectionPool",
]

_NO_HEADERS: tuple[tuple[bytes, bytes], ...] = ()


@attrs.frozen
class NovaResponse:
    """Nova's answer, as received.

    @ivar status: The status code.
    @ivar reason: Nova's reason phrase (C{b"OK"}), possibly empty.
    @ivar headers: C{(name, value)} pairs exactly as Nova sent them: names in Nova's own
        capitalisation, in wire order, repeated headers kept where they appeared. The
        framing and connection headers (C{Content-Length}, C{Transfer-Encoding},
        C{Connection}, C{Keep-Alive}, ...) are included: a proxy relaying the answer drops
        the hop-by-hop ones (L{metaproxy.http.response.relay_response} does), and C{HEAD}'s
        C{Content-Length} tells the length of the resource. Values lose surrounding
        whitespace. Trailer fields of a chunked body are not included.
    @ivar body: The body bytes, de-chunked but otherwise byte-exact: a gzip body stays
        gzip.
    """

    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


class ResponseError(Exception):
    """Nova answered, but not with a usable response.

    The text completes the sentence "Nova metadata API at host:port ...", for example
    C{"sent an invalid response: Expected HTTP/"}.
    """


class BodyTooLarge(ResponseError):
    """The response body is, or is announced to be, over the limit."""


class ConnectionClosed(Exception):
    """The connection ended before the response was complete.

    @ivar reason: Why, as Twisted reported it (a clean close, a reset, a TLS error...).
    @ivar started: Whether any byte of the response had been received.
    """

    def __init__(self, reason: Failure, started: bool) -> None:
        super().__init__(reason, started)
        self.reason = reason
        self.started = started


class _Stop(Exception):
    """Raised from an httptools callback to stop parsing (the outcome is on the parser)."""


class ResponseParser:
    """Parse the responses arriving on one connection, one request at a time.

    Call L{expect} after sending each request, then L{feed} each chunk of bytes received
    until it returns the L{NovaResponse}; if the connection ends first, L{eof} returns the
    response when its body was delimited by the close, or C{None}.

    Interim C{1xx} responses are skipped. After the response, L{keep_alive} tells whether
    the connection may carry another request: not when Nova said C{Connection: close},
    answered HTTP/1.0 without keep-alive, delimited the body by closing, sent bytes after
    the response, or the request was a C{HEAD} (httptools cannot be told that a C{HEAD}
    answer has no body, so parsing stops after its head and the parser is spent).

    @ivar started: Whether any byte of the current response has been fed.
    @ivar keep_alive: See above; meaningful once the response is complete.
    """

    __slots__ = (
        "_http",
        "_head",
        "_limit",
        "_status",
        "_reason",
        "_headers",
        "_body",
        "_size",
        "_in_head",
        "_delimited",
        "_length",
        "_response",
        "_error",
        "started",
        "keep_alive",
    )

    def __init__(self) -> None:
        self._http: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._head = False
        self._limit = 0
        self._response: NovaResponse | None = None
        self._error: ResponseError | None = None
        self.started = False
        self.keep_alive = False
        self._reset()

    def _reset(self) -> None:
        """Forget the message so far (a new request, or after an interim response)."""
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._in_head = True
        self._delimited = False
        self._length = 0

    def expect(self, head: bool, limit: int) -> None:
        """Get ready for the response to the request just sent.

        @param head: The request was a C{HEAD}: the response has no body.
        @param limit: The largest body accepted, in bytes.
        @raise RuntimeError: The parser is spent (after a C{HEAD} or an error).
        """
        if self._http is None or self._error is not None:
            raise RuntimeError("this connection cannot carry another request")
        self._head = head
        self._limit = limit
        self._response = None
        self.started = False
        self.keep_alive = False
        self._reset()

    def feed(self, data: bytes) -> NovaResponse | None:
        """Parse C{data}; the response once it is complete, else C{None}.

        @raise ResponseError: The bytes are not a usable response (the parser is then
            spent).
        """
        self.started = True
        try:
            self._http.feed_data(data)  # type: ignore[union-attr]
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as e:
            response = self._response
            if response is not None:
                # Complete, and then something odd (a HEAD answer's end, trailing bytes):
                # the response stands, the connection is not reused.
                self.keep_alive = False
                self._http = None
                return response
            if self._error is None:
                self._error = ResponseError(f"sent an invalid response: {_describe(e)}")
            self._http = None
            raise self._error from None
        return self._response

    def eof(self) -> NovaResponse | None:
        """The connection ended: the response if its body ran until the close, else
        C{None} (nothing, or an incomplete response, was received)."""
        if (
            self._response is None
            and self._error is None
            and not self._in_head
            and not self._delimited
            and self._status >= 200
        ):
            self._complete()
            self.keep_alive = False
        return self._response

    def close(self) -> None:
        """Release the C{httptools} parser (it refers back to this object)."""
        self._http = None

    # --- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._response is not None:
            # Another message after the response, unasked: stop there; the connection
            # is out of step and will not be reused.
            raise _Stop()

    def on_status(self, reason: bytes) -> None:
        self._reason += reason  # Called once per received fragment of the reason.

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # A trailer field after a chunked body: not part of the answer.
        value = value.rstrip(b" \t")
        self._headers.append((name, value))
        size = len(name)
        if size == 14 or size == 17:
            lower = name.lower()
            if lower == b"content-length":
                self._delimited = True
                self._length = int(value)  # llhttp checked it: digits, one value.
            elif lower == b"transfer-encoding":
                self._delimited = value.lower().endswith(b"chunked")

    def on_headers_complete(self) -> None:
        self._in_head = False
        status = self._http.get_status_code()  # type: ignore[union-attr]
        self._status = status
        if status < 100:
            self._error = ResponseError(f"sent an invalid response: status {status:03d}")
            raise _Stop()
        if status < 200:
            return  # Interim: no body, the real response follows.
        if self._head:
            self._complete()
            raise _Stop()
        if self._length > self._limit:
            self._error = BodyTooLarge(
                f"announced a {self._length}-byte body; the limit is {self._limit} bytes"
            )
            raise _Stop()

    def on_body(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            self._body = []
            self._error = BodyTooLarge(f"sent a body over the limit of {self._limit} bytes")
            raise _Stop()
        self._body.append(data)

    def on_message_complete(self) -> None:
        status = self._status
        if status < 200:
            if status == 101:
                self._error = ResponseError(
                    "sent an invalid response: 101 Switching Protocols, not asked for"
                )
                raise _Stop()
            self._reset()
            return
        self.keep_alive = self._http.should_keep_alive()  # type: ignore[union-attr]
        self._complete()

    def _complete(self) -> None:
        headers = self._headers
        body = self._body
        self._response = NovaResponse(
            self._status,
            self._reason,
            tuple(headers) if headers else _NO_HEADERS,
            body[0] if len(body) == 1 else b"".join(body),
        )


def _describe(error: Exception) -> str:
    if isinstance(error, httptools.HttpParserUpgrade):
        return "unexpected protocol upgrade"
    return str(error) or error.__class__.__name__


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
