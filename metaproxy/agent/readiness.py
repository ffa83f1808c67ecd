# -*- test-case-name: tests.unit.agent.test_readiness -*-
"""Telling systemd (C{Type=notify}) when the agent serves, when it stops, and that it lives.

L{Readiness} follows the agent's own checks: once the sockets listen it asks, every
L{POLL} seconds, whether the lookups can answer (the OVN replica has synced, a token was
had, every worker reports ready...), and sends C{READY=1} the first time they can, with
a status line for C{systemctl status}. Until then the status says what it waits for.
C{STOPPING=1} goes out when the drain starts. With C{WatchdogSec=} in the unit, a
keep-alive is sent from the reactor at half the interval, so a reactor that stops
turning gets the service restarted.

Outside systemd (no C{NOTIFY_SOCKET}) it sends nothing and schedules nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.task import LoopingCall

from metaproxy.ops.sdnotify import Notifier

__all__ = ["Readiness", "POLL"]

#: Seconds between two looks at the lookups' readiness before READY=1.
POLL = 0.25


class Readiness:
    """READY once C{ready()} says so, STOPPING on L{stopping}, WATCHDOG meanwhile.

    @param ready: C{() -> (bool, str)}: whether the agent can answer, and a status line.
    @param watchdog: seconds between keep-alives, or C{None} without systemd's watchdog.
    """

    def __init__(
        self,
        reactor: Any,
        notifier: Notifier,
        ready: Callable[[], tuple[bool, str]],
        watchdog: float | None = None,
    ) -> None:
        self._reactor = reactor
        self._notifier = notifier
        self._ready = ready
        self._watchdog_interval = watchdog
        self._poll: Any = None
        self._watchdog: LoopingCall | None = None
        self._last_status: str | None = None
        self.is_ready = False
        self.is_stopping = False

    def start(self) -> None:
        """The sockets listen: look at the lookups now and until they are ready."""
        if not self._notifier.enabled:
            return
        if self._watchdog_interval is not None and self._watchdog is None:
            self._watchdog = LoopingCall(self._notifier.watchdog)
            self._watchdog.clock = self._reactor
            self._watchdog.start(self._watchdog_interval, now=True)
        self._look()

    def _look(self) -> None:
        self._poll = None
        ready, status = self._ready()
        if ready:
            self.is_ready = True
            self._notifier.ready(status)
            return
        if status != self._last_status:
            self._notifier.status(status)
            self._last_status = status
        self._poll = self._reactor.callLater(POLL, self._look)

    def stopping(self, status: str) -> None:
        """The drain has begun (or the service stops); said once."""
        self._cancel_poll()
        if not self.is_stopping:
            self.is_stopping = True
            self._notifier.stopping(status)

    def stop(self) -> None:
        """The service has stopped: no more keep-alives."""
        self._cancel_poll()
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._watchdog = None
        self._notifier.close()

    def _cancel_poll(self) -> None:
        if self._poll is not None and self._poll.active():
            self._poll.cancel()
        self._poll = None
