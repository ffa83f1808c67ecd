"""The channel between the agent and one worker: a Unix socketpair, the worker's fd 3.

Descriptors reach a worker two ways. At spawn, every socket that exists then is
inherited (C{childFDs}, numbers from 4 up; C{--inherited N} says how many), so a restart
with hundreds of namespaces needs no descriptor in flight. A socket added later is sent
over the worker's channel with C{SCM_RIGHTS}. The channel carries one ASCII line per
command, from the agent to the worker only (the worker's answers are its log lines):

    add <name> <fd>   serve the listening socket inherited as descriptor <fd>
    add <name>        serve the listening socket that comes with this line (SCM_RIGHTS)
    remove <name>     stop serving <name>: close this worker's copy, leave the path alone

C{<name>} is C{shared}, a namespace's name (C{qrouter-<id>}, ...: its Unix socket), or
C{tcp/<namespace name>/<address>:<port>} for a TCP socket inside that namespace
(L{metaproxy.http.listeners.TCPBinding}; an IPv6 address in brackets, with its
interface after C{%} when link-local), whose callers are the connections' peers. To
remove a socket the agent unlinks its path (a Unix socket) and closes its own copy
first, then sends C{remove} without
waiting for any answer: once the path is gone nothing new can connect, so the workers
only have to let go of their copies (a worker that has not read the line yet still answers
connections already queued). End of file on the channel means the agent is gone: the
worker stops.

L{Channel} is the agent's end (it sends), L{ChannelProtocol} the worker's (it parses).
"""

from __future__ import annotations

import collections
import errno
import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IFileDescriptorReceiver, IWriteDescriptor
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from metaproxy.http.listeners import ListenerKey, TCPBinding
from metaproxy.namespace import InvalidNamespace, Namespace

__all__ = [
    "SHARED",
    "CHANNEL_FD",
    "FIRST_SOCKET_FD",
    "MAX_LINE",
    "MAX_PENDING",
    "ProtocolError",
    "socket_name",
    "parse_name",
    "parse_command",
    "Channel",
    "ChannelProtocol",
]

log = Logger("metaproxy.workers")

#: the shared socket's name on the channel
SHARED = "shared"
#: the worker's end of its channel
CHANNEL_FD = 3
#: sockets inherited at spawn are numbered from here
FIRST_SOCKET_FD = 4
#: longest channel line (a namespace name is at most 72 characters; a TCP socket's name
#: at most 150)
MAX_LINE = 256
#: lines waiting for a worker that does not read its channel, before it is killed
MAX_PENDING = 1024


# ---- the line protocol --------------------------------------------------------------


class ProtocolError(ValueError):
    """A channel line that does not follow the protocol."""


def socket_name(key: ListenerKey) -> str:
    """A socket's name on the channel: C{shared}, the namespace's name, or a TCP
    socket's C{tcp/<namespace name>/<address>}."""
    if key is None:
        return SHARED
    if isinstance(key, Namespace):
        return key.name
    return str(key)


def parse_name(name: str) -> ListenerKey:
    """The inverse of L{socket_name}.

    @raise ProtocolError: not C{shared}, a valid namespace name nor a TCP socket's name.
    """
    if name == SHARED:
        return None
    try:
        if name.startswith("tcp/"):
            return TCPBinding.parse(name)
        return Namespace.parse(name)
    except (InvalidNamespace, ValueError) as e:
        raise ProtocolError(str(e)) from None


def parse_command(line: bytes) -> tuple[str, ListenerKey, int | None]:
    """C{("add", namespace, fd or None)} or C{("remove", namespace, None)}.

    @raise ProtocolError: anything else.
    """
    try:
        words = line.decode("ascii").split()
    except UnicodeDecodeError:
        raise ProtocolError("not ASCII") from None
    if len(words) == 2 and words[0] in ("add", "remove"):
        return words[0], parse_name(words[1]), None
    if len(words) == 3 and words[0] == "add" and words[2].isdigit():
        return "add", parse_name(words[1]), int(words[2])
    raise ProtocolError("expected 'add <name> [<fd>]' or 'remove <name>'")


# ---- the agent's end ----------------------------------------------------------------


@implementer(IWriteDescriptor)
class Channel:
    """The agent's end of one worker's channel: lines sent in order, each with at most
    one descriptor, without ever blocking the reactor.

    A descriptor is copied when its line is queued, so the caller may close its own at
    once; the copy is closed when the kernel has taken it. When the worker does not read
    (its socket buffer is full) lines wait for the socket to be writable; when the
    kernel refuses more descriptors in flight (ETOOMANYREFS) they are retried shortly.
    Any other error, or more than C{max_pending} lines waiting, means the worker is gone
    or stuck: the channel closes and calls C{on_broken(reason)}; its supervisor kills the
    worker, which is restarted with every socket.
    """

    def __init__(
        self,
        reactor: Any,
        sock: socket.socket,
        on_broken: Callable[[str], None] = lambda reason: None,
        *,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._reactor = reactor
        self._max_pending = max_pending
        self._socket: socket.socket | None = sock
        self._on_broken = on_broken
        sock.setblocking(False)
        self._queue: collections.deque[tuple[bytes, int | None]] = collections.deque()
        self._writing = False
        self._retry = None

    @property
    def closed(self) -> bool:
        return self._socket is None

    @property
    def pending(self) -> int:
        """Lines queued and not yet sent."""
        return len(self._queue)

    def send(self, line: str, fd: int | None = None) -> None:
        if self._socket is None:
            return
        if len(self._queue) >= self._max_pending:
            self._broken(f"{len(self._queue)} lines waiting: it does not read them")
            return
        self._queue.append((line.encode("ascii") + b"\n", os.dup(fd) if fd is not None else None))
        if not self._writing and self._retry is None:
            self._flush()

    def _flush(self) -> None:
        self._retry = None
        while self._queue and self._socket is not None:
            data, fd = self._queue[0]
            try:
                if fd is None:
                    sent = self._socket.send(data, socket.MSG_NOSIGNAL)
                else:
                    sent = socket.send_fds(self._socket, [data], [fd], socket.MSG_NOSIGNAL)
            except BlockingIOError:
                self._wait_writable(True)
                return
            except OSError as e:
                if e.errno == errno.ETOOMANYREFS:
                    self._wait_writable(False)
                    self._retry = self._reactor.callLater(0.1, self._flush)
                    return
                self._broken(e.strerror or str(e))
                return
            if fd is not None:
                os.close(fd)  # the kernel holds its own reference now
            if sent < len(data):
                self._queue[0] = (data[sent:], None)
            else:
                self._queue.popleft()
        self._wait_writable(False)

    def _wait_writable(self, wait: bool) -> None:
        if wait and not self._writing:
            self._reactor.addWriter(self)
        elif not wait and self._writing:
            self._reactor.removeWriter(self)
        self._writing = wait

    # IWriteDescriptor, while lines wait for room
    def fileno(self) -> int:
        return self._socket.fileno() if self._socket is not None else -1

    def doWrite(self) -> None:
        self._flush()

    def connectionLost(self, reason: Failure) -> None:
        self._broken(reason.getErrorMessage())

    def logPrefix(self) -> str:
        return "metaproxy-worker-channel"

    def _broken(self, reason: str) -> None:
        if self._socket is None:
            return
        self.close()
        self._on_broken(reason)

    def close(self) -> None:
        """Close the channel (the worker sees end of file) and drop what is queued."""
        self._wait_writable(False)
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        for _, fd in self._queue:
            if fd is not None:
                os.close(fd)
        self._queue.clear()
        if self._socket is not None:
            self._socket.close()
            self._socket = None


# ---- the worker's end ---------------------------------------------------------------


@implementer(IFileDescriptorReceiver)
class ChannelProtocol(LineOnlyReceiver):
    """The worker's end of its channel: parses the lines and pairs each C{add <name>}
    with the next descriptor received (a descriptor arrives no later than the first byte
    of the line it was sent with)."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def __init__(
        self,
        on_add: Callable[[ListenerKey, int, bool], None],
        on_remove: Callable[[ListenerKey], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._on_add = on_add
        self._on_remove = on_remove
        self._on_lost = on_lost
        self._fds: collections.deque[int] = collections.deque()

    def fileDescriptorReceived(self, descriptor: int) -> None:
        self._fds.append(descriptor)

    def lineReceived(self, line: bytes) -> None:
        try:
            command, namespace, fd = parse_command(line)
        except ProtocolError as e:
            log.error("Ignoring {line!r} from the agent: {error}", line=line, error=str(e))
            return
        if command == "remove":
            self._on_remove(namespace)
            return
        if fd is not None:
            self._on_add(namespace, fd, True)
            return
        if not self._fds:
            log.error("Ignoring {line!r} from the agent: no descriptor came with it", line=line)
            return
        self._on_add(namespace, self._fds.popleft(), False)

    def lineLengthExceeded(self, line: bytes) -> None:
        log.error("Ignoring a channel line of {length} bytes", length=len(line))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        while self._fds:
            os.close(self._fds.popleft())
        self._on_lost()
