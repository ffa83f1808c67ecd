"""The thin Twisted shell around the pipeline: one request per connection.

Bytes go to a L{RequestParser}; a complete request goes to the L{Pipeline}; the answer's
bytes go back and the connection is closed. A malformed, oversized or too slow request
is answered by the agent (400/408/413/431/501/505) and logged; nothing is ever dropped
without an answer while the client is still there.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from typing import TYPE_CHECKING

from metaproxy.namespace import Namespace
from metaproxy.request import RequestError, RequestParser
from metaproxy.response import error_response

if TYPE_CHECKING:
    from metaproxy.pipeline import Pipeline

__all__ = ["Limits", "MetadataProtocol", "MetadataFactory"]

log = Logger("metaproxy.server")


@attrs.frozen
class Limits:
    """Request limits ([metaproxy] options)."""

    max_header_bytes: int = 16384
    max_headers: int = 100
    max_body_bytes: int = 65536
    request_timeout: float = 30.0


class MetadataProtocol(Protocol):
    """One connection from a namespace proxy."""

    def __init__(self, factory: "MetadataFactory") -> None:
        self._factory = factory
        limits = factory.limits
        self._parser = RequestParser(limits.max_header_bytes, limits.max_headers,
                                     limits.max_body_bytes)
        self._timer: IDelayedCall | None = None
        self._pending: Deferred[bytes] | None = None
        self._done = False
        self._lost = False

    def connectionMade(self) -> None:
        self._timer = self._factory.clock.callLater(
            self._factory.limits.request_timeout, self._timedOut)

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return  # one request per connection; anything after it is ignored
        try:
            request = self._parser.feed(data)
        except RequestError as e:
            log.warn("Refused a malformed request on {socket}: {status} {reason}",
                     socket=self._factory.describe(), status=e.status, reason=e.message)
            self._answer(error_response(e.status, e.message))
            return
        if request is None:
            return
        self._done = True
        self._cancelTimer()
        self._pending = self._factory.pipeline.handle(request, self._factory.namespace)
        self._pending.addCallbacks(self._answer, self._failed)

    def _answer(self, data: bytes) -> None:
        self._pending = None
        self._done = True
        self._cancelTimer()
        if not self._lost:
            self.transport.write(data)
            self.transport.loseConnection()

    def _failed(self, failure: Failure) -> None:
        self._pending = None
        if self._lost:
            return  # cancelled because the client went away: nobody to answer
        # the pipeline answers every error itself, so this is a bug; still answer
        log.failure("Unexpected error while answering a request", failure)
        self._answer(error_response(500, "An unknown error has occurred. "
                                         "Please try your request again."))

    def _timedOut(self) -> None:
        self._timer = None
        if self._done:
            return
        if self._parser.started:
            log.warn("Request on {socket} not complete after {timeout} seconds; answered 408",
                     socket=self._factory.describe(), timeout=self._factory.limits.request_timeout)
            self._answer(error_response(408, "The request was not received in time."))
        else:
            self._done = True
            self.transport.loseConnection()

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._lost = True
        self._cancelTimer()
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()


class MetadataFactory(Factory):
    """Builds protocols for one listener: the shared socket (C{namespace=None}) or one
    namespace's socket."""

    noisy = False
    protocol = MetadataProtocol

    def __init__(self, pipeline: "Pipeline", namespace: Namespace | None, limits: Limits,
                 clock: IReactorTime) -> None:
        self.pipeline = pipeline
        self.namespace = namespace
        self.limits = limits
        self.clock = clock

    def buildProtocol(self, addr: object) -> MetadataProtocol:
        return MetadataProtocol(self)

    def describe(self) -> str:
        return f"the socket of {self.namespace.name}" if self.namespace else "the shared socket"
