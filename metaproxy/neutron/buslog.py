"""oslo.messaging's log, as lines an operator can act on: one per change of the bus's state.

oslo.messaging (and kombu and py-amqp under it) log through Python's C{logging}. Left
alone, with no handler configured, every warning of theirs reaches standard error, and
twistd writes each as a C{[stderr#error]} line: a RabbitMQ restart is dozens of them,
one per connection per reconnection attempt. L{BusLog} is the handler of those three
loggers instead (installed once per process, L{BusLog.install}); it reads their records
as the bus's state:

  - B{Lost.} A record saying a connection failed (C{... is unreachable}, C{Connection
    failed}, C{Unable to connect}, C{Failed to publish}..., or any with a connection
    error attached) starts an outage. If the bus
    is still not back C{confirm} seconds later, one warning says so, with the first
    error; the records that follow are counted, not written. A connection that fails
    and reconnects at once (a pooled connection found broken after the broker came
    back) writes nothing.
  - B{Back.} C{Reconnected to AMQP server} ends it: one line says after how long, and
    how many records were left out. Then the listeners (L{add_listener}) are told, with
    the time the outage began: a call sent before then may be lost (its queue went with
    the broker), and need not be waited for.
  - Anything else goes through a L{LogThrottle} per level (at most one line per
    C{interval}, saying how many were left out). oslo.messaging's info records (a late
    reply nobody waits for any more, say) are written at debug level.

Records come from oslo.messaging's threads; they are handled on the reactor thread
(C{callFromThread}), as are the listeners.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger, LogLevel

from metaproxy.ops.throttle import LogThrottle

__all__ = ["BUS_LOGGERS", "BusLog"]

log = Logger("metaproxy.bus")

#: The loggers whose records L{BusLog} handles (and stops from reaching standard error):
#: oslo.log names oslo.messaging's modules' loggers C{oslo.messaging...}, and those that
#: use C{logging} directly are C{oslo_messaging...}.
BUS_LOGGERS = ("oslo.messaging", "oslo_messaging", "kombu", "amqp")

#: Parts of oslo.messaging's messages (their format strings) saying a connection failed.
_LOST = (
    "is unreachable",
    "closed the connection",
    "Connection failed",
    "Unable to connect to AMQP server",
    "Failed to publish message",
    "Failed to consume message",
    "Failed to declare consumer",
    "A recoverable connection/channel error occurred",
    "Unexpected error during heartbeat",
)
#: ... and that a connection is back.
_BACK = ("Reconnected to AMQP server",)

_LEVELS = (
    (logging.ERROR, LogLevel.error),
    (logging.WARNING, LogLevel.warn),
    (logging.INFO, LogLevel.debug),
)


def _is_connection_error(error: BaseException) -> bool:
    """A socket's error, or py-amqp's or kombu's about a connection."""
    return isinstance(error, OSError) or any(
        "Connection" in cls.__name__ or cls.__name__ == "OperationalError"
        for cls in type(error).__mro__
    )


def _level(levelno: int) -> LogLevel:
    for threshold, level in _LEVELS:
        if levelno >= threshold:
            return level
    return LogLevel.debug


class BusLog(logging.Handler):
    """See the module docstring.

    @param reactor: the reactor (C{callFromThread}, and the clock).
    @param confirm: seconds a lost connection must stay lost before it is logged.
    @param interval: seconds between two lines of one level about anything else.
    """

    _installed: BusLog | None = None

    def __init__(self, reactor: Any, *, confirm: float = 2.0, interval: float = 30.0) -> None:
        super().__init__(logging.INFO)
        self._reactor = reactor
        self.confirm = confirm
        self._throttles = {level: LogThrottle(reactor, interval) for _, level in _LEVELS}
        self._listeners: list[Callable[[float], None]] = []
        #: when the outage began (reactor time), or None while the bus works
        self.lost_since: float | None = None
        self._first_error = ""
        self._confirmed = False
        self._confirm_call: Any = None
        self.left_out = 0
        self.outages = 0

    @classmethod
    def install(cls, reactor: Any, **kwargs: Any) -> BusLog:
        """The process's L{BusLog}, made and attached to L{BUS_LOGGERS} the first time."""
        if cls._installed is None:
            handler = cls(reactor, **kwargs)
            for name in BUS_LOGGERS:
                logger = logging.getLogger(name)
                logger.addHandler(handler)
                logger.setLevel(logging.INFO)
                logger.propagate = False
            cls._installed = handler
        return cls._installed

    @classmethod
    def uninstall(cls) -> None:
        """Detach the process's L{BusLog} (tests)."""
        handler, cls._installed = cls._installed, None
        if handler is not None:
            for name in BUS_LOGGERS:
                logger = logging.getLogger(name)
                logger.removeHandler(handler)
                logger.propagate = True
                logger.setLevel(logging.NOTSET)

    def add_listener(self, listener: Callable[[float], None]) -> None:
        """Call C{listener(lost_since)} on the reactor thread when the bus is back after
        an outage that began at C{lost_since} (reactor time)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[float], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # -- any thread ---------------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        lost = False
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            text = f"{text} ({type(error).__name__}: {error})"
            lost = _is_connection_error(error)
        template = str(record.msg)
        self._reactor.callFromThread(self.handle_record, record.levelno, template, text, lost)

    # -- the reactor thread -------------------------------------------------------------

    def handle_record(self, levelno: int, template: str, text: str, lost: bool = False) -> None:
        """One record: C{template} its format string, C{text} its message; C{lost}: it
        carries a connection error."""
        if any(part in template for part in _BACK):
            self._back()
        elif lost or any(part in template for part in _LOST):
            self._lost(text)
        else:
            level = _level(levelno)
            left_out = self._throttles[level].allow()
            if left_out is not None:
                log.emit(
                    level,
                    "oslo.messaging: {message}{more}",
                    message=text,
                    more=f" ({left_out} more line(s) left out)" if left_out else "",
                )

    def _lost(self, text: str) -> None:
        if self.lost_since is not None:
            self.left_out += 1
            return
        self.lost_since = self._reactor.seconds()
        self._first_error = text.rstrip(". ")
        self._confirmed = False
        self.left_out = 0
        self._confirm_call = self._reactor.callLater(self.confirm, self._still_lost)

    def _still_lost(self) -> None:
        self._confirm_call = None
        if self.lost_since is None:
            return
        self._confirmed = True
        self.outages += 1
        log.warn(
            "Message bus (transport_url) unreachable: {error}. oslo.messaging keeps "
            "reconnecting by itself; its messages are left out until it has.",
            error=self._first_error,
        )

    def _back(self) -> None:
        since = self.lost_since
        if since is None:
            return
        self.lost_since = None
        if self._confirm_call is not None and self._confirm_call.active():
            self._confirm_call.cancel()
        self._confirm_call = None
        if not self._confirmed:
            return  # one connection failed and came back at once: nothing to act on
        log.info(
            "Message bus (transport_url) reachable again after {seconds:.1f} s "
            "({left_out} message(s) of oslo.messaging left out)",
            seconds=self._reactor.seconds() - since,
            left_out=self.left_out,
        )
        for listener in list(self._listeners):
            try:
                listener(since)
            except Exception:
                log.failure("A listener of the message bus's return failed")
