"""metaproxy.resolve.neutron_api against the in-process fake Keystone + Neutron: the exact
queries upstream makes, the endpoint, 401 handling, failures within the timeout, and the
core's coalescing and cache in front of it."""

from __future__ import annotations

import json

import pytest
from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock

from bench.fakes.neutron.cloud import FakeCloud, cloud_resource
from bench.fakes.neutron.ports import neutron_ports
from metaproxy.caller import Identity
from metaproxy.config import default_settings
from metaproxy.namespace import Namespace, NamespaceKind
from metaproxy.neutron.keystone import Credentials, KeystoneSession
from metaproxy.resolve import backends
from metaproxy.resolve.base import ROUTER_INTERFACE_OWNERS, Instance, LookupUnavailable, Port
from metaproxy.resolve.cache import CachingBackend
from metaproxy.resolve.neutron_api import (
    PORT_FIELDS,
    NeutronApiBackend,
    parse_ports,
    parse_router_networks,
    ports_url,
)
from metaproxy.resolve.resolver import InstanceResolver

PASSWORD = "Neutr0n-Pa55"
NOW = 1_700_000_000.0
KEYSTONE = "http://cloud.test/identity/v3"
PORTS = "http://cloud.test/network/v2.0/ports"
FIELDS = [("fields", f) for f in PORT_FIELDS]
OWNERS = [("device_owner", o) for o in ROUTER_INTERFACE_OWNERS]

TABLE = {
    "routers": {"r2": ["net-b", "net-c"]},
    "ports": [
        {
            "id": "pa",
            "network_id": "net-a",
            "mac_address": "fa:16:3e:00:00:0a",
            "fixed_ips": ["10.0.0.5"],
            "device_id": "vm-a",
            "project_id": "proj-a",
            "device_owner": "compute:nova",
        },
        {
            "id": "r1-if",
            "network_id": "net-a",
            "mac_address": "fa:16:3e:00:00:01",
            "fixed_ips": ["10.0.0.1"],
            "device_id": "r1",
            "project_id": "admin",
            "device_owner": "network:router_interface",
        },
        {
            "id": "r1-gw",
            "network_id": "ext",
            "mac_address": "fa:16:3e:00:00:02",
            "fixed_ips": ["203.0.113.9"],
            "device_id": "r1",
            "project_id": "admin",
            "device_owner": "network:router_gateway",
        },
        {
            "id": "pb",
            "network_id": "net-b",
            "mac_address": "fa:16:3e:00:00:0b",
            "fixed_ips": ["10.0.0.5"],
            "device_id": "vm-b",
            "project_id": "proj-b",
            "device_owner": "compute:nova",
        },
        {
            "id": "pc",
            "network_id": "net-c",
            "mac_address": "fa:16:3e:11:22:33",
            "fixed_ips": ["10.0.1.7", "fd00:0:0::7"],
            "device_id": "vm-c",
            "project_id": "proj-c",
            "device_owner": "compute:nova",
        },
    ],
}


@pytest.fixture
def clock():
    c = Clock()
    c.advance(NOW)
    return c


@pytest.fixture
def cloud(clock):
    return FakeCloud(neutron_ports(TABLE), clock, password=PASSWORD)


@pytest.fixture
def agent(cloud):
    return RequestTraversalAgent(cloud_resource(cloud))


def make_backend(clock, agent, timeout=5.0, **kwargs):
    http = HTTPClient(agent)
    keystone = KeystoneSession(
        clock,
        http,
        Credentials(
            "password",
            KEYSTONE,
            username="metaproxy",
            password=PASSWORD,
            user_domain_name="Default",
            project_name="service",
            project_domain_name="Default",
        ),
        timeout=timeout,
    )
    return NeutronApiBackend(clock, http, keystone, timeout=timeout, **kwargs)


@pytest.fixture
def backend(clock, agent):
    return make_backend(clock, agent)


def result(agent, d):
    agent.flush()
    assert d.called, "no answer"
    return d.result


def failure(agent, d):
    agent.flush()
    assert d.called, "no answer"
    error = d.result.value
    d.addErrback(lambda f: None)
    return error


def neutron_queries(cloud):
    return [r.query for r in cloud.neutron_requests()]


# --- the queries ----------------------------------------------------------------------


def test_router_networks_asks_for_interface_ports_network_ids_only(agent, cloud, backend):
    """Upstream's query (docs/upstream.md, "Router-interface owners"): device_id =
    router, the three interface owners; the gateway port is not one of them."""
    assert result(agent, backend.router_networks("r1")) == ("net-a",)
    assert result(agent, backend.router_networks("r2")) == ("net-b", "net-c")
    assert result(agent, backend.router_networks("nope")) == ()
    assert neutron_queries(cloud) == [
        [("device_id", "r1")] + OWNERS + [("fields", "network_id")],
        [("device_id", "r2")] + OWNERS + [("fields", "network_id")],
        [("device_id", "nope")] + OWNERS + [("fields", "network_id")],
    ]
    assert [r.path for r in cloud.neutron_requests()] == ["/network/v2.0/ports"] * 3


def test_ports_by_ip_filters_networks_and_fixed_ip(agent, cloud, backend):
    ports = result(agent, backend.ports_by_ip(("net-b", "net-c", "net-b"), "10.0.0.5"))
    assert ports == [
        Port("pb", "net-b", "fa:16:3e:00:00:0b", ("10.0.0.5",), "vm-b", "proj-b", "compute:nova")
    ]
    assert neutron_queries(cloud) == [
        [("network_id", "net-b"), ("network_id", "net-c"), ("fixed_ips", "ip_address=10.0.0.5")]
        + FIELDS
    ]


def test_ports_by_mac_for_link_local_callers(agent, cloud, backend):
    ports = result(agent, backend.ports_by_mac(("net-c",), "fa:16:3e:11:22:33"))
    assert [p.id for p in ports] == ["pc"]
    assert ports[0].fixed_ips == ("10.0.1.7", "fd00::7")
    assert neutron_queries(cloud) == [
        [("network_id", "net-c"), ("mac_address", "fa:16:3e:11:22:33")] + FIELDS
    ]


def test_every_request_carries_the_token_and_one_token_serves_all(agent, cloud, backend):
    result(agent, backend.router_networks("r1"))
    result(agent, backend.ports_by_ip(("net-a",), "10.0.0.5"))
    tokens = {r.token for r in cloud.neutron_requests()}
    assert len(tokens) == 1 and tokens <= set(cloud.tokens)
    assert len(cloud.keystone_requests()) == 1


def test_answers_are_small(agent, cloud, backend):
    """fields= keeps Neutron's answer to what a lookup uses."""
    cloud_ports = cloud.index.by[("id", "pa")][0]
    assert "security_groups" in cloud_ports
    from bench.fakes.neutron.ports import select_ports

    answer = select_ports(
        cloud.index, [("fixed_ips", "ip_address=10.0.0.5"), ("network_id", "net-a")] + FIELDS
    )
    assert set(answer[0]) == set(PORT_FIELDS)


# --- parsing ----------------------------------------------------------------------------


def test_parse_ports_normalises_and_falls_back_to_tenant_id():
    body = json.dumps(
        {
            "ports": [
                {
                    "id": "p",
                    "network_id": "n",
                    "mac_address": "FA:16:3E:AA:BB:CC",
                    "fixed_ips": [{"subnet_id": "s", "ip_address": "FD00:0:0:0::5"}],
                    "device_id": "vm",
                    "tenant_id": "old-project",
                    "device_owner": None,
                }
            ]
        }
    ).encode()
    assert parse_ports(body) == [
        Port("p", "n", "fa:16:3e:aa:bb:cc", ("fd00::5",), "vm", "old-project", "")
    ]


@pytest.mark.parametrize(
    "body, words",
    [
        (b"<html>", "not a JSON object"),
        (b'{"ports": {}}', "not a list of objects"),
        (b'{"ports": [{"id": "p", "fixed_ips": [{"ip_address": "x"}]}]}', "has no IP address"),
        (b'{"ports": [{"id": "p", "device_id": 5}]}', "device_id is 5, not text"),
    ],
)
def test_parse_ports_rejects_unusable_answers(body, words):
    with pytest.raises(ValueError, match=words):
        parse_ports(body)


def test_parse_router_networks_needs_network_ids():
    assert parse_router_networks(b'{"ports": [{"network_id": "a"}, {"network_id": "a"}]}') == (
        "a",
        "a",
    )
    with pytest.raises(ValueError, match="no network_id"):
        parse_router_networks(b'{"ports": [{}]}')


@pytest.mark.parametrize(
    "endpoint, url",
    [
        ("http://n:9696", "http://n:9696/v2.0/ports"),
        ("http://n:9696/", "http://n:9696/v2.0/ports"),
        ("https://n/networking/v2.0/", "https://n/networking/v2.0/ports"),
    ],
)
def test_ports_url(endpoint, url):
    assert ports_url(endpoint) == url


# --- the endpoint -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "interfaces, path",
    [
        (("internal", "public"), "/network/v2.0/ports"),
        (("public", "internal"), "/network-public/v2.0/ports"),
        (("admin",), "/network-admin/v2.0/ports"),
    ],
)
def test_endpoint_from_the_catalog_by_interface(clock, agent, cloud, interfaces, path):
    backend = make_backend(clock, agent, interfaces=interfaces, region="RegionOne")
    result(agent, backend.router_networks("r1"))
    assert cloud.neutron_requests()[0].path == path


def test_endpoint_override_wins_over_the_catalog(clock, agent, cloud):
    backend = make_backend(clock, agent, endpoint_override="http://cloud.test/network-admin")
    result(agent, backend.router_networks("r1"))
    assert cloud.neutron_requests()[0].path == "/network-admin/v2.0/ports"
    assert backend.describe() == (
        "Neutron API at http://cloud.test/network-admin/v2.0/ports, "
        f"tokens from Keystone at {KEYSTONE}/auth/tokens"
    )


def test_no_endpoint_in_region_is_unavailable_naming_keystone(clock, agent, cloud):
    backend = make_backend(clock, agent, region="RegionTwo")
    error = failure(agent, backend.router_networks("r1"))
    assert isinstance(error, LookupUnavailable)
    assert str(error).startswith(
        f"Keystone at {KEYSTONE}/auth/tokens: the catalog has no "
        "'network' endpoint with interface internal or public in "
        "region RegionTwo"
    )
    assert cloud.neutron_requests() == []


# --- tokens: expiry and 401 ------------------------------------------------------------


def test_expiring_token_is_renewed_before_the_next_call(clock, agent, cloud, backend):
    result(agent, backend.router_networks("r1"))
    first = cloud.neutron_requests()[0].token
    clock.advance(3600 - 100)  # within two minutes of expiry
    assert result(agent, backend.router_networks("r1")) == ("net-a",)
    second = cloud.neutron_requests()[1].token
    assert second != first and len(cloud.keystone_requests()) == 2
    assert backend.reauthentications == 0  # renewed ahead, no 401 seen


def test_revoked_token_gets_one_new_token_and_one_retry(agent, cloud, backend):
    result(agent, backend.router_networks("r1"))
    cloud.revoke_tokens()
    assert result(agent, backend.router_networks("r2")) == ("net-b", "net-c")
    assert len(cloud.keystone_requests()) == 2
    assert len(cloud.neutron_requests()) == 3  # ok, 401, ok
    assert backend.reauthentications == 1


def test_concurrent_401s_renew_the_token_once(agent, cloud, backend):
    result(agent, backend.router_networks("r1"))
    cloud.revoke_tokens()
    cloud.neutron_fault = "hold"
    calls = [
        backend.router_networks("r1"),
        backend.router_networks("r2"),
        backend.ports_by_ip(("net-a",), "10.0.0.5"),
    ]
    agent.flush()
    cloud.neutron_fault = None
    cloud.release()  # three 401s
    agent.flush()
    assert [d.result for d in calls][:2] == [("net-a",), ("net-b", "net-c")]
    assert calls[2].result[0].device_id == "vm-a"
    assert len(cloud.keystone_requests()) == 2


def test_401_with_the_new_token_too_is_unavailable(agent, cloud, backend):
    cloud.neutron_fault = 401
    error = failure(agent, backend.router_networks("r1"))
    assert str(error) == (
        f"Neutron API at {PORTS} answered HTTP 401 with a new token too: injected fault"
    )
    assert len(cloud.neutron_requests()) == 2 and len(cloud.keystone_requests()) == 2


# --- failures: bounded, named ----------------------------------------------------------


def test_neutron_error_status_names_the_endpoint(agent, cloud, backend):
    cloud.neutron_fault = 500
    error = failure(agent, backend.ports_by_ip(("net-a",), "10.0.0.5"))
    assert isinstance(error, LookupUnavailable)
    assert str(error) == f"Neutron API at {PORTS} answered HTTP 500: injected fault"
    assert backend.ready() is False
    cloud.neutron_fault = None
    result(agent, backend.ports_by_ip(("net-a",), "10.0.0.5"))
    assert backend.ready() is True


def test_slow_neutron_fails_at_the_timeout(clock, agent, cloud):
    """The stated bound: a lookup call ends within [neutron] timeout."""
    backend = make_backend(clock, agent, timeout=3.0)
    cloud.neutron_fault = "hang"
    d = backend.router_networks("r1")
    agent.flush()
    clock.advance(2.9)
    assert not d.called
    clock.advance(0.1)
    error = failure(agent, d)
    assert str(error) == (
        f"no answer within 3 s ([neutron] timeout) while asking the Neutron API at {PORTS}"
    )


def test_slow_keystone_counts_against_the_same_timeout(clock, agent, cloud):
    backend = make_backend(clock, agent, timeout=3.0)
    cloud.keystone_fault = "hang"
    d = backend.ports_by_mac(("net-c",), "fa:16:3e:11:22:33")
    agent.flush()
    clock.advance(3.0)
    error = failure(agent, d)
    # the token request's own timeout (the same [neutron] timeout) says it first
    assert isinstance(error, LookupUnavailable)
    assert str(error) == (
        f"Keystone at {KEYSTONE}/auth/tokens did not answer within 3 s ([neutron] timeout)"
    )
    assert cloud.neutron_requests() == []


def test_keystone_down_names_keystone(agent, cloud, backend):
    cloud.keystone_fault = 503
    error = failure(agent, backend.router_networks("r1"))
    assert isinstance(error, LookupUnavailable)
    assert str(error) == f"Keystone at {KEYSTONE}/auth/tokens answered HTTP 503: injected fault"


def test_keystone_down_reaches_the_resolver_as_the_same_unavailable_lookup(
    agent, cloud, backend, clock
):
    """The backend answers Keystone's failure as an unavailable lookup with Keystone's own
    words: the resolver passes it on unwrapped (the instance gets 503 naming Keystone)."""
    cloud.keystone_fault = 503
    resolver = InstanceResolver(CachingBackend(backend, clock, ttl=600, enabled=False))
    error = failure(agent, resolver.resolve(ROUTER_CALLER))
    assert isinstance(error, LookupUnavailable)
    assert str(error) == f"Keystone at {KEYSTONE}/auth/tokens answered HTTP 503: injected fault"


def test_unreachable_neutron_says_how(clock):
    """A refused connection is reported with its cause, not a traceback."""

    class Refusing:
        def request(self, method, uri, headers=None, bodyProducer=None):
            if uri.endswith(b"/auth/tokens"):
                return real.request(method, uri, headers, bodyProducer)
            return fail(ConnectionRefusedError("Connection refused"))

    cloud = FakeCloud(neutron_ports(TABLE), clock, password=PASSWORD)
    real = RequestTraversalAgent(cloud_resource(cloud))
    backend = make_backend(clock, Refusing())
    d = backend.router_networks("r1")
    real.flush()
    error = d.result.value
    d.addErrback(lambda f: None)
    assert str(error).startswith(
        f"Neutron API at {PORTS} unreachable (ConnectionRefusedError: "
        "Connection was refused by other side"
    )


# --- through the core: coalescing and the cache -----------------------------------------

ROUTER_CALLER = Identity(Namespace(NamespaceKind.ROUTER, "r1"), "10.0.0.5", None, b"10.0.0.5")


def boot(resolver, n=28):
    return [resolver.resolve(ROUTER_CALLER) for _ in range(n)]


def test_one_boots_concurrent_requests_make_two_neutron_calls(agent, cloud, backend, clock):
    """28 requests at once, cache off (upstream's default): the router lookup and the port
    lookup are each made once and shared."""
    resolver = InstanceResolver(CachingBackend(backend, clock, ttl=600, enabled=False))
    cloud.neutron_fault = "hold"
    answers = boot(resolver)
    agent.flush()
    cloud.release()  # router networks
    agent.flush()
    cloud.release()  # ports by IP
    agent.flush()
    assert {d.result for d in answers} == {Instance("vm-a", "proj-a")}
    assert len(cloud.neutron_requests()) == 2


def test_sequential_boot_cache_off_asks_neutron_every_time(agent, cloud, backend, clock):
    resolver = InstanceResolver(CachingBackend(backend, clock, ttl=600, enabled=False))
    for _ in range(28):
        assert result(agent, resolver.resolve(ROUTER_CALLER)) == Instance("vm-a", "proj-a")
    assert len(cloud.neutron_requests()) == 56


def test_sequential_boot_cache_on_makes_two_neutron_calls(agent, cloud, backend, clock):
    """[cache] enabled: one boot (28 requests one after the other, a few seconds) makes
    two Neutron calls; a fresh lookup after Nova's 404 asks again."""
    resolver = InstanceResolver(CachingBackend(backend, clock, ttl=600, enabled=True))
    for _ in range(28):
        assert result(agent, resolver.resolve(ROUTER_CALLER)) == Instance("vm-a", "proj-a")
        clock.advance(0.5)
    assert len(cloud.neutron_requests()) == 2
    result(agent, resolver.resolve(ROUTER_CALLER, fresh=True))
    assert len(cloud.neutron_requests()) == 4
    assert len(cloud.keystone_requests()) == 1


# --- lifecycle and building --------------------------------------------------------------


def text_of(events):
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in events if e.get("log_namespace", "").startswith("metaproxy")]


def test_start_gets_a_token_and_logs_where_ports_come_from(agent, backend, logged):
    backend.start()
    agent.flush()
    assert text_of(logged) == [
        f"Neutron API lookups: token from Keystone at {KEYSTONE}/auth/tokens; ports at {PORTS}"
    ]


def test_start_with_bad_credentials_logs_without_the_password(clock, agent, cloud, logged):
    cloud.password = "something-else"
    backend = make_backend(clock, agent)
    backend.start()
    agent.flush()
    [line] = text_of(logged)
    assert line.startswith(
        "Neutron API lookups: no token yet (Keystone at "
        f"{KEYSTONE}/auth/tokens refused the credentials (HTTP 401"
    )
    assert PASSWORD not in line and not any(t in line for t in cloud.tokens)


def test_stop_closes_the_pool(clock, agent):
    closed = []

    class Pool:
        def closeCachedConnections(self):
            closed.append(True)
            return "closed"

    assert make_backend(clock, agent, pool=Pool()).stop() == "closed"
    assert closed == [True]


def test_built_from_settings_with_a_ca_file(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    settings = default_settings(
        lookup_backend="neutron_api",
        neutron_auth_type="password",
        neutron_auth_url="https://keystone.example:5000",
        neutron_username="u",
        neutron_password="p",
        neutron_user_domain_name="Default",
        neutron_project_name="service",
        neutron_project_domain_name="Default",
        neutron_cafile=str(tmp_path / "ca.pem"),
        neutron_region_name="R9",
    )
    built = backends.build_backend(Clock(), settings)
    assert isinstance(built, NeutronApiBackend)
    assert backends.describe_backend(built) == (
        "Neutron API at the catalog's network endpoint (internal, public, region R9), "
        "tokens from Keystone at https://keystone.example:5000/v3/auth/tokens"
    )


def test_bad_ca_file_is_a_backend_error(tmp_path):
    (tmp_path / "ca.pem").write_text("not a certificate")
    settings = default_settings(
        lookup_backend="neutron_api",
        neutron_auth_type="password",
        neutron_auth_url="https://k:5000",
        neutron_cafile=str(tmp_path / "ca.pem"),
    )
    with pytest.raises(backends.BackendError, match=r"^\[neutron\] cafile: CA file .* holds no"):
        backends.build_backend(Clock(), settings)
