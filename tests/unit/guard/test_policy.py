"""The policy step in the pipeline: rate limiting (429) and the guest X-Forwarded-For
rule (off/log/enforce), with counters and throttled log lines."""

import pytest
from twisted.internet.task import Clock
from twisted.logger import formatEvent

from metaproxy.guard.policy import RequestPolicy
from metaproxy.guard.ratelimit import RateLimiter, Window
from metaproxy.ops.throttle import LogThrottle
from tests.unit.test_pipeline import get, make, run

SECRET = b"s3cr3t-never-logged"


def warnings(events, word):
    return [formatEvent(e) for e in events if word in formatEvent(e)]


def pipeline_with(clock, **kw):
    policy = RequestPolicy(clock, **kw)
    pipeline, nova, backend = make(policy=policy)
    return pipeline, nova, backend, policy


def boot(*xff):
    return get(
        b"/openstack", *[(b"X-Forwarded-For", x) for x in xff], (b"X-Neutron-Router-ID", b"r1")
    )


def test_rate_limited_source_gets_429_with_retry_after_and_no_lookup(logged):
    clock = Clock()
    limiter = RateLimiter(clock, Window(60, 3), Window(10, 3))
    pipeline, nova, backend, policy = pipeline_with(clock, limiter=limiter)
    answers = [run(pipeline, boot(b"10.0.0.5")) for _ in range(5)]
    assert [a.status for a in answers] == [200, 200, 200, 429, 429]
    assert int(dict((k.lower(), v) for k, v in answers[3].headers)["retry-after"]) >= 1
    assert len(nova.sent) == 3
    assert limiter.rejected == 2
    # another instance behind the same router is not affected
    assert run(pipeline, boot(b"10.0.0.6")).status != 429
    lines = warnings(logged, "Rate limit")
    assert len(lines) == 1 and "10.0.0.5" in lines[0] and "qrouter-r1" in lines[0]
    assert SECRET.decode() not in "\n".join(formatEvent(e) for e in logged)


def test_rate_limit_log_lines_are_throttled(logged):
    clock = Clock()
    limiter = RateLimiter(clock, Window(60, 1), Window(60, 1))
    pipeline, *_ = pipeline_with(clock, limiter=limiter, log_interval=30)
    for _ in range(1000):
        run(pipeline, boot(b"10.0.0.5"))
    assert len(warnings(logged, "Rate limit")) == 1
    clock.advance(31)
    run(pipeline, boot(b"10.0.0.5"))
    lines = warnings(logged, "Rate limit")
    assert len(lines) == 2 and "998 more" in lines[1]


def test_single_forwarded_for_is_the_normal_case(logged):
    pipeline, nova, _, policy = pipeline_with(Clock(), forwarded_for="enforce")
    assert run(pipeline, boot(b"10.0.0.5")).status == 200
    assert policy.counters.xff_seen == 0 and not warnings(logged, "X-Forwarded-For")


@pytest.mark.parametrize("xff", [(b"1.2.3.4", b"10.0.0.5"), (b"1.2.3.4, 10.0.0.5",)])
def test_guest_forwarded_for_log_mode_serves_counts_and_logs(xff, logged):
    pipeline, nova, _, policy = pipeline_with(Clock())
    answer = run(pipeline, boot(*xff))
    assert answer.status == 200
    # the caller is haproxy's last value: Nova is told about 10.0.0.5, not the guest's
    assert nova.sent[0][2][0] == (b"X-Forwarded-For", b"10.0.0.5")
    assert policy.counters.xff_seen == 1 and policy.counters.xff_refused == 0
    lines = warnings(logged, "X-Forwarded-For")
    assert len(lines) == 1 and "1.2.3.4" in lines[0] and "served it anyway" in lines[0]


def test_guest_forwarded_for_enforce_is_403_without_lookup_or_nova(logged):
    pipeline, nova, backend, policy = pipeline_with(Clock(), forwarded_for="enforce")
    answer = run(pipeline, boot(b"169.254.169.254", b"10.0.0.5"))
    assert answer.status == 403 and b"proxy inside the instance" in answer.body
    assert nova.sent == [] and backend.calls == 0
    assert policy.counters.xff_refused == 1
    assert "answered 403" in warnings(logged, "X-Forwarded-For")[0]


def test_guest_forwarded_for_off_is_silent(logged):
    pipeline, nova, _, policy = pipeline_with(Clock(), forwarded_for="off")
    assert run(pipeline, boot(b"1.2.3.4", b"10.0.0.5")).status == 200
    assert policy.counters.xff_seen == 0 and not warnings(logged, "X-Forwarded-For")
    assert not policy.active


def test_guest_forwarded_for_log_lines_throttled_and_escaped(logged):
    clock = Clock()
    pipeline, *_ = pipeline_with(clock, forwarded_for="enforce", log_interval=60)
    for _ in range(500):
        run(pipeline, boot(b"evil\x80\xff" + b"x" * 500, b"10.0.0.5"))
    lines = warnings(logged, "X-Forwarded-For")
    assert len(lines) == 1 and "\\x80\\xff" in lines[0] and len(lines[0]) < 800


def test_log_throttle_counts_what_it_leaves_out():
    clock = Clock()
    throttle = LogThrottle(clock, 10)
    assert throttle.allow() == 0
    assert [throttle.allow() for _ in range(3)] == [None] * 3
    clock.advance(10)
    assert throttle.allow() == 3


def test_unknown_mode_refused():
    with pytest.raises(ValueError):
        RequestPolicy(Clock(), forwarded_for="maybe")


# ---- a TCP listener inside the namespace: any X-Forwarded-For is the guest's ----------


def peer_run(pipeline, request, ip="10.0.0.5"):
    from bench.load.unixhttp import parse_answer
    from metaproxy.caller import identify_peer
    from metaproxy.namespace import Namespace

    namespace = Namespace.parse("qrouter-r1")
    results = []
    pipeline.handle(request, namespace, identify_peer(namespace, ip)).addBoth(results.append)
    return parse_answer(results[0])


def test_peer_caller_with_one_guest_forwarded_for_is_seen_and_served(logged):
    """Without haproxy there is no X-Forwarded-For of its own: a single one is the
    guest's. The rule (log) counts and logs it; the caller stays the peer."""
    pipeline, nova, _, policy = pipeline_with(Clock())
    answer = peer_run(pipeline, get(b"/openstack", (b"X-Forwarded-For", b"10.0.0.6")))
    assert answer.status == 200
    assert nova.sent[0][2][0] == (b"X-Forwarded-For", b"10.0.0.5")
    assert dict(nova.sent[0][2])[b"X-Instance-ID"] == b"vm-blue"
    assert policy.counters.xff_seen == 1 and policy.counters.xff_refused == 0
    assert "served it anyway" in warnings(logged, "X-Forwarded-For")[0]


def test_peer_caller_with_guest_forwarded_for_enforced_is_403(logged):
    pipeline, nova, backend, policy = pipeline_with(Clock(), forwarded_for="enforce")
    answer = peer_run(pipeline, get(b"/openstack", (b"X-Forwarded-For", b"10.0.0.6")))
    assert answer.status == 403 and nova.sent == [] and backend.calls == 0
    assert policy.counters.xff_refused == 1


def test_peer_caller_without_forwarded_for_is_the_normal_case(logged):
    pipeline, nova, _, policy = pipeline_with(Clock(), forwarded_for="enforce")
    assert peer_run(pipeline, get(b"/openstack")).status == 200
    assert policy.counters.xff_seen == 0 and not warnings(logged, "X-Forwarded-For")
