"""The agent's log: level from C{[DEFAULT] debug}, text or JSON (C{[DEFAULT] use_json}),
a limit on lines about failed requests, so that a flood cannot fill the disk, and the
destinations oslo.log's options and twistd's name.

twistd asks the application for an C{ILogObserver} before it starts logging; the
agent's service gives it L{LogSetup.observer} (L{metaproxy.agent.service.AgentService}).
L{LogSetup.for_twistd} picks the destinations (L{metaproxy.ops.log_destinations}) as
oslo.log would from C{log_file}/C{log_dir}, C{use_stderr}, C{use_journal} and
C{use_syslog}, plus twistd's C{--logfile} and C{--syslog}. Files are reopened and the
log daemons' sockets connected again on SIGHUP and SIGUSR1 (logrotate's C{postrotate}).

Each event goes through three steps, all plain objects:
  - L{LevelFilter}: info and above, or everything with C{debug} (changed on SIGHUP);
  - L{ThrottleFilter}: warnings and errors from the request path (L{LIMITED_NAMESPACES})
    are counted per message kind (the format string) in windows of C{window} seconds;
    past C{limit} in a window they are left out, and when the window ends one line
    says how many of that kind were left out (a L{LogThrottle} per kind, the
    mechanism every throttled log line goes through);
  - L{format_json} or Twisted's text format, made once for every destination.

Nothing here adds values to what the events carry: the request path never puts the
shared secret or a signature into an event, and L{format_json} writes only the event's
plain values (strings, numbers, booleans), never the objects it refers to.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from twisted.logger import ILogObserver, LogLevel, formatEvent
from zope.interface import implementer

from metaproxy.ops.log_destinations import (
    JOURNAL_PATH,
    SYSLOG_FACILITIES,
    SYSLOG_PATH,
    Destination,
    FileDestination,
    JournalDestination,
    LogDestinationError,
    Rendered,
    StreamDestination,
    SyslogDestination,
    parse_facility,
)
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


@implementer(ILogObserver)
class LogSetup:
    """The agent's log observer: the filters, then every destination, and what SIGHUP
    and SIGUSR1 change in it.

    @param destinations: where the lines go (L{metaproxy.ops.log_destinations}); without
        it, the file C{path}, or else C{stream} (standard output by default).
    """

    def __init__(
        self,
        clock: Any,
        *,
        path: str | None = None,
        stream: IO[str] | None = None,
        destinations: Sequence[Destination] | None = None,
        use_json: bool = False,
        debug: bool = False,
        rate_limit: int = 20,
        window: float = 10.0,
    ) -> None:
        if destinations is None:
            if path is not None:
                destinations = [FileDestination(path)]
            else:
                destinations = [StreamDestination(stream if stream is not None else sys.stdout)]
        self.destinations: tuple[Destination, ...] = tuple(destinations)
        self.use_json = use_json
        self.levels = LevelFilter(debug)
        self.throttle = ThrottleFilter(clock, self._write, limit=rate_limit, window=window)

    @property
    def description(self) -> str:
        """Where the lines go, for the start line and check-config."""
        return ", ".join(d.description for d in self.destinations)

    @classmethod
    def for_twistd(
        cls,
        clock: Any,
        twistd_options: Any,
        settings: Any,
        *,
        syslog_path: str = SYSLOG_PATH,
        journal_path: str = JOURNAL_PATH,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
    ) -> LogSetup | None:
        """The destinations of the settings (oslo.log's options) and of twistd's own
        options; None when not under twistd (no options).

        As oslo.log does: the file C{settings.log_path} (C{log_dir}/C{log_file}),
        standard error with C{use_stderr}, journald with C{use_journal}, syslog with
        C{use_syslog}; standard output when none of the first three is set. twistd's
        C{--logfile} adds its file (C{-}: standard output) and C{--syslog} a syslog
        destination tagged with its C{--prefix}; without either, and without a file,
        standard error or journald, the lines go where twistd would send them: standard
        output with C{--nodaemon}, else C{twistd.log}.

        @raise LogDestinationError: a destination cannot be used (a file that cannot be
            opened, a daemon that cannot be reached); none is left open.
        """
        if twistd_options is None:
            return None
        try:
            logfile = twistd_options.get("logfile")
            nodaemon = twistd_options.get("nodaemon")
            twistd_syslog = twistd_options.get("syslog")
            prefix = twistd_options.get("prefix") or "twisted"
        except AttributeError:
            return None
        stdout = stdout if stdout is not None else sys.stdout
        stderr = stderr if stderr is not None else sys.stderr
        facility = SYSLOG_FACILITIES["LOG_USER"]
        if settings.use_syslog or settings.use_journal or twistd_syslog:
            try:
                facility = parse_facility(settings.syslog_log_facility)
            except ValueError as e:
                raise LogDestinationError(
                    f"[DEFAULT] syslog_log_facility: {e}. Fix: set LOG_USER, LOG_DAEMON, "
                    "LOG_LOCAL0 to LOG_LOCAL7 or another syslog(3) facility"
                ) from None
        opened: list[Destination] = []
        files: set[str] = set()

        def add_file(path: str) -> None:
            path = os.path.abspath(path)
            if path not in files:
                files.add(path)
                opened.append(FileDestination(path))

        try:
            if settings.log_path:
                add_file(settings.log_path)
            if logfile == "-":
                opened.append(StreamDestination(stdout))
            elif logfile:
                add_file(logfile)
            if settings.use_stderr:
                opened.append(StreamDestination(stderr, "standard error"))
            if settings.use_journal:
                opened.append(JournalDestination(journal_path, facility=facility))
            if not opened and not twistd_syslog:
                if nodaemon:
                    opened.append(StreamDestination(stdout))
                else:
                    add_file("twistd.log")
            if settings.use_syslog:
                opened.append(SyslogDestination(syslog_path, facility=facility))
            elif twistd_syslog:
                opened.append(
                    SyslogDestination(
                        syslog_path,
                        facility=facility,
                        tag=prefix,
                        fix="start the syslog daemon, or leave out twistd's --syslog",
                    )
                )
        except LogDestinationError:
            for destination in opened:
                destination.close()
            raise
        return cls(
            clock,
            destinations=opened,
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
        rendered = Rendered(event, self.use_json, format_json)
        for destination in self.destinations:
            destination.write(rendered)

    def apply(self, settings: Any) -> None:
        """SIGHUP: the level, the format and C{log_rate_limit} from reloaded settings
        (the destinations are read at start only)."""
        self.levels.debug = settings.debug
        self.use_json = settings.use_json
        self.throttle.limit = settings.log_rate_limit

    def reopen(self) -> None:
        """Reopen the log files (after logrotate moved them) and reconnect to the log
        daemons (after a restart)."""
        for destination in self.destinations:
            destination.reopen()

    def close(self) -> None:
        self.throttle.flush_all()
        for destination in self.destinations:
            destination.close()
