"""[neutron]: read by keystoneauth1 as nova.conf's section is, for lookup_backend =
neutron_api; its plugin-independent options in Settings, the plugin's read by keystoneauth
(auth_section too), and the start-up checks naming the file, the section, the option and
the fix."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from metaproxy.config import ConfigError, load_settings
from metaproxy.config.errors import Sources
from metaproxy.config.keystone import load_keystone
from metaproxy.config.load import read_conf

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


def keystone_of(state: Path):
    """What keystoneauth loads from the file L{load} wrote."""
    path = str(state / "metadata_agent.ini")
    return load_keystone(read_conf([path]), Sources((path,)))


def test_password_options_are_read_into_neutron_fields(state):
    """keystoneauth's session and adapter options land in their neutron_ fields; the
    plugin's (auth_url, user, project) are keystoneauth's; secrets stay out of reprs."""
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
    assert s.neutron_region_name == "RegionTwo"
    assert s.neutron_valid_interfaces == ("public", "admin")
    assert s.neutron_endpoint_override == "https://neutron.example:9696"
    assert (s.neutron_insecure, s.neutron_timeout, s.neutron_service_type) == (True, 2.5, "network")
    assert PASSWORD not in repr(s)
    keystone = keystone_of(state)
    assert (keystone.auth_type, keystone.section, keystone.timeout) == ("password", "neutron", 2.5)
    assert keystone.auth_url == "http://keystone.example:5000/v3"
    plugin = keystone.auth.get_cache_id_elements()
    assert (plugin["username"], plugin["password"], plugin["user_domain_name"]) == (
        "metaproxy",
        PASSWORD,
        "Default",
    )
    assert (plugin["project_name"], plugin["project_domain_name"]) == ("service", "Default")
    adapter = keystone.adapter
    assert (adapter.service_type, adapter.interface, adapter.region_name) == (
        "network",
        ["public", "admin"],
        "RegionTwo",
    )
    assert adapter.endpoint_override == "https://neutron.example:9696"
    assert (keystone.session.verify, keystone.session.timeout) == (False, 2.5)
    assert PASSWORD not in repr(keystone)


def test_defaults_are_nova_and_keystoneauths():
    """valid_interfaces defaults to internal, public and service_type to network (nova's
    defaults for Neutron); timeout to 5 s."""
    from metaproxy.config import default_settings

    s = default_settings()
    assert s.neutron_valid_interfaces == ("internal", "public")
    assert (s.neutron_auth_type, s.neutron_auth_section, s.neutron_insecure) == (None, None, False)
    assert (s.neutron_service_type, s.neutron_timeout) == ("network", 5.0)


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
    assert s.neutron_auth_type == "v3applicationcredential"
    assert APP_SECRET not in repr(s)
    [method] = keystone_of(state).auth.auth_methods
    assert (method.application_credential_id, method.application_credential_secret) == (
        "0123abcd",
        APP_SECRET,
    )


def test_auth_section_names_where_the_plugin_is_read(state):
    """nova.conf's [neutron] auth_section = keystone_authtoken: auth_type and the
    credentials come from there."""
    s = load(
        state,
        """
        [metaproxy]
        lookup_backend = neutron_api
        [neutron]
        auth_section = keystone_authtoken
        region_name = RegionOne
        """
        + GOOD_PASSWORD.replace("[neutron]", "[keystone_authtoken]").replace(
            "[metaproxy]\n    lookup_backend = neutron_api", ""
        ),
    )
    assert (s.neutron_auth_section, s.neutron_auth_type) == ("keystone_authtoken", None)
    keystone = keystone_of(state)
    assert (keystone.section, keystone.auth_type) == ("keystone_authtoken", "password")
    assert keystone.auth.get_cache_id_elements()["username"] == "metaproxy"


def test_auth_section_without_credentials_names_that_section(state):
    message = error(
        state,
        """
        [metaproxy]
        lookup_backend = neutron_api
        [neutron]
        auth_section = keystone_authtoken
        [keystone_authtoken]
        auth_type = password
        auth_url = http://keystone.example:5000/v3
        username = metaproxy
        user_domain_name = Default
        project_name = service
        project_domain_name = Default
    """,
    )
    assert message.startswith(
        "[keystone_authtoken] password = (value hidden) (default '<None>', not set in "
        f"{state / 'metadata_agent.ini'}): lookup_backend = neutron_api with auth_type = "
        "password needs the password"
    )
    assert "(read from [keystone_authtoken], which [neutron] auth_section names)" in message
    assert "Fix: set [keystone_authtoken] password." in message


def test_auth_section_without_auth_type_names_that_section(state):
    message = error(
        state,
        "[metaproxy]\nlookup_backend = neutron_api\n[neutron]\nauth_section = ks\n[ks]\n",
    )
    assert message.startswith("[ks] auth_type = None")
    assert "in [ks], which [neutron] auth_section names" in message
    assert "Fix: set [ks] auth_type = password" in message


def test_system_scope_is_a_scope(state):
    """system_scope = all instead of a project: a system-scoped token."""
    text = GOOD_PASSWORD.replace("project_name = service", "system_scope = all").replace(
        "project_domain_name = Default", ""
    )
    load(state, text)
    # the generic password plugin hands its scope to the v3 plugin it makes
    assert keystone_of(state).auth._system_scope == "all"


def test_unknown_auth_type_lists_keystoneauths_plugins(state):
    message = error(state, GOOD_PASSWORD.replace("auth_type = password", "auth_type = kerberos5"))
    assert "[neutron] auth_type = 'kerberos5'" in message
    assert "keystoneauth has no auth plugin 'kerberos5'" in message
    assert "v3applicationcredential" in message and "v3password" in message


def test_other_keystoneauth_plugins_load(state):
    """Whatever auth_type nova.conf holds: a token plugin, say."""
    load(
        state,
        """
        [metaproxy]
        lookup_backend = neutron_api
        [neutron]
        auth_type = v3token
        auth_url = http://keystone.example:5000/v3
        token = a-token
        project_id = p-1
    """,
    )
    assert keystone_of(state).auth_type == "v3token"


def test_neutron_section_is_not_checked_for_the_table_backend(state):
    """Without lookup_backend = neutron_api an empty [neutron] section is fine."""
    (state / "metaproxy").mkdir()
    (state / "metaproxy" / "ports.json").write_text("{}")
    assert load(state, "[neutron]\nauth_type = password\n").neutron_auth_type == "password"


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
        ("certfile = /nonexistent/client.pem", "certfile", "does not exist"),
        ("keyfile = /nonexistent/client.key", "keyfile", "certfile is not set"),
        ("version = 2.0\nmin_version = 2.0", "version", "mutually exclusive"),
        ("tls_min_version = 1.1", "tls_min_version", "one of 1.2, 1.3"),
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


def test_documented_example_loads(state):
    """The complete [neutron] example of docs/lookup-neutron-api.md is a working
    configuration."""
    page = (Path(__file__).resolve().parents[3] / "docs" / "lookup-neutron-api.md").read_text()
    start = page.index("[metaproxy]\nlookup_backend = neutron_api\n")
    example = page[start : page.index("```", start)]
    ca = state / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = load(state, example.replace("/etc/ssl/certs/openstack-ca.pem", str(ca)))
    assert (s.lookup_backend, s.neutron_auth_type) == ("neutron_api", "password")
    assert keystone_of(state).auth.get_cache_id_elements()["username"] == "metaproxy"
    assert s.neutron_valid_interfaces == ("internal", "public")
    assert (s.neutron_timeout, s.cache_enabled, s.cache_expiration_time) == (5.0, True, 60)
    assert s.neutron_cafile == str(ca)
