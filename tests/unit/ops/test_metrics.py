"""metaproxy.ops.metrics: counting, snapshots, adding workers up, the text format."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from metaproxy.guard.policy import PolicyCounters, RequestPolicy
from metaproxy.guard.ratelimit import RateLimiter, Window
from metaproxy.http.connlimit import ConnectionLimit
from metaproxy.http.server import Limits, MetadataFactory
from metaproxy.namespace import Namespace
from metaproxy.nova.breaker import Breaker
from metaproxy.nova.endpoints import Endpoint, NovaEndpoints
from metaproxy.ops.metrics import (
    LATENCY_BUCKETS,
    Metrics,
    RequestStats,
    Sample,
    WorkerTotals,
    merge,
    render,
)
from metaproxy.testing import FakeNova


def _values(text: bytes) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class _Cache:
    hits, misses, coalesced, failures = 5, 2, 7, 1


def test_record_counts_by_kind_status_and_bucket():
    stats = RequestStats()
    stats.record("shared", b"200", 0.0005)
    stats.record("shared", b"200", 0.2)
    stats.record("router", b"404", 100.0)
    assert stats.requests == {("shared", b"200"): 2, ("router", b"404"): 1}
    assert stats.buckets[0] == 1 and stats.buckets[LATENCY_BUCKETS.index(0.25)] == 1
    assert stats.buckets[-1] == 1  # +Inf
    assert abs(stats.latency_sum - 100.2005) < 1e-9
    stats.refuse(431)
    stats.refuse(408)
    stats.refuse(599)
    assert stats.refused == {"headers_too_large": 1, "request_timeout": 1, "other": 1}


def test_render_exports_every_family():
    stats = RequestStats()
    stats.record("ovn", b"503", 0.003)
    stats.refuse(413)
    metrics = Metrics(
        stats, cache=_Cache(), nova=FakeNova(in_flight=4, queued=1, idle=3), ready=lambda: True
    )
    metrics.reloaded("ok")
    metrics.add_source(
        lambda: [
            Sample(
                "metaproxy_rate_limited_total",
                "counter",
                "Requests answered 429.",
                (("reason", "ip"),),
                9,
            )
        ]
    )
    v = _values(render(metrics.snapshot))
    assert v[("metaproxy_requests_total", (("socket", "ovn"), ("status", "503")))] == 1
    assert v[("metaproxy_request_duration_seconds_bucket", (("le", "0.005"),))] == 1
    assert v[("metaproxy_request_duration_seconds_bucket", (("le", "0.0025"),))] == 0
    assert v[("metaproxy_request_duration_seconds_count", ())] == 1
    assert v[("metaproxy_refused_requests_total", (("reason", "body_too_large"),))] == 1
    assert v[("metaproxy_refused_requests_total", (("reason", "malformed"),))] == 0
    assert v[("metaproxy_reloads_total", (("outcome", "ok"),))] == 1
    assert v[("metaproxy_lookups_total", (("result", "coalesced"),))] == 7
    assert v[("metaproxy_lookups_total", (("result", "failed"),))] == 1
    assert v[("metaproxy_nova_connections", (("state", "in_use"),))] == 4
    assert v[("metaproxy_nova_connections", (("state", "idle"),))] == 3
    assert v[("metaproxy_nova_connections", (("state", "queued"),))] == 1
    assert v[("metaproxy_lookup_backend_ready", ())] == 1
    assert v[("metaproxy_rate_limited_total", (("reason", "ip"),))] == 9


def test_merge_adds_snapshots_up():
    a, b = RequestStats(), RequestStats()
    a.record("shared", b"200", 0.01)
    b.record("shared", b"200", 0.01)
    b.record("router", b"200", 0.01)
    snap = merge(
        [Metrics(a, ready=lambda: True).snapshot(), Metrics(b, ready=lambda: False).snapshot()]
    )
    assert snap["requests"] == [["router", "200", 1], ["shared", "200", 2]]
    assert sum(snap["buckets"]) == 3
    assert snap["ready"] == [1, 2]


def test_worker_totals_keep_a_restarted_workers_counts_and_drop_its_gauges():
    totals = WorkerTotals()
    first = RequestStats()
    first.record("shared", b"200", 0.01)
    first.open = 4
    totals.report(1, 100, Metrics(first).snapshot())
    assert totals.snapshot()["open"] == 4
    again = RequestStats()  # worker 1 restarted: new pid, counters from zero
    again.record("shared", b"200", 0.01)
    totals.report(1, 101, Metrics(again).snapshot())
    snap = totals.snapshot()
    assert snap["requests"] == [["shared", "200", 2]]
    assert snap["open"] == 0
    totals.report(1, 101, Metrics(again).snapshot())  # same process again: not twice
    assert totals.snapshot()["requests"] == [["shared", "200", 2]]


class _Pipeline:
    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.pending: Deferred | None = None

    def handle(self, request, namespace):
        self.pending = Deferred()
        return self.pending


def test_server_counts_answers_latency_and_open_connections():
    clock = Clock()
    stats = RequestStats()
    pipeline = _Pipeline(b"")
    factory = MetadataFactory(pipeline, Namespace.parse("qrouter-r1"), Limits(), clock, stats=stats)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    assert stats.open == 1
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.5\r\n\r\n")
    clock.advance(0.3)
    pipeline.pending.callback(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    proto.connectionLost(None)
    assert stats.open == 0
    assert stats.requests == {("router", b"200"): 1}
    assert stats.buckets[LATENCY_BUCKETS.index(0.5)] == 1


def test_server_counts_refusals():
    clock = Clock()
    stats = RequestStats()
    factory = MetadataFactory(
        _Pipeline(b""), None, Limits(max_header_bytes=1024), clock, stats=stats
    )
    proto = factory.buildProtocol(None)
    proto.makeConnection(StringTransport())
    proto.dataReceived(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
    assert stats.refused == {"headers_too_large": 1}
    assert stats.requests == {("shared", b"431"): 1}
    slow = factory.buildProtocol(None)
    slow.makeConnection(StringTransport())
    slow.dataReceived(b"GET / HTTP/1.1\r\n")
    clock.advance(31)
    assert stats.refused["request_timeout"] == 1
    assert stats.requests[("shared", b"408")] == 1


def test_server_counts_connections_refused_by_bound():
    """A connection refused because a bound was full is counted by the option that sets
    the bound, every namespace socket's into the one RequestStats of the process."""
    clock = Clock()
    stats = RequestStats()
    limits = Limits(max_connections_per_namespace=1, connections=ConnectionLimit(3))
    r1, r2 = (
        MetadataFactory(_Pipeline(b""), Namespace.parse(name), limits, clock, stats=stats)
        for name in ("qrouter-r1", "qrouter-r2")
    )
    shared = MetadataFactory(_Pipeline(b""), None, limits, clock, stats=stats)
    for factory in (r1, r1, r2, r2, shared, shared):
        factory.buildProtocol(None)
    assert stats.connections_refused == {"max_connections_per_namespace": 2, "max_connections": 1}


def test_protection_counters_are_exported_at_scrape_time():
    """The policy's, the connection bounds' and the Nova endpoints' plain counters come
    out as metrics (read when scraped, nothing per request)."""
    clock = Clock()
    limiter = RateLimiter(clock, Window(60, 1), Window(60, 1))
    limiter.rejected = 7
    policy = RequestPolicy(clock, limiter=limiter)
    policy.counters = PolicyCounters(xff_seen=3, xff_refused=1)
    stats = RequestStats()
    limits = Limits(max_connections_per_namespace=1)
    for name, tries in (("qrouter-r1", 6), ("qrouter-r2", 5)):  # 5 + 4 refused
        factory = MetadataFactory(_Pipeline(b""), Namespace.parse(name), limits, clock, stats=stats)
        for _ in range(tries):
            factory.buildProtocol(None)
    breaker = Breaker(clock, failures=1)
    breaker.failed()
    endpoint = Endpoint("http://nova:8775", SimpleNamespace(rejected=4), breaker)
    nova = NovaEndpoints(clock, [endpoint], timeout=10)
    nova.failovers, nova.refused = 5, 6
    metrics = Metrics(stats)
    metrics.add_source(policy.metric_samples)
    metrics.add_source(nova.metric_samples)
    values = _values(render(metrics.snapshot))
    assert values[("metaproxy_rate_limited_total", ())] == 7
    assert values[("metaproxy_guest_forwarded_for_total", (("action", "refused"),))] == 1
    assert (
        values[
            ("metaproxy_connections_refused_total", (("bound", "max_connections_per_namespace"),))
        ]
        == 9
    )
    assert values[("metaproxy_nova_refused_total", (("reason", "queue_full"),))] == 4
    assert (
        values[
            ("metaproxy_nova_endpoint_state", (("endpoint", "http://nova:8775"), ("state", "open")))
        ]
        == 1
    )
    assert (
        values[
            (
                "metaproxy_nova_endpoint_state",
                (("endpoint", "http://nova:8775"), ("state", "closed")),
            )
        ]
        == 0
    )
    assert values[("metaproxy_nova_breaker_opened_total", (("endpoint", "http://nova:8775"),))] == 1
    assert values[("metaproxy_connections_refused_total", (("bound", "max_connections"),))] == 0


def test_without_a_rate_limiter_nothing_is_rate_limited():
    metrics = Metrics(RequestStats())
    metrics.add_source(RequestPolicy(Clock()).metric_samples)
    values = _values(render(metrics.snapshot))
    assert values[("metaproxy_rate_limited_total", ())] == 0
    # no rate limiter configured: none of its own metrics
    assert not any(name.startswith("metaproxy_rate_limit_") for name, _ in values)


def test_rate_limiter_rejections_and_evictions_are_scraped():
    """The rate limiter's own counters (refused requests, sources forgotten early
    because max_sources was reached) are exported through the policy that uses it."""
    clock = Clock()
    limiter = RateLimiter(clock, Window(60, 1), Window(60, 1), max_sources=2)
    policy = RequestPolicy(clock, limiter=limiter)
    metrics = Metrics(RequestStats())
    metrics.add_source(policy.metric_samples)
    assert limiter.check("n1", "10.0.0.1") == 0
    assert limiter.check("n1", "10.0.0.1") > 0  # over the limit: refused
    assert limiter.check("n1", "10.0.0.2") == 0
    # a third source with two remembered: both are forgotten to make room
    assert limiter.check("n1", "10.0.0.3") == 0
    values = _values(render(metrics.snapshot))
    assert values[("metaproxy_rate_limited_total", ())] == 1
    assert values[("metaproxy_rate_limit_evicted_sources_total", ())] == 2


def test_workers_protection_counters_are_added_up():
    """Each worker's component counters reach the agent in its snapshot and are summed
    there, a restarted worker's kept."""
    clock = Clock()
    snaps = []
    for rejected, refused in ((3, 1), (4, 2)):
        limiter = RateLimiter(clock, Window(60, 1), Window(60, 1))
        limiter.rejected = rejected
        stats = RequestStats()
        for _ in range(refused):
            stats.refuse_connection("max_connections_per_namespace")
        metrics = Metrics(stats)
        metrics.add_source(RequestPolicy(clock, limiter=limiter).metric_samples)
        snaps.append(metrics.snapshot())
    totals = WorkerTotals()
    totals.report(1, 100, snaps[0])
    totals.report(2, 200, snaps[1])
    totals.report(1, 101, Metrics().snapshot())  # worker 1 restarted
    values = _values(render(totals.snapshot))
    assert values[("metaproxy_rate_limited_total", ())] == 7
    assert (
        values[
            ("metaproxy_connections_refused_total", (("bound", "max_connections_per_namespace"),))
        ]
        == 3
    )


def test_guest_identity_headers_exported_always_and_added_up_over_workers():
    """Every header label is there (0 until seen); the workers' counts add up."""
    empty = _values(render(Metrics(RequestStats()).snapshot))
    for header in (
        "X-Forwarded-For",
        "X-Neutron-Router-ID",
        "X-Neutron-Network-ID",
        "X-OVN-Network-ID",
    ):
        assert empty[("metaproxy_guest_identity_headers_total", (("header", header),))] == 0
    one, two = RequestStats(), RequestStats()
    one.guest_header("X-Forwarded-For")
    two.guest_header("X-Forwarded-For")
    two.guest_header("X-OVN-Network-ID")
    totals = WorkerTotals()
    totals.report(1, 101, Metrics(one).snapshot())
    totals.report(2, 102, Metrics(two).snapshot())
    values = _values(render(totals.snapshot))
    assert values[("metaproxy_guest_identity_headers_total", (("header", "X-Forwarded-For"),))] == 2
    assert (
        values[("metaproxy_guest_identity_headers_total", (("header", "X-OVN-Network-ID"),))] == 1
    )
    # a worker that restarts keeps its count in the total
    totals.report(2, 202, Metrics(RequestStats()).snapshot())
    assert merge([totals.snapshot()])["guest_headers"]["X-Forwarded-For"] == 2
