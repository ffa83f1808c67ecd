"""The JSON-RPC 1.0 protocol OVSDB speaks (RFC 7047 section 4), as a Twisted protocol.

- L{request} sends C{{"method", "params", "id"}} and returns a Deferred fired with the
  result, failed with L{RpcError} (the server's error), L{RpcTimeout} (no answer within
  C{request_timeout}) or C{ConnectionLost}.
- An C{echo} request from the server is answered at once (its params as the result).
- Notifications (C{"id": null}) go to C{on_notification(method, params)}.
- The inactivity probe (OVSDB's C{probe_interval}): when nothing has been received for
  C{probe_interval} seconds an C{echo} is sent; when still nothing has come after
  another C{probe_interval}, the connection is closed (the owner reconnects).
- Bytes that are not JSON close the connection, with one log line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from metaproxy.ovsdb.framing import FramingError, JsonSplitter

__all__ = ["RpcError", "RpcTimeout", "JsonRpcProtocol"]

log = Logger("metaproxy.ovsdb")


class RpcError(Exception):
    """The server answered a request with an error; C{error} is its value."""

    def __init__(self, method: str, error: Any) -> None:
        self.method = method
        self.error = error
        super().__init__(f"{method}: {error}")


class RpcTimeout(Exception):
    """No answer to a request in time."""


class JsonRpcProtocol(Protocol):
    """One OVSDB connection.

    @param clock: C{IReactorTime}.
    @param request_timeout: seconds a request may wait for its answer.
    @param probe_interval: seconds of silence before an echo; 0 disables the probe.
    @param on_notification: C{(method, params)} for every notification.
    @param max_message_bytes: the largest message accepted.
    """

    def __init__(
        self,
        clock: Any,
        request_timeout: float,
        probe_interval: float,
        on_notification: Callable[[str, Any], None],
        max_message_bytes: int = 1 << 30,
    ) -> None:
        self._clock = clock
        self._request_timeout = request_timeout
        self._probe_interval = probe_interval
        self._on_notification = on_notification
        self._splitter = JsonSplitter(max_message_bytes)
        self._next_id = 0
        self._pending: dict[int, tuple[str, Deferred[Any], Any]] = {}
        self._last_received = 0.0
        self._probe_call: Any = None
        self._probe_sent = False
        self.connected_to = "?"
        self.closed = False
        self.on_lost: Callable[[Failure], None] = lambda reason: None

    # connection

    def connectionMade(self) -> None:
        self._last_received = self._clock.seconds()
        peer = self.transport.getPeer()
        self.connected_to = str(
            getattr(peer, "name", None)
            or f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
        )
        if self._probe_interval > 0:
            self._probe_call = self._clock.callLater(self._probe_interval, self._probe)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closed = True
        if self._probe_call is not None and self._probe_call.active():
            self._probe_call.cancel()
        self._probe_call = None
        pending, self._pending = self._pending, {}
        for method, d, timer in pending.values():
            if timer.active():
                timer.cancel()
            d.errback(ConnectionLost(f"connection closed before {method} was answered"))
        self.on_lost(reason)

    def close(self, why: str) -> None:
        """Close the connection (the owner reconnects); C{why} is logged."""
        if not self.closed and self.transport is not None:
            log.warn("OVSDB connection to {peer} closed: {why}", peer=self.connected_to, why=why)
            self.transport.abortConnection()

    # receiving

    def dataReceived(self, data: bytes) -> None:
        self._last_received = self._clock.seconds()
        self._probe_sent = False
        try:
            messages = self._splitter.feed(data)
        except FramingError as e:
            self.close(f"not an OVSDB JSON-RPC stream: {e}")
            return
        for raw in messages:
            if self.closed:
                return
            try:
                message = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as e:
                self.close(f"invalid JSON from the server: {e}")
                return
            if not isinstance(message, dict):
                self.close("a JSON-RPC message that is not an object")
                return
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method is not None:
            msg_id = message.get("id")
            if method == "echo" and msg_id is not None:
                self._send({"id": msg_id, "result": message.get("params", []), "error": None})
            elif msg_id is None:
                try:
                    self._on_notification(method, message.get("params"))
                except Exception as e:
                    self.close(
                        f"notification {method} could not be applied "
                        f"({type(e).__name__}: {e}); resynchronising"
                    )
            else:
                self._send({"id": msg_id, "result": None, "error": f"unknown method {method}"})
            return
        msg_id = message.get("id")
        entry = self._pending.pop(msg_id, None) if isinstance(msg_id, int) else None
        if entry is None:
            return  # an answer to a request given up on (timed out)
        name, d, timer = entry
        if timer.active():
            timer.cancel()
        error = message.get("error")
        if error is not None:
            d.errback(RpcError(name, error))
        else:
            d.callback(message.get("result"))

    # sending

    def _send(self, message: dict[str, Any]) -> None:
        self.transport.write(json.dumps(message, separators=(",", ":")).encode("utf-8"))

    def request(self, method: str, params: list[Any]) -> Deferred[Any]:
        """Send a request; the Deferred fires with its result (see the module docstring)."""
        if self.closed:
            raise ConnectionLost(f"connection closed; {method} not sent")
        self._next_id += 1
        msg_id = self._next_id
        d: Deferred[Any] = Deferred()
        timer = self._clock.callLater(self._request_timeout, self._timed_out, msg_id)
        self._pending[msg_id] = (method, d, timer)
        self._send({"method": method, "params": params, "id": msg_id})
        return d

    def _timed_out(self, msg_id: int) -> None:
        entry = self._pending.pop(msg_id, None)
        if entry is not None:
            entry[1].errback(
                RpcTimeout(
                    f"{entry[0]} not answered by {self.connected_to} within "
                    f"{self._request_timeout:g} s"
                )
            )
            self.close(f"{entry[0]} not answered within {self._request_timeout:g} s")

    def _probe(self) -> None:
        self._probe_call = None
        if self.closed:
            return
        idle = self._clock.seconds() - self._last_received
        if idle >= self._probe_interval:
            if self._probe_sent:
                self.close(
                    f"nothing received for {idle:g} s (probe interval {self._probe_interval:g} s)"
                )
                return
            self._probe_sent = True
            self._send({"method": "echo", "params": [], "id": "echo"})
            wait = self._probe_interval
        else:
            wait = self._probe_interval - idle
        self._probe_call = self._clock.callLater(wait, self._probe)
