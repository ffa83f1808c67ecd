"""[neutron]: keystoneauth's option names for lookup_backend = neutron_api, and the start-up
checks naming the file, the option and the fix."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from metaproxy.config import ConfigError, load_settings

PASSWORD = "Keyst0ne-Pa55"
APP_SECRET = "app-cred-S3cret"

GOOD_PASSWORD = f"""
    [metaproxy]
    lookup_backend = neutron_api
    [neutron]
    auth_type = password
    auth_url = http://keystone.example:5000/v3
    username = metaproxy
    password = {PASSWORD}
    user_domain_name = Default
    project_name = service
    project_domain_name = Default
"""


@pytest.fixture
def state():
    path = Path(tempfile.mkdtemp(prefix="mpn", dir="/tmp"))
    yield path
    shutil.rmtree(path)


def load(state: Path, text: str):
    path = state / "metadata_agent.ini"
    lines = "".join(line.strip() + "\n" for line in text.splitlines())
    path.write_text(f"[DEFAULT]\nstate_path = {state}\n" + lines)
    return load_settings([str(path)], [])


def error(state: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(state, text)
    return str(info.value)


def test_password_options_are_read_into_neutron_fields(state):
    """Every keystoneauth option lands in its neutron_ field; secrets stay out of repr."""
    s = load(
        state,
        GOOD_PASSWORD
        + """
        region_name = RegionTwo
        valid_interfaces = public, admin
        endpoint_override = https://neutron.example:9696
        insecure = true
        timeout = 2.5
    """,
    )
    assert (s.lookup_backend, s.neutron_auth_type) == ("neutron_api", "password")
    assert s.neutron_auth_url == "http://keystone.example:5000/v3"
    assert (s.neutron_username, s.neutron_password) == ("metaproxy", PASSWORD)
    assert (s.neutron_user_domain_name, s.neutron_project_name, s.neutron_project_domain_name) == (
        "Default",
        "service",
        "Default",
    )
    assert s.neutron_region_name == "RegionTwo"
    assert s.neutron_valid_interfaces == ("public", "admin")
    assert s.neutron_endpoint_override == "https://neutron.example:9696"
    assert (s.neutron_insecure, s.neutron_timeout, s.neutron_service_type) == (True, 2.5, "network")
    assert PASSWORD not in repr(s)


def test_defaults_are_keystoneauths():
    """valid_interfaces defaults to internal, public (keystoneauth's order)."""
    from metaproxy.config import default_settings

    s = default_settings()
    assert s.neutron_valid_interfaces == ("internal", "public")
    assert (s.neutron_auth_type, s.neutron_auth_url, s.neutron_insecure) == (None, None, False)


def test_application_credential_needs_no_user_or_project(state):
    s = load(
        state,
        f"""
        [metaproxy]
        lookup_backend = neutron_api
        [neutron]
        auth_type = v3applicationcredential
        auth_url = https://keystone.example:5000
        application_credential_id = 0123abcd
        application_credential_secret = {APP_SECRET}
    """,
    )
    assert (s.neutron_application_credential_id, s.neutron_application_credential_secret) == (
        "0123abcd",
        APP_SECRET,
    )
    assert APP_SECRET not in repr(s)


def test_neutron_section_is_not_checked_for_the_table_backend(state):
    """Without lookup_backend = neutron_api an empty [neutron] section is fine."""
    (state / "metaproxy").mkdir()
    (state / "metaproxy" / "ports.json").write_text("{}")
    assert load(state, "[neutron]\nauth_type = password\n").neutron_username is None


@pytest.mark.parametrize(
    "drop, option, fix",
    [
        ("auth_type = password", "auth_type", "set [neutron] auth_type = password"),
        ("auth_url = http://keystone.example:5000/v3", "auth_url", "set [neutron] auth_url"),
        ("username = metaproxy", "username", "set [neutron] username"),
        (f"password = {PASSWORD}", "password", "set [neutron] password"),
        ("user_domain_name = Default", "user_domain_name", "or user_domain_id"),
        ("project_name = service", "project_name", "or project_id"),
        ("project_domain_name = Default", "project_domain_name", "or project_domain_id"),
    ],
)
def test_missing_credentials_name_the_option_and_the_fix(state, drop, option, fix):
    message = error(state, GOOD_PASSWORD.replace(drop, ""))
    assert f"[neutron] {option} = " in message
    assert "lookup_backend = neutron_api" in message
    assert fix in message
    assert PASSWORD not in message


def test_application_credential_secret_missing(state):
    message = error(
        state,
        """
        [metaproxy]
        lookup_backend = neutron_api
        [neutron]
        auth_type = v3applicationcredential
        auth_url = http://k:5000/v3
        application_credential_id = abc
    """,
    )
    assert "[neutron] application_credential_secret" in message
    assert "Fix: set [neutron] application_credential_secret" in message


@pytest.mark.parametrize(
    "line, option, words",
    [
        ("auth_url = keystone.example:5000", "auth_url", "http:// or https:// URL"),
        ("auth_url = http://k:5000/v2.0", "auth_url", "v3 API only"),
        ("valid_interfaces = internal, private", "valid_interfaces", "'private'"),
        ("endpoint_override = neutron:9696", "endpoint_override", "http:// or https:// URL"),
        ("cafile = /nonexistent/ca.pem", "cafile", "does not exist"),
    ],
)
def test_bad_values_are_reported_with_the_file(state, line, option, words):
    message = error(state, GOOD_PASSWORD + line + "\n")
    assert message.startswith(f"{state / 'metadata_agent.ini'}: [neutron] {option} = ")
    assert words in message
    assert "Fix:" in message


def test_bad_password_value_is_hidden(state):
    """A password never appears in a message, even when it is the option at fault."""
    message = error(state, GOOD_PASSWORD.replace(f"password = {PASSWORD}", "password ="))
    assert "[neutron] password = (value hidden)" in message


def test_readme_example_loads(state):
    """The README's complete [neutron] example is a working configuration."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    start = readme.index("[metaproxy]\nlookup_backend = neutron_api\n")
    example = readme[start : readme.index("```", start)]
    ca = state / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = load(state, example.replace("/etc/ssl/certs/openstack-ca.pem", str(ca)))
    assert (s.lookup_backend, s.neutron_auth_type, s.neutron_username) == (
        "neutron_api",
        "password",
        "metaproxy",
    )
    assert s.neutron_valid_interfaces == ("internal", "public")
    assert (s.neutron_timeout, s.cache_enabled, s.cache_expiration_time) == (5.0, True, 60)
    assert s.neutron_cafile == str(ca)
