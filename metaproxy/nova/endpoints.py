"""Several Nova metadata API endpoints: the first healthy one serves, GET and HEAD fail
over, and a circuit breaker per endpoint stops hammering a dead one.

The first endpoint is upstream's (C{nova_metadata_host}, C{nova_metadata_port},
C{nova_metadata_protocol}); C{[metaproxy] nova_metadata_endpoints} adds more. Each has
its own L{NovaClient} (pool, in-flight cap, queue bound) and L{Breaker}.

A request goes to the first endpoint whose breaker lets it through. When that endpoint
cannot be reached, closes the connection or answers garbage (L{NovaUnreachable},
L{NovaBadResponse}), a GET or HEAD without a body is sent to the next endpoint whose
breaker allows it, within what is left of C{nova_timeout} (measured from the first
attempt, so haproxy's C{timeout server} is never reached); other methods are not sent
twice. A request refused because an endpoint's queue is full (L{NovaOverloaded}) was
never sent and goes to the next endpoint whatever its method. A timeout is not failed
over (the time is spent) but counts as a failure of the endpoint. Any HTTP answer, 5xx
included, is a success: the endpoint is up.

When every breaker is open, the request fails at once with L{NovaOverloaded} (503 with a
Retry-After of the shortest cooldown left) instead of waiting on a dead endpoint.

Breaker changes are logged (rare); refusals while every endpoint is left alone are
logged at most once per C{log_interval}. Counters: C{failovers}, C{refused}; per
endpoint, C{endpoints[i].breaker.state} (C{.opened}, C{.failures}) and its client's
C{rejected}, C{in_flight}, C{queued}; L{NovaEndpoints.metric_samples} exports them when
metrics are scraped (the pool gauges are read by L{metaproxy.ops.metrics.Metrics}).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from metaproxy.nova.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from metaproxy.nova.client import (
    NovaBadResponse,
    NovaOverloaded,
    NovaResponse,
    NovaTimeout,
    NovaUnreachable,
)
from metaproxy.ops.metrics import Sample
from metaproxy.ops.throttle import LogThrottle

__all__ = ["Endpoint", "NovaEndpoints"]

log = Logger("metaproxy.endpoints")

_IDEMPOTENT = frozenset((b"GET", b"HEAD"))
#: Below this many seconds left of the deadline, a failed request is not sent again.
_MIN_RETRY_SECONDS = 0.5

_REFUSED_HELP = (
    "Requests answered 503 at once: every endpoint's breaker open (breakers_open) or "
    "the endpoint's queue full (queue_full)."
)
_STATE_HELP = "1 for each Nova endpoint's circuit breaker state (closed: in use)."
_OPENED_HELP = "Times each Nova endpoint's circuit breaker opened."


class Endpoint:
    """One Nova endpoint: its URL, client and breaker."""

    __slots__ = ("url", "client", "breaker")

    def __init__(self, url: str, client: Any, breaker: Breaker) -> None:
        self.url = url
        self.client = client
        self.breaker = breaker

    @property
    def state(self) -> str:
        """The breaker's state: C{closed}, C{open} or C{half-open}."""
        return self.breaker.state


class NovaEndpoints:
    """A L{metaproxy.pipeline.Forwarder} over one or more endpoints (see the module).

    @param timeout: the whole budget of one request, failovers included (nova_timeout).
    """

    def __init__(
        self,
        clock: IReactorTime,
        endpoints: Sequence[Endpoint],
        *,
        timeout: float,
        log_interval: float = 60.0,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one Nova endpoint is needed")
        self._clock = clock
        self.endpoints = list(endpoints)
        self._timeout = timeout
        self._refusal_log = LogThrottle(clock, log_interval)
        #: GET/HEAD requests sent again to another endpoint
        self.failovers = 0
        #: requests refused at once because every endpoint's breaker was open
        self.refused = 0

    # The pool gauges of every endpoint together (metaproxy.ops.metrics reads them).

    @property
    def in_flight(self) -> int:
        return sum(e.client.in_flight for e in self.endpoints)

    @property
    def queued(self) -> int:
        return sum(e.client.queued for e in self.endpoints)

    @property
    def idle(self) -> int:
        return sum(e.client.pool.idle for e in self.endpoints)

    def metric_samples(self) -> list[Sample]:
        """The counters and each endpoint's breaker as metrics
        (L{metaproxy.ops.metrics.Metrics.add_source})."""
        samples = [
            Sample(
                "metaproxy_nova_failovers_total",
                "counter",
                "GET/HEAD requests sent again to the next Nova endpoint.",
                (),
                self.failovers,
            ),
            Sample(
                "metaproxy_nova_refused_total",
                "counter",
                _REFUSED_HELP,
                (("reason", "breakers_open"),),
                self.refused,
            ),
            Sample(
                "metaproxy_nova_refused_total",
                "counter",
                _REFUSED_HELP,
                (("reason", "queue_full"),),
                sum(e.client.rejected for e in self.endpoints),
            ),
        ]
        for endpoint in self.endpoints:
            for state in (CLOSED, HALF_OPEN, OPEN):
                samples.append(
                    Sample(
                        "metaproxy_nova_endpoint_state",
                        "gauge",
                        _STATE_HELP,
                        (("endpoint", endpoint.url), ("state", state)),
                        1 if endpoint.state == state else 0,
                    )
                )
            samples.append(
                Sample(
                    "metaproxy_nova_breaker_opened_total",
                    "counter",
                    _OPENED_HELP,
                    (("endpoint", endpoint.url),),
                    endpoint.breaker.opened,
                )
            )
        return samples

    def forward(
        self,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        deadline: float | None = None,
    ) -> Deferred[NovaResponse]:
        """Send the request to the first endpoint that takes it (see the module).

        @param deadline: when the answer must be there (C{clock.seconds()}), if sooner
            than C{timeout} from now (the pipeline's, after a slow lookup).
        """
        return self._attempt(0, method, target, headers, body, deadline)

    def _attempt(
        self,
        start: int,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        deadline: float | None,
    ) -> Deferred[NovaResponse]:
        endpoints = self.endpoints
        for index in range(start, len(endpoints)):
            endpoint = endpoints[index]
            if endpoint.breaker.allows():
                break
        else:
            return self._all_open(start)
        if deadline is None:
            timeout = None
            deadline = self._clock.seconds() + self._timeout
        else:
            timeout = max(0.0, deadline - self._clock.seconds())
        d = endpoint.client.forward(method, target, headers, body, timeout)
        d.addCallbacks(
            self._answered,
            self._failed,
            callbackArgs=(endpoint,),
            errbackArgs=(index, method, target, headers, body, deadline),
        )
        return d

    def _answered(self, response: NovaResponse, endpoint: Endpoint) -> NovaResponse:
        if endpoint.breaker.succeeded():
            log.info("Nova metadata API at {url} answers again: back in use", url=endpoint.url)
        return response

    def _failed(
        self,
        failure: Failure,
        index: int,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        deadline: float,
    ) -> Failure | Deferred[NovaResponse]:
        endpoint = self.endpoints[index]
        error = failure.value
        if isinstance(error, NovaOverloaded):
            endpoint.breaker.released()
            if index + 1 < len(self.endpoints):
                return self._attempt(index + 1, method, target, headers, body, deadline)
            return self._overloaded(failure)
        if not isinstance(error, (NovaUnreachable, NovaTimeout, NovaBadResponse)):
            endpoint.breaker.released()  # cancelled, or refused as unsendable
            return failure
        breaker = endpoint.breaker
        if breaker.failed():
            log.warn(
                "Nova metadata API at {url}: {count} consecutive failures, the last: "
                "{error}; not used for {cooldown:g} s, then probed with one request "
                "([metaproxy] nova_breaker_failures, nova_breaker_cooldown)",
                url=endpoint.url,
                count=breaker.failures,
                error=str(error),
                cooldown=breaker.cooldown,
            )
        if (
            isinstance(error, NovaTimeout)
            or method not in _IDEMPOTENT
            or body
            or index + 1 >= len(self.endpoints)
            or deadline - self._clock.seconds() < _MIN_RETRY_SECONDS
        ):
            return failure
        self.failovers += 1
        retry = self._attempt(index + 1, method, target, headers, body, deadline)
        # nobody left to try: the first endpoint's error says what went wrong
        return retry.addErrback(self._keep_first_error, failure)

    @staticmethod
    def _keep_first_error(second: Failure, first: Failure) -> Failure:
        if isinstance(second.value, CancelledError):
            return second
        if isinstance(second.value, NovaOverloaded) and not isinstance(first.value, NovaOverloaded):
            return first
        return second

    def _all_open(self, start: int) -> Deferred[NovaResponse]:
        self.refused += 1
        left = min(e.breaker.seconds_left() for e in self.endpoints[start:])
        error = NovaOverloaded(
            "every Nova metadata API endpoint failed repeatedly and is left alone for "
            f"{left:.1f} s more ({', '.join(e.url for e in self.endpoints[start:])})"
        )
        error.retry_after = max(1, math.ceil(left))  # type: ignore[attr-defined]
        return self._overloaded(Failure(error))

    def _overloaded(self, failure: Failure) -> Deferred[NovaResponse]:
        left_out = self._refusal_log.allow()
        if left_out is not None:
            log.warn(
                "Answered 503 without asking Nova: {error} ({left_out} more such answers "
                "since the last line)",
                error=str(failure.value),
                left_out=left_out,
            )
        return fail(failure)

    def close(self) -> Deferred[Any]:
        """Close every endpoint's idle connections (service stop)."""
        return DeferredList([e.client.close() for e in self.endpoints], consumeErrors=True)
