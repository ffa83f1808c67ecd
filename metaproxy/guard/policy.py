"""Who may be served before any lookup: the rate limit and the X-Forwarded-For rule.

L{RequestPolicy.check} runs once per request, after the caller is identified and before
the instance is looked up. It answers C{None} (go on) or the bytes of a refusal:

  - 429 with C{Retry-After} when the source is over its rate (L{metaproxy.guard.ratelimit}).
  - 403 when the request carried an C{X-Forwarded-For} of the guest's own and the rule
    is C{enforce}. haproxy's C{option forwardfor} I{appends} its header, so more than
    one C{X-Forwarded-For} field (or a list in one) means a proxy inside the guest
    forwarded the request: the SSRF signal AWS, Azure, GCE and others act on. C{off}
    ignores it, C{log} (the default) counts it and logs it, C{enforce} refuses it as
    well. The caller's address is haproxy's value either way. On a TCP listener inside
    the namespace (no haproxy: the caller is the connection's peer) any
    C{X-Forwarded-For} at all is the guest's, and the same rule applies to it.

Log lines about refusals go through a L{LogThrottle}: at most one line per kind per
interval, saying how many were left out, so a guest cannot flood the log.

The counters are plain integers on L{PolicyCounters} (C{policy.counters}), exported
with the rate limiter's by L{RequestPolicy.metric_samples} when metrics are scraped; the
hot path only increments them.
"""

from __future__ import annotations

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from metaproxy.caller import Identity
from metaproxy.guard.ratelimit import RateLimiter
from metaproxy.http.request import Request
from metaproxy.http.response import error_response
from metaproxy.ops.metrics import Sample
from metaproxy.ops.throttle import LogThrottle

__all__ = ["FORWARDED_FOR_MODES", "PolicyCounters", "RequestPolicy"]

log = Logger("metaproxy.policy")

#: The values of C{[metaproxy] guest_forwarded_for}.
FORWARDED_FOR_MODES = ("off", "log", "enforce")

_FORWARDED_FOR_HELP = (
    "Requests that carried the guest's own X-Forwarded-For (seen), and those answered "
    "403 for it (refused, guest_forwarded_for = enforce)."
)

_TOO_MANY = "Too many metadata requests from this address. Please slow down."
_FORWARDED = (
    "The request came through a proxy inside the instance (it carried its own "
    "X-Forwarded-For); metadata is only served to the instance itself."
)


@attrs.define
class PolicyCounters:
    """What the policy has seen (for metrics).

    @ivar xff_seen: requests that carried a guest-supplied C{X-Forwarded-For}.
    @ivar xff_refused: of those, refused with 403 (C{enforce}).

    Requests refused with 429 are counted once, by the rate limiter itself
    (L{RateLimiter.rejected}), and exported here as C{metaproxy_rate_limited_total}.
    """

    xff_seen: int = 0
    xff_refused: int = 0


class RequestPolicy:
    """The checks every identified request goes through before its lookup.

    @param forwarded_for: C{off}, C{log} or C{enforce} (see the module).
    @param limiter: the rate limiter, or C{None} when rate limiting is off.
    @param log_interval: seconds between two log lines of the same kind.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        forwarded_for: str = "log",
        limiter: RateLimiter | None = None,
        log_interval: float = 60.0,
    ) -> None:
        if forwarded_for not in FORWARDED_FOR_MODES:
            raise ValueError(f"forwarded_for must be one of {', '.join(FORWARDED_FOR_MODES)}")
        self.forwarded_for = forwarded_for
        self.limiter = limiter
        self.counters = PolicyCounters()
        self._xff_mode = FORWARDED_FOR_MODES.index(forwarded_for)  # 0 off, 1 log, 2 enforce
        self._xff_log = LogThrottle(clock, log_interval)
        self._rate_log = LogThrottle(clock, log_interval)

    @property
    def active(self) -> bool:
        """Whether there is anything to check (else the pipeline need not call)."""
        return self.limiter is not None or self._xff_mode != 0

    def metric_samples(self) -> list[Sample]:
        """The counters as metrics, the rate limiter's included
        (L{metaproxy.ops.metrics.Metrics.add_source})."""
        counters = self.counters
        samples = [
            Sample(
                "metaproxy_rate_limited_total",
                "counter",
                "Requests answered 429 by [metadata_rate_limiting].",
                (),
                self.limiter.rejected if self.limiter is not None else 0,
            ),
            Sample(
                "metaproxy_guest_forwarded_for_total",
                "counter",
                _FORWARDED_FOR_HELP,
                (("action", "seen"),),
                counters.xff_seen,
            ),
            Sample(
                "metaproxy_guest_forwarded_for_total",
                "counter",
                _FORWARDED_FOR_HELP,
                (("action", "refused"),),
                counters.xff_refused,
            ),
        ]
        if self.limiter is not None:
            samples += self.limiter.metric_samples()
        return samples

    def check(self, request: Request, identity: Identity) -> bytes | None:
        """C{None} to go on, or the answer that refuses C{request}."""
        limiter = self.limiter
        if limiter is not None:
            wait = limiter.check(identity.namespace.id, identity.ip)
            if wait:
                return self._rate_limited(identity, wait)
        if self._xff_mode:
            count = request.forwarded_for_count
            # haproxy's own comes last; on a TCP listener in the namespace every one is
            # the guest's
            if count > 1 or b"," in request.forwarded_for or (count and identity.from_peer):
                return self._guest_forwarded(request, identity)
        return None

    def _rate_limited(self, identity: Identity, wait: int) -> bytes:
        left_out = self._rate_log.allow()
        if left_out is not None:
            limiter = self.limiter
            assert limiter is not None
            log.warn(
                "Rate limit: {address} in {namespace} asked more than {base} times in "
                "{base_s:g} s or {burst} times in {burst_s:g} s; answered 429 with "
                "Retry-After {wait} ({left_out} more such answers since the last line; "
                "[metadata_rate_limiting] sets the limits)",
                address=_address(identity),
                namespace=identity.namespace.name,
                base=limiter.base.limit,
                base_s=limiter.base.seconds,
                burst=limiter.burst.limit,
                burst_s=limiter.burst.seconds,
                wait=wait,
                left_out=left_out,
            )
        return error_response(429, _TOO_MANY, retry_after=wait)

    def _guest_forwarded(self, request: Request, identity: Identity) -> bytes | None:
        counters = self.counters
        counters.xff_seen += 1
        enforce = self._xff_mode == 2
        if enforce:
            counters.xff_refused += 1
        left_out = self._xff_log.allow()
        if left_out is not None:
            values = b", ".join(request.values(b"x-forwarded-for"))
            log.warn(
                "{address} in {namespace} sent X-Forwarded-For {values}: a proxy inside "
                "the instance forwarded the request; {action} ({left_out} more such "
                "requests since the last line; [metaproxy] guest_forwarded_for = "
                "{mode})",
                address=_address(identity),
                namespace=identity.namespace.name,
                values=values[:200].decode("ascii", "backslashreplace"),
                action="answered 403" if enforce else "served it anyway",
                left_out=left_out,
                mode=self.forwarded_for,
            )
        if enforce:
            return error_response(403, _FORWARDED)
        return None


def _address(identity: Identity) -> str:
    if identity.mac:
        return f"{identity.ip} (MAC {identity.mac})"
    return identity.ip
