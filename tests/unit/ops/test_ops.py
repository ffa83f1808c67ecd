"""Operations pieces as plain objects: logs (level, JSON, throttle), drain, health,
the /metrics and /healthz resources, metrics_listen parsing."""

from __future__ import annotations

import io
import json

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.web.test.requesthelper import DummyRequest

from metaproxy.agent.drain import Drain
from metaproxy.config import default_settings, parse_listen
from metaproxy.nova.client import NovaUnreachable
from metaproxy.ops.health import NovaProbe, health, nova_check
from metaproxy.ops.logs import LevelFilter, LogSetup, ThrottleFilter, format_json
from metaproxy.ops.throttle import LogThrottle
from metaproxy.ops.web import OpsResource
from metaproxy.testing import FakeNova


def _event(
    ns="metaproxy.pipeline", level=LogLevel.warn, fmt="No port found for {address}", **fields
):
    return dict(log_namespace=ns, log_level=level, log_format=fmt, log_time=0.0, **fields)


# -- logs ------------------------------------------------------------------------------


def test_level_filter_follows_debug():
    levels = LevelFilter(debug=False)
    assert not levels(_event(level=LogLevel.debug))
    assert levels(_event(level=LogLevel.info))
    levels.debug = True
    assert levels(_event(level=LogLevel.debug))


def test_throttle_filter_leaves_out_past_the_limit_and_says_how_many():
    clock = Clock()
    summaries = []
    throttle = ThrottleFilter(clock, summaries.append, limit=3, window=10)
    passed = [throttle(_event(address=f"10.0.0.{i}")) for i in range(10)]
    assert passed == [True] * 3 + [False] * 7
    # another kind of line, and other loggers, are not limited by it
    assert throttle(_event(fmt="Lookup failed for {address}"))
    assert all(throttle(_event(ns="metaproxy.service")) for _ in range(10))
    assert summaries == []
    clock.advance(10)
    assert len(summaries) == 1
    text = summaries[0]["log_format"].format(**summaries[0])
    assert "7 more line(s) like this were left out in 10 s" in text
    assert "No port found for {address}" in text
    assert throttle(_event())  # a new window
    clock.advance(10)
    assert len(summaries) == 1  # nothing left out: no summary


def test_log_rate_limit_zero_means_no_limit():
    throttle = ThrottleFilter(Clock(), lambda e: None, limit=0)
    assert all(throttle(_event()) for _ in range(1000))


def test_log_throttle_passes_its_limit_per_window_and_hands_over_the_count():
    """The one throttle of log lines: `limit` lines per window, the rest counted; the
    count goes with the next line written, or to whoever takes it."""
    clock = Clock()
    throttle = LogThrottle(clock, 10, limit=2)
    assert [throttle.allow() for _ in range(5)] == [0, 0, None, None, None]
    assert throttle.window_end == 10
    assert throttle.take_left_out() == 3 and throttle.take_left_out() == 0
    assert throttle.allow() is None
    clock.advance(10)
    assert throttle.allow() == 1  # left out after the count was taken
    assert throttle.allow() == 0 and throttle.allow() is None


def test_throttle_filter_new_limit_applies_to_the_open_window():
    """SIGHUP changes log_rate_limit: a kind already limited in this window gets the
    new limit at once."""
    throttle = ThrottleFilter(Clock(), lambda e: None, limit=1)
    assert [throttle(_event()) for _ in range(2)] == [True, False]
    throttle.limit = 3
    assert [throttle(_event()) for _ in range(3)] == [True, True, False]


def test_json_format_has_message_and_plain_fields_only():
    line = format_json(
        _event(address="10.0.0.5", namespace="qrouter-r1", status=404, obj=object(), raw=b"bytes")
    )
    record = json.loads(line)
    assert line.endswith("\n") and line.count("\n") == 1
    assert record["message"] == "No port found for 10.0.0.5"
    assert record["level"] == "warn" and record["logger"] == "metaproxy.pipeline"
    assert record["namespace"] == "qrouter-r1" and record["status"] == 404
    assert "obj" not in record and "raw" not in record
    assert record["time"].startswith("1970-01-01T00:00:00")


def test_log_setup_writes_text_or_json_and_applies_reloads(tmp_path):
    path = tmp_path / "agent.log"
    setup = LogSetup(Clock(), path=str(path), rate_limit=1)
    setup(_event(fmt="first {n}", n=1))
    setup(_event(fmt="first {n}", n=2))  # over the limit: left out
    setup(_event(ns="metaproxy.service", level=LogLevel.debug, fmt="hidden"))
    setup.apply(default_settings(debug=True, use_json=True, log_rate_limit=5))
    setup(_event(ns="metaproxy.service", level=LogLevel.debug, fmt="shown"))
    path.rename(tmp_path / "agent.log.1")  # logrotate
    setup.reopen()
    setup(_event(ns="metaproxy.service", level=LogLevel.info, fmt="after rotation"))
    setup.close()
    old = (tmp_path / "agent.log.1").read_text().splitlines()
    assert "first 1" in old[0] and "[metaproxy.pipeline#warn]" in old[0]
    assert len(old) == 2 and json.loads(old[1])["message"] == "shown"
    new = [json.loads(line) for line in path.read_text().splitlines()]
    assert new[0]["message"] == "after rotation"
    # closing says what the limit left out
    assert new[1]["message"].startswith("1 more line(s) like this were left out")


def test_log_setup_from_twistd_options(tmp_path):
    settings = default_settings()
    assert LogSetup.for_twistd(Clock(), None, settings) is None
    # twistd's --syslog is a syslog destination now (tests/unit/ops/test_log_destinations.py)
    stdout = LogSetup.for_twistd(Clock(), {"logfile": "-", "nodaemon": True}, settings)
    assert stdout is not None and stdout.description == "standard output"
    to_file = LogSetup.for_twistd(Clock(), {"logfile": str(tmp_path / "x.log")}, settings)
    assert to_file is not None and to_file.description == f"file {tmp_path / 'x.log'}"
    to_file.close()


def test_log_setup_survives_a_closed_stream():
    stream = io.StringIO()
    setup = LogSetup(Clock(), stream=stream)
    stream.close()
    setup(_event(ns="metaproxy.service", level=LogLevel.info, fmt="x"))  # no exception


# -- drain -----------------------------------------------------------------------------


def test_drain_waits_for_requests_then_stops():
    clock = Clock()
    state = {"open": 2, "stopped": 0, "closed": 0}
    drain = Drain(
        clock,
        stop_listening=lambda: state.__setitem__("closed", 1),
        in_flight=lambda: state["open"],
        timeout=5,
        stop=lambda: state.__setitem__("stopped", state["stopped"] + 1),
    )
    results = []
    drain.start().addCallback(results.append)
    assert state["closed"] == 1 and state["stopped"] == 0
    clock.advance(1)
    state["open"] = 0
    clock.advance(0.1)
    assert results == [True] and state["stopped"] == 1
    drain.start()  # a second SIGTERM changes nothing
    assert state["stopped"] == 1


def test_drain_stops_at_the_deadline():
    clock = Clock()
    stopped = []
    drain = Drain(
        clock,
        stop_listening=lambda: succeed(None),
        in_flight=lambda: 1,
        timeout=2,
        stop=lambda: stopped.append(True),
    )
    results = []
    drain.start().addCallback(results.append)
    clock.advance(1.9)
    assert not stopped
    for _ in range(10):
        clock.advance(0.05)
    assert results == [False] and stopped == [True]


# -- health ----------------------------------------------------------------------------


class _Answer:
    def __init__(self, status):
        self.status = status


def test_nova_probe_records_outcomes_and_repeats():
    clock = Clock()
    answers = [
        succeed(_Answer(200)),
        fail(NovaUnreachable("Nova at x refused the connection")),
        succeed(_Answer(503)),
    ]
    nova = FakeNova(*answers)
    probe = NovaProbe(clock, nova.forward, interval=10)
    assert nova_check(probe) == (False, "not probed yet")
    probe.start()
    assert nova.sent == [(b"GET", b"/", (), b"")]
    assert nova_check(probe) == (True, "answered 200")
    clock.advance(10)
    assert nova_check(probe) == (False, "Nova at x refused the connection")
    clock.advance(10)
    assert nova_check(probe) == (False, "answered 503")
    probe.stop()
    clock.advance(30)
    assert len(nova.sent) == 3


def test_nova_probe_stop_cancels_a_probe_in_flight():
    pending = Deferred()
    probe = NovaProbe(Clock(), lambda *a: pending, interval=1)
    probe.start()
    probe.stop()
    assert pending.called and probe.ok is None


def test_health_answer():
    status, body = health({"nova": (True, "answered 200"), "lookups": (True, "table")})
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, body = health({"nova": (False, "refused"), "lookups": (True, "table")})
    answer = json.loads(body)
    assert status == 503 and answer["status"] == "unhealthy"
    assert answer["checks"]["nova"] == {"ok": False, "detail": "refused"}


def _render(resource, path: bytes) -> tuple[int, bytes]:
    request = DummyRequest([path])
    child = resource.getChildWithDefault(path, request)
    body = child.render(request)
    return request.responseCode or 200, body


def test_ops_resource_serves_metrics_and_health():
    from metaproxy.ops.metrics import Metrics, RequestStats

    stats = RequestStats()
    stats.record("shared", b"200", 0.01)
    root = OpsResource(Metrics(stats).snapshot, lambda: {"nova": (False, "refused")})
    status, body = _render(root, b"metrics")
    assert status == 200 and b'metaproxy_requests_total{socket="shared",status="200"} 1.0' in body
    status, body = _render(root, b"healthz")
    assert status == 503 and json.loads(body)["checks"]["nova"]["detail"] == "refused"


# -- metrics_listen --------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry, parsed",
    [
        ("9180", ("tcp", "127.0.0.1", 9180)),
        ("127.0.0.1:9180", ("tcp", "127.0.0.1", 9180)),
        ("[::1]:9180", ("tcp", "::1", 9180)),
        ("unix:/run/metaproxy/metrics.sock", ("unix", "/run/metaproxy/metrics.sock", 0)),
    ],
)
def test_parse_listen(entry, parsed):
    assert parse_listen(entry) == parsed


@pytest.mark.parametrize(
    "entry, why",
    [
        ("localhost:9180", "not an IP address"),
        ("127.0.0.1:http", "port must be a number"),
        ("0", "port must be a number"),
        ("unix:relative.sock", "absolute"),
        ("unix:/" + "d" * 120, "at most"),
    ],
)
def test_parse_listen_refuses(entry, why):
    with pytest.raises(ValueError, match=why):
        parse_listen(entry)
