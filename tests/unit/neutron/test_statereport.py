"""metaproxy.neutron.statereport: upstream's agent_state, call then casts, failures and recovery
(docs/upstream.md, "State reports"), on a Clock with a fake send."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from metaproxy.agent.builders import state_reporter
from metaproxy.config import default_settings
from metaproxy.neutron.statereport import StateReporter, agent_state


def sync(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    try:
        return succeed(f(*args))
    except Exception:
        return fail()


class Send:
    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, Any], bool]] = []
        self.error: Exception | None = None

    def __call__(self, state: dict[str, Any], use_call: bool) -> str:
        self.sent.append((state, use_call))
        if self.error is not None:
            raise self.error
        return "alive"


def lines_of(events: Sequence[dict[str, Any]]) -> list[str]:
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in events]


def test_agent_state_is_upstreams() -> None:
    s = default_settings(host="node-1", metadata_proxy_socket="/run/m", nova_metadata_port=8775)
    assert agent_state(s) == {
        "binary": "neutron-metadata-agent",
        "host": "node-1",
        "topic": "N/A",
        "configurations": {
            "metadata_proxy_socket": "/run/m",
            "nova_metadata_host": "127.0.0.1",
            "nova_metadata_port": 8775,
            "log_agent_heartbeats": False,
        },
        "start_flag": True,
        "agent_type": "Metadata agent",
    }


def test_first_report_is_a_call_with_start_flag_then_casts_every_interval() -> None:
    clock, send = Clock(), Send()
    reporter = StateReporter(clock, send, agent_state(default_settings()), 30, run_in_thread=sync)
    reporter.startService()
    assert len(send.sent) == 1  # at start, as FixedIntervalLoopingCall
    state, use_call = send.sent[0]
    assert use_call is True and state["start_flag"] is True
    clock.advance(29.9)
    assert len(send.sent) == 1
    clock.advance(0.1)
    clock.advance(30)
    assert [use_call for _, use_call in send.sent] == [True, False, False]
    assert all("start_flag" not in state for state, _ in send.sent[1:])
    reporter.stopService()
    clock.advance(300)
    assert len(send.sent) == 3


def test_failure_is_logged_retried_as_a_call_and_recovery_logged(
    logged: Sequence[dict[str, Any]],
) -> None:
    clock, send = Clock(), Send()
    send.error = ConnectionError("bus down")
    reporter = StateReporter(clock, send, agent_state(default_settings()), 10, run_in_thread=sync)
    reporter.startService()
    clock.advance(10)
    send.error = None
    clock.advance(10)
    clock.advance(10)
    reporter.stopService()
    # the start was never reported while failing: still calls with start_flag
    assert [use_call for _, use_call in send.sent] == [True, True, True, False]
    lines = lines_of(logged)
    assert sum("Failed reporting state" in line and "bus down" in line for line in lines) == 2
    assert (
        sum(line == "Successfully reported state after a previous failure." for line in lines) == 1
    )


def test_attribute_error_disables_reports(logged: Sequence[dict[str, Any]]) -> None:
    clock, send = Clock(), Send()
    send.error = AttributeError("report_state")
    reporter = StateReporter(clock, send, agent_state(default_settings()), 10, run_in_thread=sync)
    reporter.startService()
    clock.advance(100)
    assert len(send.sent) == 1 and reporter.disabled
    assert any("does not support state report" in line for line in lines_of(logged))


def test_no_reporter_without_transport_url_or_with_interval_zero() -> None:
    assert state_reporter(Clock(), default_settings()) is None
    assert (
        state_reporter(
            Clock(), default_settings(transport_url="rabbit://u:p@127.0.0.1:1/", report_interval=0)
        )
        is None
    )
    reporter = state_reporter(
        Clock(), default_settings(transport_url="rabbit://u:p@127.0.0.1:1/", report_interval=15)
    )
    assert isinstance(reporter, StateReporter) and reporter.interval == 15
