"""metaproxy.neutron.keystone: keystoneauth1, loaded from [neutron] as nova loads it,
against the fake Keystone of bench.fakes.neutron (requests-mock): what each auth plugin
sends, the token and endpoint kept in memory (no thread while it is good), renewal
before expiry and after a 401, one fetch for concurrent needs, failures that name
Keystone and never a secret, and the fetch kept off the reactor thread."""

from __future__ import annotations

import threading

import pytest
import pytest_twisted
import requests
from twisted.internet import reactor as global_reactor

from bench.fakes.neutron.cloud import FakeCloud
from metaproxy.neutron.keystone import (
    MIN_KEEP,
    RENEW_BEFORE,
    KeystoneSession,
    KeystoneUnavailable,
)
from tests.unit.neutron.fake_keystone import (
    APP_ID,
    APP_SECRET,
    BASE,
    KEYSTONE,
    PASSWORD,
    PASSWORD_SECTION,
    TOKENS,
    Blocking,
    load,
    serve_keystone,
    wall_clock,
)


@pytest.fixture
def clock():
    return wall_clock()


@pytest.fixture
def cloud(clock, requests_mock):
    cloud = FakeCloud([], clock, password=PASSWORD, application_credential=(APP_ID, APP_SECRET))
    serve_keystone(cloud, requests_mock)
    return cloud


def session(clock, tmp_path, section=PASSWORD_SECTION, extra="", run=None):
    keystone = load(tmp_path, section, extra)
    return KeystoneSession(
        clock,
        keystone.session,
        keystone.adapter,
        url=keystone.auth_url,
        timeout=keystone.timeout,
        run_blocking=run or Blocking(),
    )


def token_of(access):
    [token] = access.headers["X-Auth-Token"]
    return token


def sent(cloud):
    return [r.body["auth"] for r in cloud.keystone_requests()]


def failure_of(d):
    assert d.called, "no answer"
    error = d.result.value
    d.addErrback(lambda f: None)
    return error


# --- what each plugin asks Keystone ---------------------------------------------------


def test_password_gets_a_project_scoped_token_and_the_catalogs_endpoint(clock, tmp_path, cloud):
    access = session(clock, tmp_path).access().result
    assert token_of(access) in cloud.tokens
    assert access.endpoint == f"{BASE}/network"  # internal, before public
    [auth] = sent(cloud)
    assert auth["identity"] == {
        "methods": ["password"],
        "password": {
            "user": {"name": "metaproxy", "password": PASSWORD, "domain": {"name": "Default"}}
        },
    }
    assert auth["scope"] == {"project": {"name": "service", "domain": {"name": "Default"}}}
    assert PASSWORD not in repr(access)
    assert token_of(access) not in repr(access)


def test_application_credential_sends_only_the_credential(clock, tmp_path, cloud):
    section = (
        f"[neutron]\nauth_type = v3applicationcredential\nauth_url = {KEYSTONE}\n"
        f"application_credential_id = {APP_ID}\n"
        f"application_credential_secret = {APP_SECRET}\n"
    )
    access = session(clock, tmp_path, section).access().result
    assert token_of(access) in cloud.tokens
    [auth] = sent(cloud)
    assert auth == {
        "identity": {
            "methods": ["application_credential"],
            "application_credential": {"id": APP_ID, "secret": APP_SECRET},
        }
    }


def test_auth_section_reads_the_credentials_from_another_section(clock, tmp_path, cloud):
    """nova.conf's [neutron] auth_section = keystone_authtoken: the plugin and its
    options come from there; the adapter's options stay in [neutron]."""
    section = "[neutron]\nauth_section = keystone_authtoken\nvalid_interfaces = admin\n"
    extra = PASSWORD_SECTION.replace("[neutron]", "[keystone_authtoken]")
    access = session(clock, tmp_path, section, extra).access().result
    assert token_of(access) in cloud.tokens
    assert access.endpoint == f"{BASE}/network-admin"
    assert sent(cloud)[0]["identity"]["password"]["user"]["name"] == "metaproxy"


def test_system_scoped_token(clock, tmp_path, cloud):
    section = PASSWORD_SECTION.replace(
        "project_name = service\nproject_domain_name = Default\n", "system_scope = all\n"
    )
    access = session(clock, tmp_path, section).access().result
    assert token_of(access) in cloud.tokens
    assert sent(cloud)[0]["scope"] == {"system": {"all": True}}
    assert access.endpoint == f"{BASE}/network"


def test_endpoint_override_is_neutrons_url(clock, tmp_path, cloud):
    section = PASSWORD_SECTION + "endpoint_override = http://neutron.test:9696\n"
    access = session(clock, tmp_path, section).access().result
    assert access.endpoint == "http://neutron.test:9696"


def test_client_certificate_and_ca_reach_the_keystoneauth_session(tmp_path):
    """certfile/keyfile/cafile are keystoneauth's session options: its requests (the
    token's) present the certificate and verify with the CA."""
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("PEM\n")
    section = PASSWORD_SECTION + (
        f"cafile = {tmp_path / 'ca.pem'}\ncertfile = {tmp_path / 'client.pem'}\n"
        f"keyfile = {tmp_path / 'client.key'}\ntimeout = 4\n"
    )
    keystone = load(tmp_path, section)
    assert keystone.session.cert == (str(tmp_path / "client.pem"), str(tmp_path / "client.key"))
    assert keystone.session.verify == str(tmp_path / "ca.pem")
    assert keystone.session.timeout == 4.0


# --- kept, renewed, shared ------------------------------------------------------------


def test_token_is_kept_without_a_thread_until_keystoneauths_margin(clock, tmp_path, cloud):
    run = Blocking()
    s = session(clock, tmp_path, run=run)
    access = s.access().result
    assert s.access().result is access
    clock.advance(3600 - RENEW_BEFORE - 1)
    assert s.access().result is access
    assert run.runs == 1 and len(cloud.keystone_requests()) == 1
    clock.advance(1)  # now within two minutes of expiry
    renewed = s.access().result
    assert token_of(renewed) != token_of(access) and token_of(renewed) in cloud.tokens
    assert run.runs == 2 and len(cloud.keystone_requests()) == 2


def test_short_token_renewed_half_way_and_skewed_one_kept_ten_seconds(clock, tmp_path, cloud):
    cloud.token_lifetime = 120
    s = session(clock, tmp_path)
    assert s.access().result.renew_at == clock.seconds() + 60
    cloud.token_lifetime = -100  # expired already by our clock: Keystone's is skewed
    s = session(clock, tmp_path)
    assert s.access().result.renew_at == clock.seconds() + MIN_KEEP


def test_concurrent_needs_share_one_fetch(clock, tmp_path, cloud):
    run = Blocking(auto=False)
    s = session(clock, tmp_path, run=run)
    waiting = [s.access() for _ in range(10)]
    assert run.runs == 1 and not any(d.called for d in waiting)
    run.run()
    assert len({id(d.result) for d in waiting}) == 1
    assert len(cloud.keystone_requests()) == 1 and s.fetches == 1


def test_invalidate_forgets_only_the_refused_token(clock, tmp_path, cloud):
    s = session(clock, tmp_path)
    old = s.access().result
    s.invalidate(old)
    new = s.access().result
    assert token_of(new) != token_of(old)
    s.invalidate(old)  # a second caller's 401 on the old token: the new one stays
    assert s.access().result is new
    assert len(cloud.keystone_requests()) == 2


def test_cancelling_one_waiter_leaves_the_fetch_to_the_others(clock, tmp_path, cloud):
    run = Blocking(auto=False)
    s = session(clock, tmp_path, run=run)
    a, b = s.access(), s.access()
    a.cancel()
    a.addErrback(lambda f: None)
    run.run()
    assert token_of(b.result) in cloud.tokens


# --- failures: named, never a secret ---------------------------------------------------


def test_wrong_password_fails_naming_keystone_never_the_password(clock, tmp_path, cloud):
    cloud.password = "something-else"
    s = session(clock, tmp_path)
    error = failure_of(s.access())
    assert isinstance(error, KeystoneUnavailable)
    assert str(error) == (
        f"Keystone at {KEYSTONE} refused the credentials (HTTP 401: The request you have "
        "made requires authentication.); check [neutron] auth_type and its credentials"
    )
    assert PASSWORD not in str(error)
    assert s.failures == 1 and s.current is None


def test_keystone_down_is_reported_and_retried_next_time(clock, tmp_path, cloud):
    cloud.keystone_fault = 503
    s = session(clock, tmp_path)
    assert (
        str(failure_of(s.access())) == f"Keystone at {KEYSTONE} answered HTTP 503: injected fault"
    )
    cloud.keystone_fault = None
    assert token_of(s.access().result) in cloud.tokens


def test_unreachable_keystone_says_how(clock, tmp_path, requests_mock):
    requests_mock.get(KEYSTONE, exc=requests.exceptions.ConnectionError("Connection refused"))
    requests_mock.post(TOKENS, exc=requests.exceptions.ConnectionError("Connection refused"))
    error = failure_of(session(clock, tmp_path).access())
    # keystoneauth's password plugin asks for Keystone's versions first
    assert str(error) == (
        f"Keystone at {KEYSTONE} is unreachable (ConnectFailure: Unable to establish "
        f"connection to {KEYSTONE}; ConnectionError: Connection refused)"
    )


def test_keystone_too_slow_names_the_timeout(clock, tmp_path, cloud, requests_mock):
    requests_mock.post(TOKENS, exc=requests.exceptions.ReadTimeout("read timed out"))
    s = session(clock, tmp_path, PASSWORD_SECTION + "timeout = 4\n")
    assert str(failure_of(s.access())) == (
        f"Keystone at {KEYSTONE} did not answer within 4 s ([neutron] timeout)"
    )


def test_no_endpoint_in_region_lists_what_the_catalog_has(clock, tmp_path, cloud):
    s = session(clock, tmp_path, PASSWORD_SECTION + "region_name = RegionTwo\n")
    assert str(failure_of(s.access())) == (
        f"Keystone at {KEYSTONE}: the catalog has no 'network' endpoint with interface "
        "internal or public in region RegionTwo (it has: internal in RegionOne, public in "
        "RegionOne, admin in RegionOne); check [neutron] valid_interfaces and "
        "region_name, or set endpoint_override"
    )


def test_describe_endpoint(clock, tmp_path, cloud):
    s = session(clock, tmp_path, PASSWORD_SECTION + "region_name = R9\n")
    assert s.describe_endpoint() == "the catalog's network endpoint (internal, public, region R9)"


# --- off the reactor thread -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_fetch_runs_on_the_reactors_thread_pool(tmp_path, cloud):
    """Without run_blocking, keystoneauth's blocking calls run on a pool thread; the
    answer comes back on the reactor thread."""
    seen = []
    original = cloud.token_answer

    def token_answer(body):
        seen.append(threading.current_thread())
        return original(body)

    cloud.token_answer = token_answer
    keystone = load(tmp_path, PASSWORD_SECTION)
    s = KeystoneSession(
        global_reactor,
        keystone.session,
        keystone.adapter,
        url=keystone.auth_url,
        timeout=keystone.timeout,
    )
    access = await s.access()
    assert token_of(access) in cloud.tokens
    assert seen and seen[0] is not threading.main_thread()
    assert threading.current_thread() is threading.main_thread()
