"""Where the agent's log lines go: a file, a stream, the syslog daemon, journald.

Each destination takes a L{Rendered} event (the text or JSON forms, made once per
event and only when a destination asks for them) and writes it without waiting:

  - L{FileDestination}: a file opened for appending, reopened by L{FileDestination.reopen}
    (SIGUSR1 or SIGHUP, after logrotate moved it);
  - L{StreamDestination}: standard output or standard error;
  - L{SyslogDestination}: RFC 3164-style datagrams (C{<PRI>Mmm dd hh:mm:ss tag[pid]:
    message}, as the C library's syslog(3) sends them) to the local syslog socket;
  - L{JournalDestination}: journald's native protocol, one datagram per line with
    C{MESSAGE}, C{PRIORITY}, C{SYSLOG_FACILITY}, C{SYSLOG_IDENTIFIER}, C{LOGGER_NAME},
    C{LOGGER_LEVEL} and the event's plain fields (C{NAMESPACE}, C{ADDRESS}, ...) in
    upper case; a value holding a newline takes the length-prefixed binary form.

The two sockets are datagram sockets that never block: a line the daemon cannot take at
once is dropped and counted (C{dropped}), never waited for, so a stalled syslog daemon
cannot stall the requests. A daemon that restarted is connected to again on the next
line (at most once a second). A destination never raises while writing: a full disk or
a closed stream must not stop the agent.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import struct
import time
from collections.abc import Callable
from functools import cached_property
from typing import IO, Protocol

from twisted.logger import LogLevel, eventAsText, formatEventAsClassicLogText

__all__ = [
    "SYSLOG_PATH",
    "JOURNAL_PATH",
    "SYSLOG_FACILITIES",
    "LogDestinationError",
    "parse_facility",
    "priority",
    "Rendered",
    "Destination",
    "FileDestination",
    "StreamDestination",
    "SyslogDestination",
    "JournalDestination",
    "journal_fields",
    "encode_journal",
]

#: The local syslog daemon's socket.
SYSLOG_PATH = "/dev/log"
#: journald's socket for the native protocol.
JOURNAL_PATH = "/run/systemd/journal/socket"

#: syslog(3) facilities by name, as oslo.log accepts them (the numbers are RFC 3164's).
SYSLOG_FACILITIES = {
    "LOG_KERN": 0,
    "LOG_USER": 1,
    "LOG_MAIL": 2,
    "LOG_DAEMON": 3,
    "LOG_AUTH": 4,
    "LOG_SYSLOG": 5,
    "LOG_LPR": 6,
    "LOG_NEWS": 7,
    "LOG_UUCP": 8,
    "LOG_CRON": 9,
    "LOG_AUTHPRIV": 10,
    "LOG_FTP": 11,
    **{f"LOG_LOCAL{n}": 16 + n for n in range(8)},
}

_PRIORITIES = {
    LogLevel.debug: 7,
    LogLevel.info: 6,
    LogLevel.warn: 4,
    LogLevel.error: 3,
    LogLevel.critical: 2,
}

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

#: A message longer than this is cut when the socket refuses the whole datagram.
_TRUNCATE_AT = 8192
_RECONNECT_EVERY = 1.0


class LogDestinationError(Exception):
    """A destination cannot be used; str() says which, why and the fix."""


def parse_facility(name: str) -> int:
    """The facility number of C{name}: C{LOG_LOCAL0}, C{local0}, C{user}, ... as oslo.log
    accepts them (any case, the C{LOG_} prefix optional).

    @raise ValueError: not a facility.
    """
    key = name.strip().upper()
    if not key.startswith("LOG_"):
        key = "LOG_" + key
    try:
        return SYSLOG_FACILITIES[key]
    except KeyError:
        raise ValueError(f"{name!r} is not a syslog facility") from None


def priority(event: dict) -> int:
    """The syslog severity of the event's level (info when it has none)."""
    return _PRIORITIES.get(event.get("log_level"), 6)


class Rendered:
    """One event's written forms, each made on first use.

    @param use_json: the forms are JSON objects (C{[DEFAULT] use_json}).
    @param to_json: the JSON formatter (L{metaproxy.ops.logs.format_json}).
    """

    def __init__(self, event: dict, use_json: bool, to_json: Callable[[dict], str]) -> None:
        self.event = event
        self._use_json = use_json
        self._to_json = to_json

    @cached_property
    def line(self) -> str:
        """A file's line, newline included: time, system and message (with the
        traceback of a failure), or one JSON object; empty when nothing to write."""
        event = self.event
        if self._use_json:
            return self._to_json(event)
        if event.get("log_failure") is not None:
            return eventAsText(event, includeTimestamp=True, includeSystem=True) + "\n"
        return formatEventAsClassicLogText(event) or ""

    @cached_property
    def message(self) -> str:
        """The same without the time (syslog and journald add their own) nor the final
        newline: C{[system] message}, or the JSON object."""
        if self._use_json:
            return self.line.rstrip("\n")
        return eventAsText(self.event, includeTimestamp=False, includeSystem=True)


class Destination(Protocol):
    #: what an operator reads in the start line and in check-config
    description: str

    def write(self, rendered: Rendered) -> None: ...

    def reopen(self) -> None: ...

    def close(self) -> None: ...


class FileDestination:
    """A file opened for appending, reopened after a rotation.

    @raise LogDestinationError: it cannot be opened (no such directory, no permission).
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.description = f"file {self.path}"
        try:
            self._file: IO[str] | None = open(self.path, "a", encoding="utf-8")
        except OSError as e:
            raise LogDestinationError(
                f"cannot open the log file {self.path}: {e.strerror}. Fix: create its "
                "directory and let metaproxy's user write there, or log elsewhere "
                "(log_file, log_dir, --log-file)"
            ) from None

    def write(self, rendered: Rendered) -> None:
        text = rendered.line
        if not text or self._file is None:
            return
        try:
            self._file.write(text)
            self._file.flush()
        except (OSError, ValueError):
            pass  # a full disk must not stop the agent

    def reopen(self) -> None:
        """Open the path again (logrotate moved the file); keep the old one on failure."""
        try:
            new = open(self.path, "a", encoding="utf-8")
        except OSError:
            return
        old, self._file = self._file, new
        if old is not None:
            old.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class StreamDestination:
    """Standard output or standard error (taken when built: twistd replaces sys.stdout
    and sys.stderr with its own log-writing files once logging starts)."""

    def __init__(self, stream: IO[str], name: str = "standard output") -> None:
        self._stream = stream
        self.description = name

    def write(self, rendered: Rendered) -> None:
        text = rendered.line
        if not text:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed stream must not stop the agent

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


class _DatagramDestination:
    """A connected, non-blocking Unix datagram socket to a log daemon."""

    what = "log daemon"
    fix = ""

    def __init__(
        self,
        path: str,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        fix: str | None = None,
    ) -> None:
        self.path = path
        if fix is not None:
            self.fix = fix
        self._monotonic = monotonic
        self._socket: socket.socket | None = None
        self._next_attempt = 0.0
        #: lines the daemon could not take (full, gone), since the start
        self.dropped = 0
        try:
            self._connect()
        except OSError as e:
            raise LogDestinationError(
                f"cannot reach the {self.what} at {path}: {e.strerror or e}. Fix: {self.fix}"
            ) from None

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self._socket = sock

    def _send(self, datagram: Callable[[bool], bytes]) -> None:
        """Send C{datagram(False)}; C{datagram(True)}, shorter, when the socket refuses
        the size. Reconnect once when the daemon went away; drop on anything else."""
        for attempt in range(2):
            if self._socket is None and not self._reconnect():
                break
            assert self._socket is not None
            try:
                self._socket.send(datagram(False))
                return
            except BlockingIOError:
                break  # the daemon is behind: never wait for it
            except OSError as e:
                if e.errno == errno.EMSGSIZE:
                    try:
                        self._socket.send(datagram(True))
                        return
                    except OSError:
                        break
                self._drop_socket()  # gone (restarted): connect again, once
                if attempt:
                    break
        self.dropped += 1

    def _reconnect(self) -> bool:
        now = self._monotonic()
        if now < self._next_attempt:
            return False
        self._next_attempt = now + _RECONNECT_EVERY
        try:
            self._connect()
        except OSError:
            return False
        return True

    def _drop_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def reopen(self) -> None:
        """Connect again (the daemon may have been restarted)."""
        self._drop_socket()
        self._next_attempt = 0.0
        self._reconnect()

    def close(self) -> None:
        self._drop_socket()


def _cut(text: str) -> str:
    return text if len(text) <= _TRUNCATE_AT else text[:_TRUNCATE_AT] + " [truncated]"


class SyslogDestination(_DatagramDestination):
    """RFC 3164-style lines to the local syslog daemon.

    @param facility: a number of L{SYSLOG_FACILITIES}.
    @param tag: the program name in each line.
    """

    what = "syslog daemon"
    fix = (
        "start the syslog daemon (rsyslog, or systemd-journald's syslog socket), or set "
        "use_syslog = false"
    )

    def __init__(
        self,
        path: str = SYSLOG_PATH,
        *,
        facility: int = SYSLOG_FACILITIES["LOG_USER"],
        tag: str = "metaproxy",
        monotonic: Callable[[], float] = time.monotonic,
        fix: str | None = None,
    ) -> None:
        self.facility = facility
        self.tag = tag
        self.description = f"syslog {path} (facility {_facility_name(facility)})"
        super().__init__(path, monotonic=monotonic, fix=fix)

    def write(self, rendered: Rendered) -> None:
        message = rendered.message
        if not message:
            return
        event = rendered.event
        stamp = time.localtime(event.get("log_time") or time.time())
        head = (
            f"<{self.facility * 8 + priority(event)}>{_MONTHS[stamp.tm_mon - 1]} "
            f"{stamp.tm_mday:2d} {stamp.tm_hour:02d}:{stamp.tm_min:02d}:{stamp.tm_sec:02d} "
            f"{self.tag}[{os.getpid()}]: "
        )
        self._send(lambda cut: (head + (_cut(message) if cut else message)).encode("utf-8"))


def _facility_name(number: int) -> str:
    return next((n for n, v in SYSLOG_FACILITIES.items() if v == number), str(number))


_PLAIN = (str, int, float, bool)
_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def journal_fields(rendered: Rendered, *, facility: int, identifier: str) -> list[tuple[str, str]]:
    """The journal fields of one event: the message, its priority, facility and
    identifier, the logger and level, the traceback of a failure, and the event's
    plain values under their names in upper case (names journald would refuse, and
    names already used, are left out)."""
    event = rendered.event
    level = event.get("log_level")
    fields = [
        ("MESSAGE", rendered.message),
        ("PRIORITY", str(priority(event))),
        ("SYSLOG_FACILITY", str(facility)),
        ("SYSLOG_IDENTIFIER", identifier),
        ("LOGGER_NAME", str(event.get("log_namespace", "-"))),
        ("LOGGER_LEVEL", getattr(level, "name", "info")),
    ]
    failure = event.get("log_failure")
    if failure is not None:
        try:
            fields.append(("EXCEPTION_INFO", failure.getTraceback()))
        except Exception:
            fields.append(("EXCEPTION_INFO", repr(failure)))
    used = {name for name, _ in fields}
    for name, value in event.items():
        if name.startswith(("log_", "_")) or not isinstance(value, _PLAIN):
            continue
        key = name.upper()
        if key in used or not _FIELD_NAME.fullmatch(key):
            continue
        used.add(key)
        fields.append((key, str(value)))
    return fields


def encode_journal(fields: list[tuple[str, str]]) -> bytes:
    """journald's native protocol: C{NAME=value\\n}, or for a value holding a newline
    C{NAME\\n}, its length as 64-bit little-endian, the value and C{\\n}."""
    out = bytearray()
    for name, value in fields:
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += name.encode("ascii") + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode("ascii") + b"=" + data + b"\n"
    return bytes(out)


class JournalDestination(_DatagramDestination):
    """Each line as one journald entry (native protocol), with structured fields."""

    what = "journald"
    fix = "run under systemd-journald, or set use_journal = false"

    def __init__(
        self,
        path: str = JOURNAL_PATH,
        *,
        facility: int = SYSLOG_FACILITIES["LOG_USER"],
        identifier: str = "metaproxy",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.facility = facility
        self.identifier = identifier
        self.description = f"journald {path}"
        super().__init__(path, monotonic=monotonic)

    def write(self, rendered: Rendered) -> None:
        if not rendered.message:
            return
        fields = journal_fields(rendered, facility=self.facility, identifier=self.identifier)

        def datagram(cut: bool) -> bytes:
            if not cut:
                return encode_journal(fields)
            return encode_journal([(n, _cut(v)) for n, v in fields])

        self._send(datagram)
