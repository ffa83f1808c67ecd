"""metaproxy.neutron.keystone: the v3 token request and answer, the catalog, and the session that
keeps one token (cached, renewed before expiry, once after a 401, renewals coalesced)."""

from __future__ import annotations

import json

import pytest
from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.internet.task import Clock

from bench.fakes.neutron.cloud import FakeCloud, cloud_resource
from metaproxy.neutron.keystone import (
    RENEW_BEFORE,
    Credentials,
    KeystoneError,
    KeystoneSession,
    KeystoneUnavailable,
    find_endpoint,
    parse_token,
    token_request_body,
    tokens_url,
)

PASSWORD = "Pa55-w0rd-never-logged"
NOW = 1_700_000_000.0
URL = "http://cloud.test/identity/v3"
CREDS = Credentials(
    "password",
    URL,
    username="metaproxy",
    password=PASSWORD,
    user_domain_name="Default",
    project_name="service",
    project_domain_name="Default",
)


def keystone_answer(expires_at: str, catalog=()) -> bytes:
    return json.dumps(
        {"token": {"methods": ["password"], "expires_at": expires_at, "catalog": list(catalog)}}
    ).encode()


@pytest.mark.parametrize(
    "auth_url, url",
    [
        ("http://k:5000/v3", "http://k:5000/v3/auth/tokens"),
        ("http://k:5000/v3/", "http://k:5000/v3/auth/tokens"),
        ("https://k/identity", "https://k/identity/v3/auth/tokens"),
        ("https://k:5000/", "https://k:5000/v3/auth/tokens"),
    ],
)
def test_tokens_url(auth_url, url):
    assert tokens_url(auth_url) == url


def test_password_body_is_keystones_project_scoped_shape():
    assert token_request_body(CREDS) == {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": "metaproxy",
                        "password": PASSWORD,
                        "domain": {"name": "Default"},
                    }
                },
            },
            "scope": {"project": {"name": "service", "domain": {"name": "Default"}}},
        }
    }


def test_password_body_with_ids():
    creds = Credentials(
        "password", URL, username="u", password="p", user_domain_id="d1", project_id="p-123"
    )
    body = token_request_body(creds)["auth"]
    assert body["identity"]["password"]["user"]["domain"] == {"id": "d1"}
    assert body["scope"] == {"project": {"id": "p-123"}}


def test_application_credential_body_has_no_scope():
    creds = Credentials(
        "v3applicationcredential",
        URL,
        application_credential_id="ac1",
        application_credential_secret="s3",
    )
    assert token_request_body(creds) == {
        "auth": {
            "identity": {
                "methods": ["application_credential"],
                "application_credential": {"id": "ac1", "secret": "s3"},
            }
        }
    }


def test_credentials_repr_hides_secrets():
    creds = Credentials(
        "v3applicationcredential",
        URL,
        password=PASSWORD,
        application_credential_secret="app-secret",
    )
    assert PASSWORD not in repr(creds) and "app-secret" not in repr(creds)


def test_token_renewed_two_minutes_before_expiry():
    token = parse_token(201, "tok", keystone_answer("2023-11-14T23:13:20.000000Z"), NOW)
    # 2023-11-14T22:13:20Z is NOW: a one-hour token
    assert token.expires_at == NOW + 3600
    assert token.renew_at == NOW + 3600 - RENEW_BEFORE
    assert "tok" not in repr(token)


def test_short_token_renewed_half_way_and_skewed_one_kept_ten_seconds():
    short = parse_token(201, "t", keystone_answer("2023-11-14T22:15:20+00:00"), NOW)
    assert short.renew_at == NOW + 60
    past = parse_token(201, "t", keystone_answer("2023-11-14T21:00:00Z"), NOW)
    assert past.renew_at == NOW + 10


@pytest.mark.parametrize(
    "status, header, body, words",
    [
        (
            401,
            None,
            b'{"error": {"message": "The request you have made requires authentication."}}',
            "refused the credentials (HTTP 401: The request you have made requires authentication.)",  # noqa: E501
        ),
        (503, None, b"<html>down</html>", "answered HTTP 503"),
        (201, None, keystone_answer("2023-11-14T23:13:20Z"), "without an X-Subject-Token"),
        (201, "t", b"not json", "without a JSON token object"),
        (201, "t", keystone_answer("tomorrow"), "'tomorrow' is not an ISO 8601 time"),
        (
            201,
            "t",
            b'{"token": {"expires_at": "2023-11-14T23:13:20Z", "catalog": {}}}',
            "catalog is not a list",
        ),
    ],
)
def test_unusable_answers_say_why(status, header, body, words):
    with pytest.raises(KeystoneError) as info:
        parse_token(status, header, body, NOW)
    assert words in str(info.value)


CATALOG = [
    {
        "type": "identity",
        "endpoints": [{"interface": "internal", "region_id": "R1", "url": "http://k/identity"}],
    },
    {
        "type": "network",
        "endpoints": [
            {"interface": "public", "region_id": "R1", "region": "R1", "url": "http://pub-r1"},
            {"interface": "internal", "region_id": "R1", "region": "R1", "url": "http://int-r1"},
            {"interface": "internal", "region_id": "R2", "region": "R2", "url": "http://int-r2"},
            {"interface": "admin", "region_id": "R2", "region": "R2", "url": "http://adm-r2"},
        ],
    },
]


@pytest.mark.parametrize(
    "interfaces, region, url",
    [
        (("internal", "public"), None, "http://int-r1"),
        (("public", "internal"), None, "http://pub-r1"),
        (("internal", "public"), "R2", "http://int-r2"),
        (("public", "internal"), "R2", "http://int-r2"),
        (("adminURL",), None, "http://adm-r2"),
    ],
)
def test_endpoint_by_interface_preference_and_region(interfaces, region, url):
    assert find_endpoint(CATALOG, "network", interfaces, region) == url


def test_missing_endpoint_lists_what_the_catalog_has():
    with pytest.raises(KeystoneError) as info:
        find_endpoint(CATALOG, "network", ("public",), "R2")
    assert str(info.value).startswith(
        "the catalog has no 'network' endpoint with interface public in region R2 (it has: "
        "public in R1, internal in R1, internal in R2, admin in R2)"
    )
    assert "endpoint_override" in str(info.value)


# --- the session, against the fake Keystone -----------------------------------------


@pytest.fixture
def clock():
    c = Clock()
    c.advance(NOW)
    return c


@pytest.fixture
def cloud(clock):
    return FakeCloud([], clock, password=PASSWORD)


@pytest.fixture
def agent(cloud):
    return RequestTraversalAgent(cloud_resource(cloud))


def session(clock, agent, creds=CREDS, timeout=5.0):
    return KeystoneSession(clock, HTTPClient(agent), creds, timeout=timeout)


def test_token_is_fetched_once_and_kept(clock, agent, cloud):
    s = session(clock, agent)
    first = s.token()
    agent.flush()
    token = first.result
    assert token.value in cloud.tokens
    assert s.token().result is token
    clock.advance(3600 - RENEW_BEFORE - 1)
    assert s.token().result is token
    assert len(cloud.keystone_requests()) == 1
    sent = cloud.keystone_requests()[0].body
    assert sent == token_request_body(CREDS)


def test_token_renewed_before_expiry(clock, agent, cloud):
    s = session(clock, agent)
    d = s.token()
    agent.flush()
    old = d.result
    clock.advance(3600 - RENEW_BEFORE)
    d = s.token()
    agent.flush()
    assert d.result is not old and d.result.value != old.value
    assert len(cloud.keystone_requests()) == 2


def test_concurrent_renewals_coalesce_into_one_request(clock, agent, cloud):
    cloud.keystone_fault = "hold"
    s = session(clock, agent)
    waiting = [s.token() for _ in range(10)]
    agent.flush()
    assert all(not d.called for d in waiting)
    assert cloud.release() == 1
    agent.flush()
    assert len({d.result.value for d in waiting}) == 1
    assert len(cloud.keystone_requests()) == 1
    assert s.fetches == 1


def test_invalidate_forgets_only_the_refused_token(clock, agent, cloud):
    s = session(clock, agent)
    d = s.token()
    agent.flush()
    old = d.result
    s.invalidate(old)
    d = s.token()
    agent.flush()
    new = d.result
    s.invalidate(old)  # a second caller's 401 on the old token: the new one stays
    assert s.token().result is new
    assert len(cloud.keystone_requests()) == 2


def test_cancelling_one_waiter_leaves_the_fetch_to_the_others(clock, agent, cloud):
    s = session(clock, agent)
    a, b = s.token(), s.token()
    a.cancel()
    a.addErrback(lambda f: None)
    agent.flush()
    assert b.result.value in cloud.tokens


def test_wrong_password_fails_naming_keystone_never_the_password(clock, agent, cloud):
    s = session(
        clock,
        agent,
        Credentials(
            "password",
            URL,
            username="metaproxy",
            password="wrong-" + PASSWORD,
            user_domain_name="Default",
            project_name="service",
            project_domain_name="Default",
        ),
    )
    d = s.token()
    agent.flush()
    error = d.result.value
    d.addErrback(lambda f: None)
    assert isinstance(error, KeystoneUnavailable)
    assert str(error).startswith(f"Keystone at {URL}/auth/tokens refused the credentials (HTTP 401")
    assert PASSWORD not in str(error)
    assert s.failures == 1 and s.current is None


def test_keystone_down_is_reported_and_retried_next_time(clock, agent, cloud):
    cloud.keystone_fault = 503
    s = session(clock, agent)
    d = s.token()
    agent.flush()
    assert "answered HTTP 503" in str(d.result.value)
    d.addErrback(lambda f: None)
    cloud.keystone_fault = None
    d = s.token()
    agent.flush()
    assert d.result.value in cloud.tokens


def test_slow_keystone_fails_after_the_timeout(clock, agent, cloud):
    """The stated bound: a token request ends at [neutron] timeout."""
    cloud.keystone_fault = "hang"
    s = session(clock, agent, timeout=4.0)
    d = s.token()
    agent.flush()
    clock.advance(3.9)
    assert not d.called
    clock.advance(0.1)
    agent.flush()
    assert str(d.result.value) == (
        f"Keystone at {URL}/auth/tokens did not answer within 4 s ([neutron] timeout)"
    )
    d.addErrback(lambda f: None)


def test_application_credential_accepted(clock, agent, cloud):
    cloud.application_credential = ("ac1", "ac-secret")
    s = session(
        clock,
        agent,
        Credentials(
            "v3applicationcredential",
            URL,
            application_credential_id="ac1",
            application_credential_secret="ac-secret",
        ),
    )
    d = s.token()
    agent.flush()
    assert d.result.value in cloud.tokens
