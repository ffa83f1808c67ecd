"""metaproxy.agent.builders: the parts the settings describe, the Nova clients above all
(the serving processes' endpoints and the health probe's own client share one builder)."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from metaproxy.agent.builders import nova_endpoints, nova_probe_client, rate_limiter, worker_args
from metaproxy.config import default_settings

URLS = ("http://192.0.2.1:8775", "http://192.0.2.2:8776")


def _settings(**overrides):
    return default_settings(
        nova_url=URLS[0],
        nova_urls=URLS,
        nova_max_in_flight=3,
        nova_max_queued=1,
        nova_breaker_failures=4,
        **overrides,
    )


def _fill(client, count):
    for _ in range(count):
        client.forward(b"GET", b"/", (), b"").addErrback(lambda f: None)


def test_nova_endpoints_one_client_and_breaker_per_url_in_order():
    reactor = MemoryReactorClock()
    nova = nova_endpoints(reactor, _settings())
    assert [e.url for e in nova.endpoints] == list(URLS)
    assert all(e.breaker.threshold == 4 for e in nova.endpoints)
    second = nova.endpoints[1].client
    _fill(second, 5)  # 3 in flight, 1 queued, 1 refused: the queue is bounded
    assert (second.in_flight, second.queued, second.rejected) == (3, 1, 1)
    assert [(host, port) for host, port, *_ in reactor.tcpClients] == [("192.0.2.2", 8776)] * 3


def test_probe_client_asks_the_first_endpoint_two_requests_at_most():
    reactor = MemoryReactorClock()
    probe = nova_probe_client(reactor, _settings())
    _fill(probe, 4)  # no bound on its queue
    assert (probe.in_flight, probe.queued, probe.rejected) == (2, 2, 0)
    assert [(host, port) for host, port, *_ in reactor.tcpClients] == [("192.0.2.1", 8775)] * 2


def test_rate_limiter_only_when_enabled():
    assert rate_limiter(MemoryReactorClock(), default_settings()) is None
    limiter = rate_limiter(
        MemoryReactorClock(),
        default_settings(rate_limit_enabled=True, base_query_rate_limit=7, ip_versions=(6,)),
    )
    assert limiter is not None and limiter.base.limit == 7
    assert limiter.limits("fe80::1") and not limiter.limits("10.0.0.1")


def test_worker_args_repeat_the_agents_configuration():
    assert worker_args(("/etc/a.ini", "/etc/b.ini"), ["/etc/d"]) == [
        "--config-file",
        "/etc/a.ini",
        "--config-file",
        "/etc/b.ini",
        "--config-dir",
        "/etc/d",
    ]
