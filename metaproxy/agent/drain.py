"""SIGTERM: stop accepting, let the requests in flight finish, then stop (exit status 0).

twistd's own SIGTERM handler stops the reactor at once and makes twistd exit by the
signal (status 143); L{Drain} replaces it: the listeners are closed first (new
connections are refused, and haproxy answers or retries them), the connections being
served are waited for, up to C{timeout} seconds, and then the reactor is stopped, so
twistd exits 0. A second SIGTERM while draining changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

__all__ = ["Drain"]

log = Logger("metaproxy.drain")

#: seconds between two looks at the connections still open
POLL = 0.05


class Drain:
    """Drains once, when L{start} is first called.

    @param stop_listening: closes every listener; may return a Deferred.
    @param in_flight: connections (requests) still being served.
    @param stop: called once drained or timed out (normally C{reactor.stop}).
    """

    def __init__(
        self,
        clock: Any,
        *,
        stop_listening: Callable[[], Any],
        in_flight: Callable[[], int],
        timeout: float,
        stop: Callable[[], None],
    ) -> None:
        self._clock = clock
        self._stop_listening = stop_listening
        self._in_flight = in_flight
        self._timeout = timeout
        self._stop = stop
        self.started = False
        self.done: Deferred[bool] = Deferred()

    def start(self, why: str = "SIGTERM") -> Deferred[bool]:
        """Begin draining; the Deferred fires with C{True} when every request finished,
        C{False} when the timeout came first (it fires before C{stop} is called)."""
        if self.started:
            log.info(
                "{why} again while draining: still waiting for {count} request(s)",
                why=why,
                count=self._in_flight(),
            )
            return self.done
        self.started = True
        log.info(
            "{why}: no new connections; waiting up to {timeout} s for {count} request(s) in flight",
            why=why,
            timeout=self._timeout,
            count=self._in_flight(),
        )
        deadline = self._clock.seconds() + self._timeout
        d = maybeDeferred(self._stop_listening)
        d.addErrback(lambda f: log.failure("Error while closing the listeners", f))
        d.addCallback(lambda _: self._wait(deadline))
        return self.done

    def _wait(self, deadline: float) -> None:
        left = self._in_flight()
        if left <= 0:
            log.info("Drained: every request in flight was answered; stopping")
            self._finish(True)
        elif self._clock.seconds() >= deadline:
            log.warn(
                "Stopping with {count} request(s) still in flight after {timeout} s "
                "([metaproxy] drain_timeout)",
                count=left,
                timeout=self._timeout,
            )
            self._finish(False)
        else:
            self._clock.callLater(POLL, self._wait, deadline)

    def _finish(self, drained: bool) -> None:
        self.done.callback(drained)
        self._stop()
