"""Forwarding an instance's request to the Nova metadata API.

One L{NovaClient} serves every namespace: it owns a persistent connection pool to Nova,
caps the number of requests in flight, and turns every way a request can fail into one
of three exceptions (all L{NovaError}s):

  - L{NovaUnreachable}: no usable connection, or it was lost before the response was
    complete (refused, DNS, connect timeout, TLS, closed). The caller answers 503, as
    upstream does for C{requests.ConnectionError} (reference section 1.6).
  - L{NovaTimeout}: no complete response within the request timeout, counting the time
    spent waiting for a free slot. Upstream lets haproxy answer 504.
  - L{NovaBadResponse}: Nova answered something that is not usable HTTP, or a body over
    L{MAX_BODY_BYTES}. A gateway answers 502 to that.

What goes out is exactly what the caller gives, plus C{Host} and the body framing
(reference section 1.5, minus requests' defaults): no C{Accept-Encoding}, no
C{User-Agent}, no cookies, no redirects followed. That is why this module uses a raw
L{twisted.web.client.Agent} and not treq.

What comes back is Nova's status, reason phrase, headers and body bytes, not decoded.
Twisted's response parser shapes the headers in three ways (L{NovaResponse.headers}).

This is the hot path: nothing here logs on success, and everything that can be built once
(URL prefix, C{Host} value, pool, agent, endpoint, TLS connection creator) is built in
L{NovaClient.__init__}.
"""

from __future__ import annotations

import re
from typing import Sequence
from urllib.parse import urlsplit

import attrs
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IConsumer, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web._newclient import ParseError
from twisted.web.client import (
    URI,
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseDone,
    ResponseFailed,
    _HTTP11ClientFactory,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import (
    UNKNOWN_LENGTH,
    IAgent,
    IAgentEndpointFactory,
    IBodyProducer,
    IPolicyForHTTPS,
    IResponse,
)
from zope.interface import implementer

__all__ = [
    "NovaResponse",
    "NovaError",
    "NovaUnreachable",
    "NovaTimeout",
    "NovaBadResponse",
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

# A request-target in origin form, made only of what both Twisted's server and its client
# accept on a request line (printable ASCII, no spaces).
_ORIGIN_FORM = re.compile(rb"/[\x21-\x7e]*")

# Headers the client owns: a caller supplying one would duplicate or contradict framing.
_RESERVED_HEADERS = frozenset(
    (
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-connection",
    )
)

_NO_HEADERS: tuple[tuple[bytes, bytes], ...] = ()


@attrs.frozen
class NovaResponse:
    """Nova's answer, as received.

    @ivar status: The status code.
    @ivar reason: Nova's reason phrase (C{b"OK"}).
    @ivar headers: C{(name, value)} pairs. Repeated headers are kept, values in the order
        received. Twisted's parser (not us) shapes them: names come in Twisted's canonical
        capitalisation (C{Content-Type}, C{ETag}); headers are grouped by name in the
        order each name first appeared, so C{A, B, A} comes back as C{A, A, B}; and the
        connection-control headers (C{Content-Length}, C{Transfer-Encoding},
        C{Connection}, C{Keep-Alive}, C{TE}, C{Trailers}, C{Upgrade},
        C{Proxy-Connection}) are not included, except C{Content-Length} in the answer to
        a C{HEAD}. A proxy drops those anyway (reference section 1.6).
    @ivar body: The body bytes, de-chunked but otherwise byte-exact: a gzip body stays
        gzip.
    """

    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


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


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body that is already in memory: written in one go.

    L{twisted.web.client.FileBodyProducer} would schedule the write through a
    cooperator; for a few hundred bytes that is only overhead.
    """

    __slots__ = ("_body", "length")

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    # Everything is written synchronously in startProducing, so there is never anything
    # to pause, resume or stop.
    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _QuietHTTP11ClientFactory(_HTTP11ClientFactory):
    """The pool's connection factory, without "Starting/Stopping factory" log lines."""

    noisy = False


class _BodyReader(Protocol):
    """Collect a response body into a L{NovaResponse}, up to L{MAX_BODY_BYTES}.

    Unlike L{twisted.web.client.readBody}, a body delimited by the server closing the
    connection (no C{Content-Length}, not chunked: legal HTTP/1.1) is a complete body,
    not a L{twisted.web.client.PartialDownloadError}. Cancelling the Deferred stops the
    transport, which closes this connection instead of returning it to the pool.
    """

    def __init__(self, response: IResponse, where: str, limit: int) -> None:
        self.finished: Deferred[NovaResponse] = Deferred(self._cancel)
        self._response = response
        self._where = where
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0

    def connectionMade(self) -> None:
        length = self._response.length
        if length is not UNKNOWN_LENGTH and length > self._limit:  # type: ignore[operator]
            self._tooBig(f"announced a {length}-byte body")

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._tooBig("sent a body of more than that")
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            response = self._response
            self.finished.callback(
                NovaResponse(
                    status=response.code,
                    reason=response.phrase,
                    headers=_flatten(response.headers),
                    body=b"".join(self._chunks),
                )
            )
        else:
            self.finished.errback(reason)

    def _tooBig(self, what: str) -> None:
        self._chunks = []
        self.finished.errback(
            NovaBadResponse(
                f"Nova metadata API at {self._where} {what}; "
                f"the limit is {self._limit} bytes"
            )
        )
        self._stop()

    def _cancel(self, _: Deferred[NovaResponse]) -> None:
        self._stop()

    def _stop(self) -> None:
        # Closes the connection (the transport is a proxy of the TCP/TLS transport, which
        # has no abortConnection); connectionLost then finds `finished` already fired.
        if self.transport is not None:
            self.transport.stopProducing()


@implementer(IAgentEndpointFactory)
@attrs.frozen
class _FixedEndpoint:
    """Nova's endpoint, built once.

    L{Agent} asks its endpoint factory for an endpoint on every request, pooled
    connection or not; the standard factory builds a new L{HostnameEndpoint} each time
    (IDNA-encoding the host: ~40% of C{Agent.request}'s CPU) and, for HTTPS, asks the
    policy for a connection creator. Every request of a L{NovaClient} goes to the same
    place, so one endpoint serves them all; it still resolves the name for each new
    connection.
    """

    endpoint: IStreamClientEndpoint

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        return self.endpoint


def _flatten(headers: Headers) -> tuple[tuple[bytes, bytes], ...]:
    pairs = [(name, value) for name, values in headers.getAllRawHeaders() for value in values]
    return tuple(pairs) if pairs else _NO_HEADERS


def _readBody(response: IResponse, where: str) -> Deferred[NovaResponse]:
    reader = _BodyReader(response, where, MAX_BODY_BYTES)
    response.deliverBody(reader)
    return reader.finished


class NovaClient:
    """Forward requests to the Nova metadata API over a persistent connection pool.

    @param reactor: Provides C{IReactorTime} (timeouts) and, unless C{agent} is given,
        C{IReactorTCP} and name resolution.
    @param base_url: C{http://host:port} or C{https://host:port} (an IPv6 host in
        brackets). A path prefix is allowed; a trailing slash is dropped.
    @param timeout: Seconds for the whole request, from the call to L{forward} until the
        body has been read, time spent waiting for a free slot included.
    @param connect_timeout: Seconds for each TCP connection attempt.
    @param pool_size: Idle connections kept for reuse (C{maxPersistentPerHost}). The
        pool does not bound concurrency, C{max_in_flight} does; size this near it, or
        bursts open and close connections.
    @param max_in_flight: The most requests sent to Nova at once; further ones queue.
    @param tls: The HTTPS policy, normally L{metaproxy.tls.nova_tls_policy}'s. It is
        asked for a connection creator once, here. For an C{https} URL without one,
        the system trust store is used.
    @param agent: Use this agent instead of building one (tests); C{connect_timeout},
        C{pool_size} and C{tls} then do not apply, and L{close} has nothing to close.
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
        tls: IPolicyForHTTPS | None = None,
        agent: IAgent | None = None,
    ) -> None:
        scheme, host, port, prefix = _parseBaseURL(base_url)
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeout and connect_timeout must be positive")
        if pool_size < 1 or max_in_flight < 1:
            raise ValueError("pool_size and max_in_flight must be at least 1")
        self._reactor = reactor
        self._timeout = timeout
        netloc = f"[{host}]" if ":" in host else host
        self._where = f"{netloc}:{port}"
        default = {"http": 80, "https": 443}[scheme]
        self._host = (netloc if port == default else self._where).encode("ascii")
        self._prefix = f"{scheme}://{self._where}{prefix}".encode("ascii")
        self._semaphore = DeferredSemaphore(max_in_flight)
        self._pool: HTTPConnectionPool | None
        if agent is None:
            pool = HTTPConnectionPool(reactor, persistent=True)
            pool.maxPersistentPerHost = pool_size
            pool.cachedConnectionTimeout = CACHED_CONNECTION_TIMEOUT
            pool.retryAutomatically = True
            pool._factory = _QuietHTTP11ClientFactory
            endpoint: IStreamClientEndpoint = HostnameEndpoint(
                reactor, host, port, timeout=connect_timeout
            )
            if scheme == "https":
                policy = tls if tls is not None else BrowserLikePolicyForHTTPS()
                creator = policy.creatorForNetloc(host.encode("ascii"), port)
                endpoint = wrapClientTLS(creator, endpoint)
            agent = Agent.usingEndpointFactory(reactor, _FixedEndpoint(endpoint), pool=pool)
            self._pool = pool
        else:
            self._pool = None
        self._agent = agent
        self._connectTimeout = connect_timeout

    @property
    def pool(self) -> HTTPConnectionPool | None:
        """The connection pool, or C{None} when an agent was injected."""
        return self._pool

    @property
    def in_flight(self) -> int:
        """Requests sent to Nova and not finished."""
        return self._semaphore.limit - self._semaphore.tokens

    @property
    def queued(self) -> int:
        """Requests waiting for one of the C{max_in_flight} slots."""
        return len(self._semaphore.waiting)

    def forward(
        self,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
    ) -> Deferred[NovaResponse]:
        """Send one request to Nova and read the whole response.

        @param method: The instance's method, e.g. C{b"GET"}.
        @param target: The instance's request-target in origin form (path and query),
            sent byte-exact, except where Twisted's URL parsing normalises: an empty query
            (C{/a?}), an empty parameter (C{/a;}) and a fragment are dropped.
        @param headers: Sent as given (names case-insensitive; Twisted writes them in its
            canonical capitalisation), plus C{Host} and, with a body, C{Content-Length}.
            They must not include C{Host}, framing or connection headers.
        @param body: Sent for any method when not empty. An empty POST or PUT gets
            C{Content-Length: 0}; other empty requests get no body.

        @return: Fires with a L{NovaResponse} for any status (a 302 is not followed),
            or fails with L{NovaUnreachable}, L{NovaTimeout} or L{NovaBadResponse}; or
            with C{ValueError} for an unusable target, header or method. Cancelling it
            aborts the request and fails it with C{CancelledError}.
        """
        if _ORIGIN_FORM.fullmatch(target) is None:
            return fail(ValueError(f"request-target must be in origin form: {target!r}"))
        request_headers = Headers()
        for name, value in headers:
            if name.lower() in _RESERVED_HEADERS:
                return fail(ValueError(f"header {name!r} is set by NovaClient"))
            request_headers.addRawHeader(name, value)
        request_headers.addRawHeader(b"Host", self._host)
        producer = _BytesProducer(body) if body else None
        url = self._prefix + target

        slot = self._semaphore.acquire()
        slot.addCallback(self._send, method, url, request_headers, producer)
        slot.addTimeout(self._timeout, self._reactor, self._timedOut)
        slot.addErrback(self._translate)
        return slot

    def close(self) -> Deferred[None]:
        """Close the idle pooled connections (service stop). In-flight requests finish."""
        if self._pool is None:
            return succeed(None)
        return self._pool.closeCachedConnections()

    def _send(
        self,
        semaphore: DeferredSemaphore,
        method: bytes,
        url: bytes,
        headers: Headers,
        producer: IBodyProducer | None,
    ) -> Deferred[NovaResponse]:
        try:
            response = self._agent.request(method, url, headers, producer)
        except BaseException:
            # Agent validates synchronously (e.g. the method); keep the slot accounting.
            semaphore.release()
            raise
        return response.addCallback(_readBody, self._where).addBoth(self._release)

    def _release(self, result: object) -> object:
        self._semaphore.release()
        return result

    def _timedOut(self, result: object, timeout: float) -> object:
        if not isinstance(result, Failure):
            return result  # The response completed just as the timer fired.
        return Failure(
            NovaTimeout(
                f"no complete response from Nova metadata API at {self._where} "
                f"within {timeout:g}s"
            )
        )

    def _translate(self, failure: Failure) -> Failure:
        if failure.check(NovaError, ValueError, CancelledError):
            return failure
        if _cancelled(failure):
            # The caller cancelled (a timeout is a NovaTimeout by now): say so plainly.
            return Failure(CancelledError())
        return Failure(_classify(failure, self._where, self._connectTimeout))


def _cancelled(failure: Failure) -> bool:
    if failure.check(ierror.ConnectingCancelledError):
        return True
    reasons = getattr(failure.value, "reasons", None) or ()
    return any(reason.check(CancelledError) for reason in reasons)


def _classify(failure: Failure, where: str, connect_timeout: float) -> NovaError:
    """The L{NovaError} for a failure from the agent or the body reader."""
    at = f"Nova metadata API at {where}"
    exc = failure.value
    if isinstance(exc, ierror.ConnectionRefusedError):
        return NovaUnreachable(f"{at} refused the connection")
    if isinstance(exc, ierror.TimeoutError):
        return NovaUnreachable(
            f"cannot connect to {at}: connect timeout after {connect_timeout:g}s"
        )
    if isinstance(exc, ierror.DNSLookupError):
        return NovaUnreachable(f"cannot connect to {at}: {exc}")  # "DNS lookup failed: ..."
    if isinstance(exc, ierror.ConnectError):
        return NovaUnreachable(f"cannot connect to {at}: {exc}")
    if isinstance(exc, (SSL.Error, VerificationError)):
        return NovaUnreachable(f"TLS with {at} failed: {_describe(exc)}")
    reasons = getattr(exc, "reasons", None)  # ResponseFailed, Request*Failed
    if reasons:
        for reason in reasons:
            if reason.check(SSL.Error, VerificationError):
                return NovaUnreachable(f"TLS with {at} failed: {_describe(reason.value)}")
        for reason in reasons:
            if reason.check(ParseError):
                return NovaBadResponse(f"{at} sent an invalid response: {reason.value}")
        phase = (
            "in the middle of the response"
            if isinstance(exc, ResponseFailed) and exc.__class__ is ResponseFailed
            else "before responding"
        )
        return NovaUnreachable(f"{at} closed the connection {phase}")
    if isinstance(exc, (ierror.ConnectionDone, ierror.ConnectionLost)):
        return NovaUnreachable(f"{at} closed the connection")
    return NovaUnreachable(f"request to {at} failed: {exc.__class__.__name__}: {exc}")


def _describe(exc: BaseException) -> str:
    """A short text for a TLS error: OpenSSL's reason strings, or the identity mismatch."""
    if isinstance(exc, VerificationError):
        return f"the certificate does not match the host: {exc}"
    if isinstance(exc, SSL.Error) and exc.args and isinstance(exc.args[0], list):
        reasons = [entry[-1] for entry in exc.args[0] if isinstance(entry, tuple) and entry]
        if reasons:
            return ", ".join(reasons)
    return str(exc) or exc.__class__.__name__


def _parseBaseURL(base_url: str) -> tuple[str, str, int, str]:
    """C{(scheme, host, port, path prefix)} of the configured Nova URL."""
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"invalid Nova URL {base_url!r}: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"Nova URL must be http:// or https://, not {base_url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"Nova URL has no host: {base_url!r}")
    if parts.username is not None or parts.query or parts.fragment:
        raise ValueError(f"Nova URL must be scheme://host[:port][/prefix]: {base_url!r}")
    try:
        host.encode("ascii")
        parts.path.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"Nova URL must be ASCII (use the IDNA form): {base_url!r}") from None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return parts.scheme, host, port, parts.path.rstrip("/")
