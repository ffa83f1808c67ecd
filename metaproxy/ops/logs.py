"""The agent's log: level from C{[DEFAULT] debug}, text or JSON (C{[DEFAULT] use_json}),
and a limit on lines about failed requests, so that a flood cannot fill the disk.

twistd asks the application for an C{ILogObserver} before it starts logging; the
agent's service gives it L{LogSetup.observer} (L{metaproxy.agent.service.AgentService}). The
output is what twistd's C{--logfile} names: C{-} (or nothing, with C{--nodaemon}) is
standard output, anything else a file opened for appending, reopened on SIGHUP and
SIGUSR1 (logrotate's C{postrotate}). With C{--syslog} twistd keeps its own observer.

Each event goes through three steps, all plain objects:
  - L{LevelFilter}: info and above, or everything with C{debug} (changed on SIGHUP);
  - L{ThrottleFilter}: warnings and errors from the request path (L{LIMITED_NAMESPACES})
    are counted per message kind (the format string) in windows of C{window} seconds;
    past C{limit} in a window they are left out, and when the window ends one line
    says how many of that kind were left out (a L{LogThrottle} per kind, the
    mechanism every throttled log line goes through);
  - L{format_json} or Twisted's text format.

Nothing here adds values to what the events carry: the request path never puts the
shared secret or a signature into an event, and L{format_json} writes only the event's
plain values (strings, numbers, booleans), never the objects it refers to.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Callable
from typing import IO, Any

from twisted.logger import (
    ILogObserver,
    LogLevel,
    eventAsText,
    formatEvent,
    formatEventAsClassicLogText,
)
from zope.interface import implementer

from metaproxy.ops.throttle import LogThrottle

__all__ = ["LIMITED_NAMESPACES", "LevelFilter", "ThrottleFilter", "format_json", "LogSetup"]

#: Where the lines about failed and refused requests come from.
LIMITED_NAMESPACES = frozenset({"metaproxy.pipeline", "metaproxy.server"})

_INFO_UP = frozenset({LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical})


class LevelFilter:
    """Passes info and above, or every level when C{debug}."""

    def __init__(self, debug: bool = False) -> None:
        self.debug = debug

    def __call__(self, event: dict) -> bool:
        return self.debug or event.get("log_level", LogLevel.info) in _INFO_UP


class ThrottleFilter:
    """At most C{limit} events of one kind per C{window} seconds, for the request path's
    warnings and errors; the others pass untouched. C{limit} 0: no limit.

    One L{LogThrottle} per kind (the logger and the format string), for one window: when
    it ends, one line says how many of that kind were left out.

    @param emit: where the summary lines go (the observer after this step).
    """

    def __init__(
        self, clock: Any, emit: Callable[[dict], None], *, limit: int, window: float = 10.0
    ) -> None:
        self._clock = clock
        self._emit = emit
        self._limit = limit
        self.window = window
        # kind -> (its throttle for the current window, the timer of its summary line)
        self._kinds: dict[tuple[str, str], tuple[LogThrottle, Any]] = {}

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, limit: int) -> None:
        """A new limit (SIGHUP) applies to the windows already open too."""
        self._limit = limit
        for throttle, _ in self._kinds.values():
            throttle.limit = limit

    def __call__(self, event: dict) -> bool:
        if (
            not self._limit
            or event.get("log_namespace") not in LIMITED_NAMESPACES
            or event.get("log_level") not in (LogLevel.warn, LogLevel.error)
        ):
            return True
        key = (event["log_namespace"], str(event.get("log_format")))
        kind = self._kinds.get(key)
        if kind is not None and self._clock.seconds() >= kind[0].window_end:
            self._flush(key)
            kind = None
        if kind is None:
            kind = self._kinds[key] = (LogThrottle(self._clock, self.window, self._limit), None)
        throttle, timer = kind
        if throttle.allow() is not None:
            return True
        if timer is None:
            delay = max(0.0, throttle.window_end - self._clock.seconds())
            self._kinds[key] = (throttle, self._clock.callLater(delay, self._flush, key))
        return False

    def _flush(self, key: tuple[str, str]) -> None:
        kind = self._kinds.pop(key, None)
        if kind is None:
            return
        throttle, timer = kind
        if timer is not None and timer.active():
            timer.cancel()
        left_out = throttle.take_left_out()
        if left_out:
            self._emit(
                {
                    "log_namespace": key[0],
                    "log_level": LogLevel.warn,
                    "log_time": self._clock.seconds(),
                    "log_system": "-",
                    "log_format": "{left_out} more line(s) like this were left out in "
                    "{window:g} s ([metaproxy] log_rate_limit = {limit}): "
                    "{kind}",
                    "left_out": left_out,
                    "window": self.window,
                    "limit": self._limit,
                    "kind": key[1],
                }
            )

    def flush_all(self) -> None:
        for key in list(self._kinds):
            self._flush(key)


_PLAIN = (str, int, float, bool)


def format_json(event: dict) -> str:
    """One JSON object and a newline: time, level, logger, message, the event's plain
    fields and, for an error with a traceback, the traceback."""
    record: dict[str, Any] = {
        "time": datetime.datetime.fromtimestamp(event.get("log_time") or 0, datetime.UTC).isoformat(
            timespec="milliseconds"
        ),
        "level": getattr(event.get("log_level"), "name", "info"),
        "logger": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    system = event.get("log_system")
    if system and system != "-":
        record["system"] = system
    for name, value in event.items():
        if name.startswith("log_") or name in record or name.startswith("_"):
            continue
        if isinstance(value, _PLAIN) and not isinstance(value, bytes):
            record[name] = value
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:
            record["traceback"] = repr(failure)
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


def _format_text(event: dict) -> str:
    text = formatEventAsClassicLogText(event)
    if text is None:
        return ""
    if event.get("log_failure") is not None:
        return eventAsText(event, includeTimestamp=True, includeSystem=True) + "\n"
    return text


@implementer(ILogObserver)
class LogSetup:
    """The agent's log observer and what SIGHUP changes in it.

    @param path: the log file, or None for C{stream}.
    @param stream: where to write without a file (standard output).
    """

    def __init__(
        self,
        clock: Any,
        *,
        path: str | None = None,
        stream: IO[str] | None = None,
        use_json: bool = False,
        debug: bool = False,
        rate_limit: int = 20,
        window: float = 10.0,
    ) -> None:
        self._path = path
        self._stream = stream if stream is not None else sys.stdout
        self._file: IO[str] | None = None
        self.use_json = use_json
        self.levels = LevelFilter(debug)
        self.throttle = ThrottleFilter(clock, self._write, limit=rate_limit, window=window)
        if path is not None:
            self._file = open(path, "a", encoding="utf-8")

    @classmethod
    def for_twistd(cls, clock: Any, twistd_options: Any, settings: Any) -> LogSetup | None:
        """From twistd's own options (C{--logfile}, C{--nodaemon}, C{--syslog}); None
        when twistd should keep its observer (syslog, or no options: not under twistd)."""
        if twistd_options is None:
            return None
        try:
            if twistd_options.get("syslog"):
                return None
            logfile = twistd_options.get("logfile")
            nodaemon = twistd_options.get("nodaemon")
        except AttributeError:
            return None
        if logfile == "-" or (nodaemon and not logfile):
            path = None
        else:
            path = os.path.abspath(logfile or "twistd.log")
        return cls(
            clock,
            path=path,
            use_json=settings.use_json,
            debug=settings.debug,
            rate_limit=settings.log_rate_limit,
        )

    @property
    def observer(self) -> LogSetup:
        return self

    def __call__(self, event: dict) -> None:
        if not self.levels(event) or not self.throttle(event):
            return
        self._write(event)

    def _write(self, event: dict) -> None:
        text = format_json(event) if self.use_json else _format_text(event)
        if not text:
            return
        out = self._file if self._file is not None else self._stream
        try:
            out.write(text)
            out.flush()
        except (OSError, ValueError):
            pass  # a full disk or a closed stream must not stop the agent

    def apply(self, settings: Any) -> None:
        """SIGHUP: the level, the format and C{log_rate_limit} from reloaded settings."""
        self.levels.debug = settings.debug
        self.use_json = settings.use_json
        self.throttle.limit = settings.log_rate_limit

    def reopen(self) -> None:
        """Reopen the log file (after logrotate moved it); nothing for a stream."""
        if self._path is None:
            return
        try:
            new = open(self._path, "a", encoding="utf-8")
        except OSError:
            return  # keep writing to the old one
        old, self._file = self._file, new
        if old is not None:
            old.close()

    def close(self) -> None:
        self.throttle.flush_all()
        if self._file is not None:
            self._file.close()
            self._file = None
