"""Forwarding an instance's request to the Nova metadata API.

One L{NovaClient} serves every namespace: it owns a pool of persistent connections to
Nova (L{metaproxy.nova.connection}), caps the number of requests in flight, and turns every way
a request can fail into one of three exceptions (all L{NovaError}s):

  - L{NovaUnreachable}: no usable connection, or it was lost before the response was
    complete (refused, DNS, connect timeout, TLS, closed). The caller answers 503, as
    upstream does for C{requests.ConnectionError} (docs/upstream.md, "Response mapping").
  - L{NovaTimeout}: no complete response within the request timeout, counting the time
    spent waiting for a free slot. Upstream lets haproxy answer 504.
  - L{NovaBadResponse}: Nova answered something that is not usable HTTP, or a body over
    L{MAX_BODY_BYTES}. A gateway answers 502 to that.

What goes out is exactly what the caller gives, plus C{Host} and the body framing
(docs/upstream.md, "Forwarding to Nova", minus requests' defaults): no C{Accept-Encoding}, no
C{User-Agent}, no cookies, no redirects followed, the request-target byte-exact.

What comes back is Nova's status, reason phrase, raw headers and body bytes, not decoded
(L{NovaResponse}).

This is the hot path. Twisted's C{Agent} cost 150-300 µs of CPU per request (URI
parsing, C{Headers} normalisation, the body-reading machinery); this client writes each
request with one C{transport.write} of bytes joined once, parses the answer with
C{httptools}, creates one Deferred per request (none more on a pooled connection) and no
timer of its own (the requests with the client's timeout share one,
L{metaproxy.deadlines.Deadlines}), and logs nothing. Everything that can be built once
(request-line prefix, C{Host} line, endpoint, TLS connection creator) is built in
L{NovaClient.__init__}.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import error as ierror
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS

from metaproxy.deadlines import Deadlines
from metaproxy.nova.connection import ConnectionClosed, ConnectionPool, HTTPConnection, tcp_endpoint
from metaproxy.nova.response_parser import NovaResponse, ResponseError
from metaproxy.nova.validation import REQUEST_HEAD, parse_base_url, refusal

__all__ = [
    "NovaResponse",
    "NovaError",
    "NovaUnreachable",
    "NovaTimeout",
    "NovaBadResponse",
    "NovaOverloaded",
    "NovaClient",
    "MAX_BODY_BYTES",
    "CACHED_CONNECTION_TIMEOUT",
]

#: The largest response body accepted from Nova. Metadata documents are small (user data
#: is capped near 64 KiB); anything this big is a misbehaving upstream.
MAX_BODY_BYTES = 10 * 1024 * 1024

#: Seconds an idle pooled connection is kept. Below the common server keep-alive
#: timeouts (Apache's C{KeepAliveTimeout} is 5 s), so we close first and rarely reuse a
#: connection the server is closing.
CACHED_CONNECTION_TIMEOUT = 4.0

# Methods whose empty body is still announced (Twisted's Agent did the same).
_ANNOUNCE_EMPTY_BODY = frozenset((b"POST", b"PUT"))

# Sent again once, on a new connection, when a reused connection closes before any byte
# of the response: the methods a server must treat as idempotent and safe.
_RETRYABLE = frozenset((b"GET", b"HEAD"))


class NovaError(Exception):
    """Base of the errors L{NovaClient.forward} fails with.

    The others are C{ValueError} (a target or header it refuses to send) and
    C{CancelledError} (the caller cancelled).
    """


class NovaUnreachable(NovaError):
    """No usable connection to Nova, or it was lost before the response was complete.

    The message says what happened (refused, DNS, connect timeout, TLS, closed) and where
    (C{host:port}); it never contains request headers, so no signature.
    """


class NovaTimeout(NovaError):
    """No complete response within the request timeout (time queued included)."""


class NovaBadResponse(NovaError):
    """Nova answered, but not with a usable HTTP response (unparsable, or too big)."""


class NovaOverloaded(NovaError):
    """Every slot is taken and the queue for one is full: refused before being sent."""


#: An exchange's C{timer} while its timeout is kept by the client's shared
#: L{Deadlines} (every request sent with the client's own timeout).
_SHARED: Any = object()


def _exchange_timed_out(exchange: _Exchange) -> None:
    exchange.timer = None
    exchange.timed_out()


class _Exchange:
    """One call to L{NovaClient.forward}: its request bytes, its Deferred, its timer,
    and where it is (queued for a slot, connecting, on a connection, done).

    It is the L{metaproxy.nova.connection.IExchange} the pool sends and calls back.
    """

    __slots__ = (
        "_client",
        "deferred",
        "data",
        "head",
        "limit",
        "retryable",
        "retried",
        "connection",
        "connecting",
        "timer",
        "queued",
        "done",
    )

    def __init__(
        self, client: NovaClient, data: bytes, head: bool, limit: int, retryable: bool
    ) -> None:
        self._client = client
        self.data = data
        self.head = head
        self.limit = limit
        self.retryable = retryable
        self.retried = False
        self.connection: HTTPConnection | None = None
        self.connecting: Deferred | None = None
        self.timer: IDelayedCall | None = None
        self.queued = False
        self.done = False
        self.deferred: Deferred[NovaResponse] | None = Deferred(self._cancel)

    # Each way out drops the references to the timer and the Deferred, which refer back
    # to this object: no reference cycle is left for the garbage collector.

    def _untime(self) -> None:
        """Stop its timeout: leave the shared deadlines, or cancel its own timer."""
        timer, self.timer = self.timer, None
        if timer is _SHARED:
            self._client._deadlines.discard(self)
        elif timer is not None:
            timer.cancel()

    def responded(self, response: NovaResponse) -> None:
        if self.done:
            return
        self.done = True
        self._untime()
        self._client._release()
        d, self.deferred = self.deferred, None
        d.callback(response)

    def failed(self, reason: BaseException) -> None:
        if self.done:
            return
        self.done = True
        self._untime()
        client = self._client
        client._release()
        d, self.deferred = self.deferred, None
        d.errback(Failure(client._classify(reason)))

    def timed_out(self) -> None:
        if self.done:
            return
        self.timer = None
        self._stop()
        client = self._client
        d, self.deferred = self.deferred, None
        d.errback(
            Failure(
                NovaTimeout(
                    f"no complete response from Nova metadata API at {client._where} "
                    f"within {client._timeout:g}s"
                )
            )
        )

    def _cancel(self, d: Deferred) -> None:
        # The Deferred fails itself with CancelledError once this returns.
        self._untime()
        self.deferred = None
        self._stop()

    def _stop(self) -> None:
        """Give up: leave the queue, or abort the connection and free the slot."""
        self.done = True
        client = self._client
        if self.queued:
            self.queued = False
            client._queue.remove(self)
        else:
            client._pool.abort(self)
            client._release()


class NovaClient:
    """Forward requests to the Nova metadata API over persistent connections.

    @param reactor: Provides C{IReactorTime}, C{IReactorTCP} and name resolution.
    @param base_url: C{http://host:port} or C{https://host:port} (an IPv6 host in
        brackets). A path prefix is allowed; a trailing slash is dropped.
    @param timeout: Seconds for the whole request, from the call to L{forward} until the
        body has been read, time spent waiting for a free slot included.
    @param connect_timeout: Seconds for each TCP connection attempt.
    @param pool_size: Idle connections kept for reuse. The pool does not bound
        concurrency, C{max_in_flight} does; size this near it, or bursts open and close
        connections.
    @param max_in_flight: The most requests sent to Nova at once; further ones queue.
    @param max_queued: The most requests queued for a slot; further ones fail at once
        with L{NovaOverloaded} (C{None}: no bound). C{rejected} counts them.
    @param tls: The HTTPS policy, normally L{metaproxy.nova.tls.nova_tls_policy}'s. It is
        asked for a connection creator once, here. For an C{https} URL without one,
        the system trust store is used.
    """

    def __init__(
        self,
        reactor,
        base_url: str,
        *,
        timeout: float,
        connect_timeout: float,
        pool_size: int,
        max_in_flight: int,
        max_queued: int | None = None,
        tls: IPolicyForHTTPS | None = None,
    ) -> None:
        scheme, host, port, prefix = parse_base_url(base_url)
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeout and connect_timeout must be positive")
        if pool_size < 1 or max_in_flight < 1:
            raise ValueError("pool_size and max_in_flight must be at least 1")
        self._reactor = reactor
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        netloc = f"[{host}]" if ":" in host else host
        self._where = f"{netloc}:{port}"
        default = {"http": 80, "https": 443}[scheme]
        host_value = (netloc if port == default else self._where).encode("ascii")
        # The request line is method + _line_start + target + _host_line.
        self._line_start = b" " + prefix.encode("ascii")
        self._host_line = b" HTTP/1.1\r\nHost: " + host_value + b"\r\n"
        self._max_in_flight = max_in_flight
        self._max_queued = max_queued if max_queued is not None else float("inf")
        #: requests refused because the queue was full (for metrics)
        self.rejected = 0
        self._active = 0
        self._queue: deque[_Exchange] = deque()
        self._deadlines: Deadlines[_Exchange] = Deadlines(reactor, timeout, _exchange_timed_out)
        endpoint = tcp_endpoint(reactor, host, port, connect_timeout)
        if scheme == "https":
            policy = tls if tls is not None else BrowserLikePolicyForHTTPS()
            creator = policy.creatorForNetloc(host.encode("ascii"), port)
            # The TLS layer batches writes until the next reactor iteration: on ours.
            endpoint = wrapClientTLS(creator, endpoint, clock=reactor)
        self._pool = ConnectionPool(
            reactor, endpoint, size=pool_size, idle_timeout=CACHED_CONNECTION_TIMEOUT
        )

    @property
    def pool(self) -> ConnectionPool:
        """The connection pool."""
        return self._pool

    @property
    def idle(self) -> int:
        """Idle keep-alive connections kept now."""
        return self._pool.idle

    @property
    def in_flight(self) -> int:
        """Requests sent to Nova and not finished."""
        return self._active

    @property
    def queued(self) -> int:
        """Requests waiting for one of the C{max_in_flight} slots."""
        return len(self._queue)

    def forward(
        self,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        timeout: float | None = None,
    ) -> Deferred[NovaResponse]:
        """Send one request to Nova and read the whole response.

        @param method: The instance's method, e.g. C{b"GET"}.
        @param target: The instance's request-target in origin form (path and query),
            sent byte-exact; only a fragment (C{#...}), which never belongs on the wire,
            is dropped.
        @param headers: Sent as given, names as spelled, in order, after C{Host}; then,
            with a body, C{Content-Length}. They must not include C{Host}, framing or
            connection headers.
        @param body: Sent for any method when not empty. An empty POST or PUT gets
            C{Content-Length: 0}; other empty requests get no body.
        @param timeout: Seconds for this request instead of the client's C{timeout}
            (what is left of a deadline, when failing over from another endpoint).

        @return: Fires with a L{NovaResponse} for any status (a 302 is not followed),
            or fails with L{NovaUnreachable}, L{NovaTimeout} or L{NovaBadResponse}; or
            with C{ValueError} for an unusable target, header or method (before taking
            a slot), or L{NovaOverloaded} when the queue for a slot is full. Cancelling it
            aborts the request and fails it with C{CancelledError}.
        """
        if b"#" in target:
            target = target[: target.index(b"#")]
        parts = [method, self._line_start, target, self._host_line]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        lines = len(headers) + 3  # Request line, Host, the headers, the empty line.
        if body:
            parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
            parts.append(body)
            lines += 1
        elif method in _ANNOUNCE_EMPTY_BODY:
            parts.append(b"Content-Length: 0\r\n\r\n")
            lines += 1
        else:
            parts.append(b"\r\n")
        data = b"".join(parts)
        head = data[: len(data) - len(body)] if body else data
        # The pattern checks every line's shape; the count, that no part brought a CRLF
        # of its own (a value "x\r\nX-Injected: 1" would make two well-formed lines).
        if (
            target[:1] != b"/"
            or REQUEST_HEAD.fullmatch(head) is None
            or head.count(b"\r\n") != lines
        ):
            return fail(ValueError(refusal(method, target, headers)))

        exchange = _Exchange(
            self,
            data,
            method == b"HEAD",
            MAX_BODY_BYTES,
            method in _RETRYABLE and not body,
        )
        d = exchange.deferred
        if self._active >= self._max_in_flight and len(self._queue) >= self._max_queued:
            self.rejected += 1
            return fail(
                NovaOverloaded(
                    f"{self._max_in_flight} requests in flight to the Nova metadata API at "
                    f"{self._where} and {len(self._queue)} waiting (nova_max_in_flight, "
                    "nova_max_queued)"
                )
            )
        if timeout is None:
            exchange.timer = _SHARED
            self._deadlines.add(exchange)
        else:
            exchange.timer = self._reactor.callLater(timeout, exchange.timed_out)
        if self._active < self._max_in_flight:
            self._active += 1
            self._pool.send(exchange)
        else:
            exchange.queued = True
            self._queue.append(exchange)
        return d

    def close(self) -> Deferred[None]:
        """Close the idle pooled connections (service stop). In-flight requests finish."""
        return self._pool.close()

    def _release(self) -> None:
        """A request finished: its slot goes to the next queued one, if any."""
        queue = self._queue
        if queue:
            exchange = queue.popleft()
            exchange.queued = False
            self._pool.send(exchange)
        else:
            self._active -= 1

    def _classify(self, reason: BaseException) -> NovaError:
        """The L{NovaError} for why the pool failed a request."""
        at = f"Nova metadata API at {self._where}"
        if isinstance(reason, ResponseError):
            return NovaBadResponse(f"{at} {reason}")
        if isinstance(reason, ConnectionClosed):
            lost = reason.reason.value if reason.reason is not None else None
            if isinstance(lost, (SSL.Error, VerificationError)):
                return NovaUnreachable(f"TLS with {at} failed: {_describe(lost)}")
            phase = "in the middle of the response" if reason.started else "before responding"
            return NovaUnreachable(f"{at} closed the connection {phase}")
        if isinstance(reason, ierror.ConnectionRefusedError):
            return NovaUnreachable(f"{at} refused the connection")
        if isinstance(reason, ierror.TimeoutError):
            return NovaUnreachable(
                f"cannot connect to {at}: connect timeout after {self._connect_timeout:g}s"
            )
        if isinstance(reason, (ierror.DNSLookupError, ierror.ConnectError)):
            # DNSLookupError says "DNS lookup failed: ...", NoRouteError "No route to host".
            return NovaUnreachable(f"cannot connect to {at}: {reason}")
        if isinstance(reason, (SSL.Error, VerificationError)):
            return NovaUnreachable(f"TLS with {at} failed: {_describe(reason)}")
        return NovaUnreachable(f"request to {at} failed: {reason.__class__.__name__}: {reason}")


def _describe(exc: BaseException) -> str:
    """A short text for a TLS error: OpenSSL's reason strings, or the identity mismatch."""
    if isinstance(exc, VerificationError):
        return f"the certificate does not match the host: {exc}"
    if isinstance(exc, SSL.Error) and exc.args and isinstance(exc.args[0], list):
        reasons = [entry[-1] for entry in exc.args[0] if isinstance(entry, tuple) and entry]
        if reasons:
            return ", ".join(reasons)
    return str(exc) or exc.__class__.__name__
