"""metaproxy.resolve.neutron_api against the in-process fake Keystone + Neutron: the exact
queries upstream makes, the endpoint, 401 handling, failures within the timeout, and the
core's coalescing and cache in front of it. keystoneauth1 reaches the fake Keystone through
requests-mock (tests.unit.neutron.fake_keystone); the port queries reach the fake Neutron
through treq's in-memory agent."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock

from bench.fakes.neutron.cloud import FakeCloud, cloud_resource
from bench.fakes.neutron.ports import neutron_ports
from metaproxy.caller import Identity
from metaproxy.namespace import Namespace, NamespaceKind
from metaproxy.neutron.keystone import KeystoneSession
from metaproxy.resolve import backends
from metaproxy.resolve.base import ROUTER_INTERFACE_OWNERS, Instance, LookupUnavailable, Port
from metaproxy.resolve.cache import CachingBackend
from metaproxy.resolve.neutron_api import (
    PORT_FIELDS,
    NeutronApiBackend,
    parse_ports,
    parse_router_networks,
    ports_url,
    session_tls,
)
from metaproxy.resolve.resolver import InstanceResolver
from tests.unit.neutron.fake_keystone import (
    KEYSTONE,
    PASSWORD,
    PASSWORD_SECTION,
    Blocking,
    load,
    serve_keystone,
    wall_clock,
)

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
    return wall_clock()


@pytest.fixture
def cloud(clock, requests_mock):
    cloud = FakeCloud(neutron_ports(TABLE), clock, password=PASSWORD)
    serve_keystone(cloud, requests_mock)
    return cloud


@pytest.fixture
def agent(cloud):
    return RequestTraversalAgent(cloud_resource(cloud))


def make_backend(clock, agent, tmp_path, timeout=5.0, extra="", run=None, **kwargs):
    """The backend on a [neutron] section (the fake's password credentials + C{extra})."""
    keystone = load(tmp_path, PASSWORD_SECTION + extra)
    session = KeystoneSession(
        clock,
        keystone.session,
        keystone.adapter,
        url=keystone.auth_url,
        timeout=timeout,
        run_blocking=run or Blocking(),
    )
    return NeutronApiBackend(clock, HTTPClient(agent), session, timeout=timeout, **kwargs)


@pytest.fixture
def backend(clock, agent, tmp_path):
    return make_backend(clock, agent, tmp_path)


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
        ("internal, public", "/network/v2.0/ports"),
        ("public, internal", "/network-public/v2.0/ports"),
        ("admin", "/network-admin/v2.0/ports"),
    ],
)
def test_endpoint_from_the_catalog_by_interface(clock, agent, cloud, tmp_path, interfaces, path):
    extra = f"valid_interfaces = {interfaces}\nregion_name = RegionOne\n"
    backend = make_backend(clock, agent, tmp_path, extra=extra)
    result(agent, backend.router_networks("r1"))
    assert cloud.neutron_requests()[0].path == path


def test_endpoint_override_wins_over_the_catalog(clock, agent, cloud, tmp_path):
    extra = "endpoint_override = http://cloud.test/network-admin\n"
    backend = make_backend(clock, agent, tmp_path, extra=extra)
    result(agent, backend.router_networks("r1"))
    assert cloud.neutron_requests()[0].path == "/network-admin/v2.0/ports"
    assert backend.describe() == (
        "Neutron API at http://cloud.test/network-admin/v2.0/ports, "
        f"tokens from Keystone at {KEYSTONE}"
    )


def test_no_endpoint_in_region_is_unavailable_naming_keystone(clock, agent, cloud, tmp_path):
    backend = make_backend(clock, agent, tmp_path, extra="region_name = RegionTwo\n")
    error = failure(agent, backend.router_networks("r1"))
    assert isinstance(error, LookupUnavailable)
    assert str(error).startswith(
        f"Keystone at {KEYSTONE}: the catalog has no "
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


def test_concurrent_lookups_share_one_token_fetch(clock, agent, cloud, tmp_path):
    """Lookups that need a token while none is kept wait for one fetch; after it, no
    lookup goes to a thread."""
    run = Blocking(auto=False)
    backend = make_backend(clock, agent, tmp_path, run=run)
    calls = [backend.router_networks("r1"), backend.router_networks("r2")]
    calls.append(backend.ports_by_ip(("net-a",), "10.0.0.5"))
    assert run.runs == 1 and not any(d.called for d in calls)
    run.run()
    agent.flush()
    assert [d.result for d in calls[:2]] == [("net-a",), ("net-b", "net-c")]
    assert calls[2].result[0].device_id == "vm-a"
    result(agent, backend.router_networks("r1"))
    assert run.runs == 1 and len(cloud.keystone_requests()) == 1


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


def test_slow_neutron_fails_at_the_timeout(clock, agent, cloud, tmp_path):
    """The stated bound: a lookup call ends within [neutron] timeout."""
    backend = make_backend(clock, agent, tmp_path, timeout=3.0)
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


def test_slow_keystone_counts_against_the_same_timeout(clock, agent, cloud, tmp_path):
    """The token's fetch, on its thread, has not ended: the lookup ends at the bound."""
    run = Blocking(auto=False)
    backend = make_backend(clock, agent, tmp_path, timeout=3.0, run=run)
    d = backend.ports_by_mac(("net-c",), "fa:16:3e:11:22:33")
    agent.flush()
    clock.advance(2.9)
    assert not d.called and run.pending == 1
    clock.advance(0.1)
    error = failure(agent, d)
    assert str(error) == (
        f"no answer within 3 s ([neutron] timeout) while waiting for a token from "
        f"Keystone at {KEYSTONE}"
    )
    assert cloud.neutron_requests() == []


def test_keystone_down_names_keystone(agent, cloud, backend):
    cloud.keystone_fault = 503
    error = failure(agent, backend.router_networks("r1"))
    assert isinstance(error, LookupUnavailable)
    assert str(error) == f"Keystone at {KEYSTONE} answered HTTP 503: injected fault"


def test_unreachable_neutron_says_how(clock, cloud, tmp_path):
    """A refused connection is reported with its cause, not a traceback."""

    class Refusing:
        def request(self, method, uri, headers=None, bodyProducer=None):
            return fail(ConnectionRefusedError("Connection refused"))

    backend = make_backend(clock, Refusing(), tmp_path)
    d = backend.router_networks("r1")
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
        f"Neutron API lookups: token from Keystone at {KEYSTONE}; ports at {PORTS}"
    ]


def test_start_with_bad_credentials_logs_without_the_password(
    clock, agent, cloud, logged, tmp_path
):
    cloud.password = "something-else"
    backend = make_backend(clock, agent, tmp_path)
    backend.start()
    agent.flush()
    [line] = text_of(logged)
    assert line.startswith(
        f"Neutron API lookups: no token yet (Keystone at {KEYSTONE} refused the "
        "credentials (HTTP 401"
    )
    assert PASSWORD not in line and not any(t in line for t in cloud.tokens)


def test_stop_closes_the_pool(clock, agent, tmp_path):
    closed = []

    class Pool:
        def closeCachedConnections(self):
            closed.append(True)
            return "closed"

    assert make_backend(clock, agent, tmp_path, pool=Pool()).stop() == "closed"
    assert closed == [True]


def settings_from(tmp_path, neutron: str):
    """load_settings on a file: [metaproxy] lookup_backend = neutron_api and C{neutron}."""
    from metaproxy.config import load_settings

    path = tmp_path / "metadata_agent.ini"
    path.write_text(
        # a short state_path: the socket paths derived from it are checked, not made
        "[DEFAULT]\nstate_path = /tmp/mpn\n[metaproxy]\nlookup_backend = neutron_api\n" + neutron
    )
    return load_settings([str(path)], [])


def test_built_from_settings_with_a_ca_file(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    settings = settings_from(
        tmp_path,
        PASSWORD_SECTION.replace(KEYSTONE, "https://keystone.example:5000")
        + f"cafile = {tmp_path / 'ca.pem'}\nregion_name = R9\n",
    )
    built = backends.build_backend(Clock(), settings)
    assert isinstance(built, NeutronApiBackend)
    assert backends.describe_backend(built) == (
        "Neutron API at the catalog's network endpoint (internal, public, region R9), "
        "tokens from Keystone at https://keystone.example:5000"
    )


def test_bad_ca_file_is_a_backend_error(tmp_path):
    (tmp_path / "ca.pem").write_text("not a certificate")
    settings = settings_from(tmp_path, PASSWORD_SECTION + f"cafile = {tmp_path / 'ca.pem'}\n")
    with pytest.raises(backends.BackendError, match=r"^\[neutron\] cafile: CA file .* holds no"):
        backends.build_backend(Clock(), settings)


def test_a_neutron_section_gone_since_the_check_is_a_backend_error(tmp_path):
    """The builder reads the files again with keystoneauth: a section emptied meanwhile
    is refused with the check's own message."""
    settings = settings_from(tmp_path, PASSWORD_SECTION)
    (tmp_path / "metadata_agent.ini").write_text("[neutron]\nauth_type = password\n")
    with pytest.raises(
        backends.BackendError, match=r"\[neutron\] auth_url = .*needs Keystone's URL"
    ):
        backends.build_backend(Clock(), settings)


# --- TLS: the port queries use the session's CA and client certificate ----------------


async def _lookup_over_tls(tmp_path, requests_mock, *, client_certificate: bool):
    """router_networks("r2") through a backend built from [neutron] with cafile (and
    certfile/keyfile), against the fake Neutron behind TLS that requires a client
    certificate from the same CA; keystoneauth's fetch on the real reactor's pool."""
    import trustme
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from OpenSSL.crypto import X509
    from twisted.internet import reactor
    from twisted.internet.ssl import CertificateOptions
    from twisted.web.server import Site

    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    client_cert = ca.issue_cert("metaproxy.client.example")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client_cert.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    cloud = FakeCloud(neutron_ports(TABLE), wall_clock(), password=PASSWORD)
    serve_keystone(cloud, requests_mock)
    tls = CertificateOptions(
        privateKey=load_pem_private_key(server_cert.private_key_pem.bytes(), None),
        certificate=x509.load_pem_x509_certificate(server_cert.cert_chain_pems[0].bytes()),
        verify=True,
        caCerts=[X509.from_cryptography(x509.load_pem_x509_certificate(ca.cert_pem.bytes()))],
        requireCertificate=True,
    )
    site = Site(cloud_resource(cloud))
    site.noisy = False
    port = reactor.listenSSL(0, site, tls, interface="127.0.0.1")
    backend = None
    try:
        url = f"https://127.0.0.1:{port.getHost().port}/network"
        section = PASSWORD_SECTION + f"endpoint_override = {url}\ncafile = {tmp_path / 'ca.pem'}\n"
        if client_certificate:
            section += (
                f"certfile = {tmp_path / 'client.pem'}\nkeyfile = {tmp_path / 'client.key'}\n"
            )
        backend = backends.build_backend(reactor, settings_from(tmp_path, section))
        return await backend.router_networks("r2")
    finally:
        if backend is not None:
            await backend.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_port_queries_present_the_client_certificate_and_verify_with_the_ca(
    tmp_path, requests_mock
):
    """[neutron] cafile, certfile and keyfile, as keystoneauth's session holds them, are
    the port queries' TLS too."""
    networks = await _lookup_over_tls(tmp_path, requests_mock, client_certificate=True)
    assert networks == ("net-b", "net-c")


@pytest_twisted.ensureDeferred
async def test_without_the_client_certificate_that_neutron_is_refused(tmp_path, requests_mock):
    """The counterpart: the same Neutron refuses the handshake without certfile."""
    with pytest.raises(LookupUnavailable, match="certificate required"):
        await _lookup_over_tls(tmp_path, requests_mock, client_certificate=False)


@pytest.mark.parametrize(
    "verify, cert, expected",
    [
        (True, None, (None, False, None, None)),
        (False, None, (None, True, None, None)),
        ("/ca.pem", ("/c.pem", "/c.key"), ("/ca.pem", False, "/c.pem", "/c.key")),
        # requests' cert=<path>: one file holding the certificate and its key
        ("/ca.pem", "/both.pem", ("/ca.pem", False, "/both.pem", "/both.pem")),
    ],
)
def test_session_tls_reads_the_session_as_requests_does(verify, cert, expected):
    class Session:
        pass

    session = Session()
    session.verify, session.cert = verify, cert
    assert session_tls(session) == expected
