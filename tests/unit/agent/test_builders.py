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


class _Listeners:
    def add_tcp(self, namespace, addresses): ...

    def remove_tcp(self, namespace): ...

    def tcp_addresses(self, namespace):
        return ()


def test_chassis_mode_reads_the_ovn_agents_options():
    """[ovs] for the local database, [ovn] for the Southbound, agent_down_time for the
    liveness; the mode opens its listeners on the service's."""
    from metaproxy.agent.builders import chassis_mode

    settings = default_settings(
        ovn_chassis=True,
        lookup_backend="ovn",
        ovs_ovsdb_connection="unix:/run/openvswitch/db.sock",
        ovs_ovsdb_connection_timeout=7,
        ovn_sb_connection="tcp:192.0.2.21:6642,tcp:192.0.2.22:6642",
        agent_down_time=30,
    )
    listeners = _Listeners()
    mode = chassis_mode(MemoryReactorClock(), settings, listeners)
    assert [str(r) for r in mode.agent.ovs_monitor.remotes] == ["unix:/run/openvswitch/db.sock"]
    assert [str(r) for r in mode.agent._sb_remotes] == [
        "tcp:192.0.2.21:6642",
        "tcp:192.0.2.22:6642",
    ]
    assert mode.agent._agent_down_time == 30
    assert mode.serving._listeners is listeners
    ready, text = mode.check()
    assert not ready and "Open_vSwitch" in text
    samples = {(s.name, s.labels): s.value for s in mode.metric_samples()}
    assert samples[("metaproxy_ovn_chassis_ready", ())] == 0
    assert samples[("metaproxy_ovn_chassis_networks", ())] == 0


def test_the_chassis_mode_sends_no_rpc_state_reports():
    """Its liveness is in Chassis_Private, as the OVN metadata agent's: an RPC report
    would list a second metadata agent on the node."""
    from metaproxy.agent.builders import state_reporter

    settings = default_settings(
        transport_url="rabbit://u:p@192.0.2.30:5672/", ovn_chassis=True, lookup_backend="ovn"
    )
    assert state_reporter(MemoryReactorClock(), settings) is None
