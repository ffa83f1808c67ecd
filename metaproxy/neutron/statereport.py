"""State reports to neutron-server, exactly as upstream's metadata agent sends them.

As upstream (docs/upstream.md, "State reports"): every C{[AGENT] report_interval} seconds
(0 disables them; the first at start-up), C{report_state} on topic C{q-reports-plugin}
with L{agent_state}. The first report carries C{start_flag: True} and is a C{call}; once
one report has succeeded, C{start_flag} is dropped and the reports are C{cast}s. A
failure is logged and the next interval tries again (still a call while the start has not
been reported); the first success after a failure logs "Successfully reported state after
a previous failure.". An C{AttributeError} means neutron-server does not support state
reports: that is logged once and reporting stops. A report still running when the next is
due delays it (reports never overlap).

L{StateReporter} is a Twisted service attached to the process that holds the sockets
(L{metaproxy.agent.service.AgentService}; with workers, the parent, once). The blocking send
(L{metaproxy.neutron.bus.NeutronRpc.report_state}) runs in the reactor's thread pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from metaproxy.config import Settings

__all__ = ["AGENT_BINARY", "AGENT_TYPE", "agent_state", "StateReporter"]

log = Logger("metaproxy.statereport")

#: neutron-lib's C{AGENT_PROCESS_METADATA} and C{AGENT_TYPE_METADATA}.
AGENT_BINARY = "neutron-metadata-agent"
AGENT_TYPE = "Metadata agent"


def agent_state(settings: Settings) -> dict[str, Any]:
    """The C{agent_state} of the first report (upstream's keys and values)."""
    return {
        "binary": AGENT_BINARY,
        "host": settings.host,
        "topic": "N/A",
        "configurations": {
            "metadata_proxy_socket": settings.metadata_proxy_socket,
            "nova_metadata_host": settings.nova_metadata_host,
            "nova_metadata_port": settings.nova_metadata_port,
            "log_agent_heartbeats": settings.log_agent_heartbeats,
        },
        "start_flag": True,
        "agent_type": AGENT_TYPE,
    }


class StateReporter(Service):
    """Sends the state reports while running (see the module docstring).

    @param reactor: the reactor (time; its thread pool runs the blocking sends).
    @param send: blocking C{send(agent_state, use_call)}, e.g.
        L{metaproxy.neutron.bus.NeutronRpc.report_state}.
    @param state: the first report's C{agent_state} (L{agent_state}).
    @param interval: seconds between reports (> 0).
    @param run_in_thread: C{f(*args) -> Deferred} running C{f} off the reactor; default
        the reactor's thread pool (tests pass a fake).
    @param close: called (in a thread) when the service stops, e.g. to close the transport.
    """

    def __init__(
        self,
        reactor: Any,
        send: Callable[[dict[str, Any], bool], Any],
        state: dict[str, Any],
        interval: float,
        *,
        run_in_thread: Callable[..., Deferred[Any]] | None = None,
        close: Callable[[], None] | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"report interval must be > 0, not {interval!r}")
        self._reactor = reactor
        self._send = send
        self.state = dict(state)
        self.interval = interval
        if run_in_thread is None:
            run_in_thread = lambda f, *a: deferToThreadPool(  # noqa: E731
                reactor, reactor.getThreadPool(), f, *a
            )
        self._run = run_in_thread
        self._close = close
        self._loop: LoopingCall | None = None
        self.failed = False
        self.sent = 0
        self.disabled = False

    def startService(self) -> None:
        super().startService()
        if self.disabled:
            return
        loop = self._loop = LoopingCall(self._report)
        loop.clock = self._reactor
        loop.start(self.interval, now=True).addErrback(
            lambda f: log.failure("State reports stopped", f)
        )

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._close is not None:
            close, self._close = self._close, None
            return self._run(close).addErrback(
                lambda f: log.warn(
                    "Closing the state report transport failed: {error}", error=f.getErrorMessage()
                )
            )
        return None

    def _report(self) -> Deferred[None]:
        use_call = bool(self.state.get("start_flag"))
        d = self._run(self._send, dict(self.state), use_call)
        d.addCallbacks(self._sent, self._failed)
        return d

    def _sent(self, _: Any) -> None:
        self.sent += 1
        if self.failed:
            self.failed = False
            log.info("Successfully reported state after a previous failure.")
        self.state.pop("start_flag", None)

    def _failed(self, failure: Failure) -> None:
        if failure.check(AttributeError):
            log.warn(
                "Neutron server does not support state report. State report for this "
                "agent will be disabled."
            )
            self.disabled = True
            if self._loop is not None and self._loop.running:
                self._loop.stop()
            return
        self.failed = True
        log.error(
            "Failed reporting state to neutron-server (topic q-reports-plugin): "
            "{error}; trying again in {interval:g} s",
            error=f"{type(failure.value).__name__}: {failure.value}",
            interval=self.interval,
        )
