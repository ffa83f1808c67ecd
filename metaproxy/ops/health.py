"""The health answer: is Nova reachable, are lookups ready.

L{NovaProbe} asks Nova's metadata API for C{GET /} (the version list, which needs no
instance and no signature) every C{interval} seconds through the agent's own pooled
client, and keeps the outcome. L{health} turns what is known into the answer
C{/healthz} gives: 200 when every check passes, 503 otherwise, with a short JSON body
naming each check. Plain objects: the web shell (L{metaproxy.ops.web}) only serves them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["NovaProbe", "health", "nova_check"]

log = Logger("metaproxy.health")


class NovaProbe:
    """Asks Nova C{GET /} every C{interval} seconds while started.

    @param forward: L{metaproxy.nova.client.NovaClient.forward} (or a double).
    @ivar ok: C{None} before the first answer, then whether the last probe got an answer
        below 500.
    @ivar detail: what the last probe got (a status, or why it failed).
    @ivar checked: C{clock.seconds()} of the last probe's end.
    """

    def __init__(self, clock: Any, forward: Callable[..., Deferred[Any]], interval: float) -> None:
        self._clock = clock
        self._forward = forward
        self.interval = interval
        self.ok: bool | None = None
        self.detail = "not probed yet"
        self.checked: float | None = None
        self._call: IDelayedCall | None = None
        self._pending: Deferred[Any] | None = None

    def start(self) -> None:
        if self._call is None and self._pending is None:
            self.probe()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()

    def probe(self) -> None:
        """Probe now (and again C{interval} seconds after this one ends)."""
        self._call = None
        try:
            d = self._forward(b"GET", b"/", (), b"")
        except Exception as e:  # a double that raises: still an outcome
            self._outcome(False, f"cannot ask Nova: {e}")
            return
        self._pending = d
        d.addCallbacks(self._answered, self._failed)

    def _answered(self, response: Any) -> None:
        status = response.status
        if status < 500:
            self._outcome(True, f"answered {status}")
        else:
            self._outcome(False, f"answered {status}")

    def _failed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            self._pending = None
            return
        self._outcome(False, str(failure.value) or failure.type.__name__)

    def _outcome(self, ok: bool, detail: str) -> None:
        self._pending = None
        if ok != self.ok and self.ok is not None:
            if ok:
                log.info("Nova metadata API reachable again ({detail})", detail=detail)
            else:
                log.warn("Nova metadata API health probe failed: {detail}", detail=detail)
        elif not ok and self.ok is None:
            log.warn("Nova metadata API health probe failed: {detail}", detail=detail)
        self.ok, self.detail, self.checked = ok, detail, self._clock.seconds()
        self._call = self._clock.callLater(self.interval, self.probe)


def health(checks: Mapping[str, tuple[bool, str]]) -> tuple[int, bytes]:
    """The C{/healthz} answer: C{(200 or 503, JSON body)}.

    @param checks: check name -> (passed, detail). Every one must pass for 200.
    """
    healthy = all(ok for ok, _ in checks.values())
    body = {
        "status": "ok" if healthy else "unhealthy",
        "checks": {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()},
    }
    return (200 if healthy else 503), (json.dumps(body, sort_keys=True) + "\n").encode()


def nova_check(probe: NovaProbe) -> tuple[bool, str]:
    """The probe's outcome as a check (not probed yet counts as failing)."""
    return bool(probe.ok), probe.detail
