# -*- test-case-name: tests.unit.ops.test_sdnotify -*-
"""systemd's readiness protocol (C{Type=notify}): READY, STOPPING, STATUS and WATCHDOG.

systemd starts the service with C{NOTIFY_SOCKET} set to a Unix datagram socket (a path,
or an abstract name written with a leading C{@}). One datagram of C{KEY=value} lines is a
notification: C{READY=1} once the service serves, C{STOPPING=1} when it begins to stop,
C{STATUS=...} for C{systemctl status}, C{WATCHDOG=1} as a keep-alive when the unit sets
C{WatchdogSec=} (systemd then passes C{WATCHDOG_USEC}). See sd_notify(3).

Written here rather than taken from a library: the protocol is one C{sendto} of a few
bytes; C{systemd-python} needs libsystemd's headers and a compiler to install, and the
pure-Python C{sdnotify} package is unmaintained and swallows every error. Sending never
blocks and never raises: a service without systemd (C{NOTIFY_SOCKET} unset) or whose
manager has gone just does not notify.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier", "watchdog_interval"]


class Notifier:
    """Sends notifications to the socket systemd named, if any.

    @ivar address: the socket's address (C{None} outside systemd), as C{sendto} takes it.
    @ivar sent: how many notifications were sent (for the tests and for health output).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        path = environ.get("NOTIFY_SOCKET", "")
        if path.startswith("@"):
            self.address: str | None = "\0" + path[1:]
        elif path.startswith("/"):
            self.address = path
        else:
            self.address = None  # unset, or a form (vsock:) this service does not use
        self.sent = 0
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """Whether systemd asked for notifications."""
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send one notification, e.g. C{notify(READY=1, STATUS="serving")}.

        @return: whether it was handed to the kernel.
        """
        if self.address is None or not fields:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
                self._socket.setblocking(False)
            self._socket.sendto(message, self.address)
        except OSError:
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> bool:
        """The service serves: C{READY=1} with a status line."""
        return self.notify(READY=1, STATUS=status)

    def stopping(self, status: str) -> bool:
        """The service begins to stop (draining): C{STOPPING=1} with a status line."""
        return self.notify(STOPPING=1, STATUS=status)

    def status(self, status: str) -> bool:
        """A new status line for C{systemctl status}."""
        return self.notify(STATUS=status)

    def watchdog(self) -> bool:
        """The keep-alive of C{WatchdogSec=}."""
        return self.notify(WATCHDOG=1)

    def close(self) -> None:
        """Release the socket (the next notification opens another)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between keep-alives when systemd's watchdog is on for this process: half
    of C{WATCHDOG_USEC}, as sd_watchdog_enabled(3) advises; C{None} when it is off (unset,
    unparsable, or meant for another process through C{WATCHDOG_PID})."""
    environ = os.environ if environ is None else environ
    pid = environ.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None
