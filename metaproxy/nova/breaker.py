"""A circuit breaker for one Nova endpoint: stop sending to it while it is failing.

  - C{closed}: requests go to the endpoint. C{failures} consecutive failures open it.
  - C{open}: no request goes to it for C{cooldown} seconds.
  - C{half-open}: after the cooldown, the next request is sent as a probe and no other
    until the probe ends. Success closes the breaker; failure opens it again for twice
    the cooldown (at most C{max_cooldown}); a probe that ends neither way (cancelled by
    its client, refused before being sent) lets the next request probe instead.

Recovery needs no operator: a probe goes out as soon as the cooldown is over and a
request arrives. A plain object on a clock: no timers, no I/O.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

__all__ = ["CLOSED", "OPEN", "HALF_OPEN", "Breaker"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class Breaker:
    """
    @ivar state: C{"closed"}, C{"open"} or C{"half-open"}.
    @ivar failures: consecutive failures so far.
    @ivar opened: how many times it has opened (for metrics).
    @ivar retry_at: when an open breaker lets a probe through.
    """

    __slots__ = (
        "_clock",
        "threshold",
        "base_cooldown",
        "max_cooldown",
        "cooldown",
        "state",
        "failures",
        "opened",
        "retry_at",
        "_probing",
    )

    def __init__(
        self,
        clock: IReactorTime,
        *,
        failures: int = 5,
        cooldown: float = 5.0,
        max_cooldown: float | None = None,
    ) -> None:
        if failures < 1 or cooldown <= 0:
            raise ValueError("failures must be >= 1 and cooldown > 0")
        self._clock = clock
        self.threshold = failures
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown if max_cooldown is not None else 12 * cooldown
        self.cooldown = cooldown
        self.state = CLOSED
        self.failures = 0
        self.opened = 0
        self.retry_at = 0.0
        self._probing = False

    def allows(self) -> bool:
        """Whether a request may go to the endpoint now. C{True} for an open breaker
        past its cooldown makes this request the probe (the breaker is half-open)."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            if self._clock.seconds() >= self.retry_at:
                self.state = HALF_OPEN
                self._probing = True
                return True
            return False
        if not self._probing:  # the last probe ended neither way: this one probes
            self._probing = True
            return True
        return False

    def seconds_left(self) -> float:
        """Seconds until an open breaker lets a probe through (0 if it would now)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.retry_at - self._clock.seconds())

    def succeeded(self) -> bool:
        """The endpoint answered. Returns whether this closed the breaker."""
        self.failures = 0
        if self.state == CLOSED:
            return False
        self.state = CLOSED
        self.cooldown = self.base_cooldown
        self._probing = False
        return True

    def failed(self) -> bool:
        """The endpoint failed a request. Returns whether this opened the breaker."""
        self.failures += 1
        if self.state == HALF_OPEN:
            self.cooldown = min(self.cooldown * 2, self.max_cooldown)
            self._open()
            return True
        if self.state == CLOSED and self.failures >= self.threshold:
            self._open()
            return True
        return False

    def released(self) -> None:
        """A request ended neither in success nor in failure (cancelled, or refused
        before being sent): if it was the probe, the next request probes."""
        if self.state == HALF_OPEN:
            self._probing = False

    def _open(self) -> None:
        self.state = OPEN
        self._probing = False
        self.opened += 1
        self.retry_at = self._clock.seconds() + self.cooldown
