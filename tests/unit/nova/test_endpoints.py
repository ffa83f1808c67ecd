"""Several Nova endpoints: breaker states, failover of GET/HEAD, the queue bound, and
paths reaching Nova byte-exact from the raw request through the real client."""

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent

from bench.load.unixhttp import parse_answer
from metaproxy.http.request import RequestParser
from metaproxy.nova.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from metaproxy.nova.client import (
    NovaBadResponse,
    NovaOverloaded,
    NovaResponse,
    NovaTimeout,
    NovaUnreachable,
)
from metaproxy.nova.endpoints import Endpoint, NovaEndpoints
from metaproxy.pipeline import Pipeline
from metaproxy.resolve.resolver import InstanceResolver
from metaproxy.testing import FakeNova, InMemoryPortBackend
from tests.doubles import OK, PROXY_HEADERS, Wire, failure, no_result, success
from tests.unit.test_pipeline import SECRET, TABLE

RESPONSE = NovaResponse(200, b"OK", (), b"ok")


# --- Breaker -------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_only():
    clock = Clock()
    breaker = Breaker(clock, failures=3, cooldown=5)
    breaker.failed(), breaker.failed(), breaker.succeeded()
    assert breaker.state == CLOSED and breaker.failures == 0
    assert [breaker.failed() for _ in range(3)] == [False, False, True]
    assert breaker.state == OPEN and breaker.opened == 1 and not breaker.allows()


def test_breaker_half_open_probe_then_closed():
    clock = Clock()
    breaker = Breaker(clock, failures=1, cooldown=5)
    breaker.failed()
    clock.advance(4.9)
    assert not breaker.allows()
    clock.advance(0.1)
    assert breaker.allows() and breaker.state == HALF_OPEN
    assert not breaker.allows()  # one probe at a time
    assert breaker.succeeded() and breaker.state == CLOSED and breaker.allows()


def test_breaker_failed_probe_doubles_the_cooldown_up_to_the_cap():
    clock = Clock()
    breaker = Breaker(clock, failures=1, cooldown=5, max_cooldown=15)
    breaker.failed()
    for cooldown in (10, 15, 15):
        clock.advance(breaker.seconds_left())
        assert breaker.allows()
        assert breaker.failed() and breaker.cooldown == cooldown
    breaker.succeeded()
    assert breaker.cooldown == 5


def test_breaker_probe_ending_neither_way_lets_the_next_probe():
    clock = Clock()
    breaker = Breaker(clock, failures=1, cooldown=1)
    breaker.failed()
    clock.advance(1)
    assert breaker.allows()
    breaker.released()
    assert breaker.state == HALF_OPEN and breaker.allows()


# --- Failover with scripted clients ---------------------------------------------------


def endpoints(*clients, failures=2, cooldown=5, timeout=28):
    clock = Clock()
    eps = [
        Endpoint(f"http://nova{i}:8775", c, Breaker(clock, failures=failures, cooldown=cooldown))
        for i, c in enumerate(clients)
    ]
    return NovaEndpoints(clock, eps, timeout=timeout), clock


def outcome(d):
    out = []
    d.addBoth(out.append)
    return out[0]


def test_first_healthy_endpoint_serves():
    a, b = FakeNova(RESPONSE), FakeNova(RESPONSE)
    nova, _ = endpoints(a, b)
    assert outcome(nova.forward(b"GET", b"/", PROXY_HEADERS, b"")) is RESPONSE
    assert len(a.sent) == 1 and b.sent == []


@pytest.mark.parametrize("error", [NovaUnreachable("refused"), NovaBadResponse("garbage")])
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_idempotent_request_fails_over_to_the_next_endpoint(error, method):
    a, b = FakeNova(error), FakeNova(RESPONSE)
    nova, _ = endpoints(a, b)
    assert outcome(nova.forward(method, b"/x", PROXY_HEADERS, b"")) is RESPONSE
    assert [s[:2] for s in b.sent] == [(method, b"/x")]
    assert nova.failovers == 1 and nova.endpoints[0].breaker.failures == 1


def test_failover_gets_what_is_left_of_the_deadline():
    gate = Deferred()
    a, b = FakeNova(gate), FakeNova(RESPONSE)
    nova, clock = endpoints(a, b, timeout=28)
    d = nova.forward(b"GET", b"/", PROXY_HEADERS, b"")
    clock.advance(5)
    gate.errback(NovaUnreachable("connect timeout"))
    assert outcome(d) is RESPONSE
    assert a.time_limits[0] is None and b.time_limits[0] == pytest.approx(23)


@pytest.mark.parametrize("method, body", [(b"POST", b"pw"), (b"PUT", b""), (b"GET", b"x")])
def test_other_requests_are_not_sent_twice(method, body):
    a, b = FakeNova(NovaUnreachable("closed in the middle")), FakeNova(RESPONSE)
    nova, _ = endpoints(a, b)
    assert isinstance(
        outcome(nova.forward(method, b"/", PROXY_HEADERS, body)).value, NovaUnreachable
    )
    assert b.sent == []


def test_timeout_is_not_failed_over_but_counts():
    a, b = FakeNova(NovaTimeout("slow")), FakeNova(RESPONSE)
    nova, _ = endpoints(a, b)
    assert isinstance(outcome(nova.forward(b"GET", b"/", PROXY_HEADERS, b"")).value, NovaTimeout)
    assert b.sent == [] and nova.endpoints[0].breaker.failures == 1


def test_dead_endpoint_is_left_alone_then_probed_and_recovers(logged):
    """The first endpoint dies: after `failures` errors it is skipped (no more attempts
    on it), the second serves; after the cooldown one request probes it, and once it
    answers it serves again, without operator action."""
    a, b = FakeNova(NovaUnreachable("refused")), FakeNova(RESPONSE)
    nova, clock = endpoints(a, b, failures=2, cooldown=5)
    for _ in range(10):
        assert outcome(nova.forward(b"GET", b"/", PROXY_HEADERS, b"")) is RESPONSE
    assert len(a.sent) == 2 and nova.endpoints[0].state == OPEN
    clock.advance(5)
    a.answers = [RESPONSE]
    assert outcome(nova.forward(b"GET", b"/", PROXY_HEADERS, b"")) is RESPONSE
    assert len(a.sent) == 3 and nova.endpoints[0].state == CLOSED
    text = "\n".join(formatEvent(e) for e in logged)
    assert "http://nova0:8775: 2 consecutive failures" in text and "answers again" in text


def test_every_endpoint_open_is_503_at_once_with_retry_after(logged):
    a = FakeNova(NovaUnreachable("refused"))
    nova, clock = endpoints(a, failures=1, cooldown=7)
    outcome(nova.forward(b"GET", b"/", PROXY_HEADERS, b""))
    for _ in range(50):
        err = outcome(nova.forward(b"GET", b"/", PROXY_HEADERS, b"")).value
        assert isinstance(err, NovaOverloaded) and err.retry_after == 7
    assert len(a.sent) == 1 and nova.refused == 50
    assert len([e for e in logged if "without asking Nova" in formatEvent(e)]) == 1
    pipeline = Pipeline(InstanceResolver(InMemoryPortBackend(TABLE)), nova, SECRET)
    request = RequestParser().feed(
        b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: r1\r\n\r\n"
    )
    answer = parse_answer(outcome(pipeline.handle(request, None)))
    assert answer.status == 503 and ("Retry-After", "7") in answer.headers


def test_cancelled_probe_does_not_wedge_the_breaker():
    gate = Deferred()
    a = FakeNova(NovaUnreachable("refused"))
    nova, clock = endpoints(a, failures=1, cooldown=1)
    outcome(nova.forward(b"GET", b"/", PROXY_HEADERS, b""))
    clock.advance(1)
    a.answers = [gate]
    d = nova.forward(b"GET", b"/", PROXY_HEADERS, b"")
    d.cancel()
    assert isinstance(outcome(d).value, CancelledError)
    a.answers = [RESPONSE]
    assert outcome(nova.forward(b"GET", b"/", PROXY_HEADERS, b"")) is RESPONSE


def test_full_queue_on_one_endpoint_goes_to_the_next_whatever_the_method():
    a, b = FakeNova(NovaOverloaded("full")), FakeNova(RESPONSE)
    nova, _ = endpoints(a, b)
    assert outcome(nova.forward(b"POST", b"/", PROXY_HEADERS, b"pw")) is RESPONSE
    assert nova.endpoints[0].breaker.failures == 0


# --- The real client: queue bound, byte-exact targets -----------------------------------


def test_queue_bound_refuses_at_once_and_counts():
    """max_in_flight 1 and max_queued 2: the 4th request fails at once with
    NovaOverloaded, takes no slot and sends nothing; the others complete."""
    pending = []
    wire = Wire(reply=lambda e: pending.append(e))
    client = wire.client(max_in_flight=1, max_queued=2)
    held = [wire.forward(client, target=b"/%d" % i) for i in range(3)]
    refused = wire.forward(client, target=b"/3")
    assert "nova_max_queued" in str(failure(refused, NovaOverloaded))
    assert (client.in_flight, client.queued, client.rejected) == (1, 2, 1)
    for i in range(3):
        wire.servers[0].transport.write(OK)
        wire.flush()
    assert [success(d).body for d in held] == [b"ok"] * 3
    assert [e.request_line for e in wire.received] == [b"GET /%d HTTP/1.1" % i for i in range(3)]


def test_slow_request_does_not_hold_up_another():
    """One request Nova never answers, another on a second connection is answered."""
    wire = Wire(reply=lambda e: None if e.request_line.startswith(b"GET /slow") else OK)
    client = wire.client(max_in_flight=8)
    slow = wire.forward(client, target=b"/slow")
    fast = wire.forward(client, target=b"/fast")
    assert success(fast).body == b"ok"
    no_result(slow)


@pytest.mark.parametrize(
    "target",
    [
        b"/openstack/latest/meta_data.json?x=%2F..%2F&y=%00&z",
        b"//latest//user-data/../../etc/passwd",
        b"/%2e%2e/%2E%2e;a=b?c=d;e",
        b"/a?b=c?d=e&&f==g#frag",
        b"/~user/!$&'()*+,;=:@",
    ],
)
def test_paths_and_queries_reach_nova_byte_exact_from_the_raw_request(target):
    """The raw request, the parser, the pipeline, the endpoints and the real client: the
    request line Nova reads carries the target exactly (a fragment is never sent)."""
    wire = Wire()
    nova = NovaEndpoints(
        wire.reactor,
        [Endpoint("http://127.0.0.1:8775", wire.client(), Breaker(wire.reactor))],
        timeout=10,
    )
    pipeline = Pipeline(InstanceResolver(InMemoryPortBackend(TABLE)), nova, SECRET)
    request = RequestParser().feed(
        b"GET " + target + b" HTTP/1.1\r\nHost: 169.254.169.254"
        b"\r\nX-Forwarded-For: 10.0.0.5\r\n"
        b"X-Neutron-Router-ID: r1\r\n\r\n"
    )
    d = pipeline.handle(request, None)
    wire.flush()
    assert parse_answer(success(d)).status == 200
    assert wire.received[0].request_line == b"GET " + target.split(b"#")[0] + b" HTTP/1.1"


def test_a_deadline_from_the_pipeline_bounds_every_attempt():
    """Given a deadline (a slow lookup came first), the first endpoint gets what is left
    of it, and a failover gets what is left after the first attempt."""
    a, b = FakeNova(Deferred()), FakeNova(RESPONSE)
    nova, clock = endpoints(a, b)
    clock.advance(100)
    d = nova.forward(b"GET", b"/", PROXY_HEADERS, b"", 110.0)
    assert a.time_limits[0] == 10.0
    clock.advance(4)
    a.answers[0].errback(NovaUnreachable("refused"))
    assert outcome(d) is RESPONSE
    assert b.time_limits[0] == 6.0
