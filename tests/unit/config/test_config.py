"""Configuration: upstream's names and defaults, file order, interpolation, and one clear
ConfigError (file, [section] option, value, fix) for every mistake."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import textwrap
from pathlib import Path

import attrs
import pytest
from oslo_config import cfg

from metaproxy import config
from metaproxy.config import (
    ConfigError,
    Settings,
    default_settings,
    list_opts,
    load_settings,
)
from metaproxy.config.doc import configuration_markdown, options_markdown, sample_config
from metaproxy.namespace import Namespace, NamespaceKind

SECRET = "s3cr3t-Sh4red-Value"
SAMPLE = Path(__file__).resolve().parents[3] / "etc" / "metadata_agent.ini.sample"


@pytest.fixture
def state():
    """A short state_path (socket paths stay well under 108 bytes) holding a port table."""
    path = Path(tempfile.mkdtemp(prefix="mp", dir="/tmp"))
    (path / "metaproxy").mkdir()
    (path / "metaproxy" / "ports.json").write_text("[]\n")
    yield path
    shutil.rmtree(path)


def write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def base(state: Path, extra: str = "") -> str:
    """A metadata_agent.ini setting state_path to the fixture's, plus C{extra}."""
    return write(state, "base.ini", f"[DEFAULT]\nstate_path = {state}\n" + textwrap.dedent(extra))


def error(config_files, config_dirs=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(list(config_files), list(config_dirs))
    return str(info.value)


# --- defaults and reading ---------------------------------------------------------

UPSTREAM_DEFAULTS = dict(
    metadata_proxy_user="",
    metadata_proxy_group="",
    metadata_proxy_socket_mode="deduce",
    metadata_backlog=4096,
    nova_metadata_host="127.0.0.1",
    nova_metadata_port=8775,
    nova_metadata_protocol="http",
    nova_metadata_insecure=False,
    auth_ca_cert=None,
    nova_client_cert="",
    nova_client_priv_key="",
    metadata_proxy_shared_secret="",
    rpc_response_max_timeout=600,
    host=socket.gethostname(),
    debug=False,
    transport_url=None,
    rpc_response_timeout=60,
    report_interval=30.0,
    log_agent_heartbeats=False,
    cache_enabled=False,
    cache_expiration_time=600,
    cache_backend="dogpile.cache.null",
)


def test_defaults_equal_upstream():
    """Without any file every [DEFAULT], [AGENT] and [cache] option has Neutron's default."""
    s = default_settings()
    assert {k: getattr(s, k) for k in UPSTREAM_DEFAULTS} == UPSTREAM_DEFAULTS
    assert s.state_path == "/var/lib/neutron"
    assert s.metadata_proxy_socket == "/var/lib/neutron/metadata_proxy"
    assert s.metadata_workers == (os.cpu_count() or 1) // 2
    assert s.socket_mode == 0o644
    assert s.nova_url == "http://127.0.0.1:8775"
    assert s.config_files == ()


def test_metaproxy_defaults():
    """The [metaproxy] section's defaults, with $state_path interpolated."""
    s = default_settings()
    assert (s.lookup_backend, s.lookup_table) == ("table", "/var/lib/neutron/metaproxy/ports.json")
    assert s.namespace_socket_dir == "/var/lib/neutron/metaproxy/ns"
    assert s.namespace_dir == "/var/lib/neutron/metaproxy/namespaces.d"
    assert s.control_socket == "/var/lib/neutron/metaproxy/control.sock"
    assert s.namespaces == ()
    assert (s.namespace_rescan_interval, s.nova_timeout, s.nova_connect_timeout) == (10, 28, 5)
    assert (s.nova_pool_size, s.nova_max_in_flight) == (200, 200)
    assert (s.max_header_bytes, s.max_headers, s.max_body_bytes) == (16384, 100, 65536)
    assert (s.request_timeout, s.retry_after, s.gzip_decode) == (30, 1, False)
    assert (s.router_namespaces, s.router_id_prefix) == ("off", "")


def test_router_namespaces_mode_is_read(state):
    path = base(state, "[metaproxy]\nrouter_namespaces = serve\nrouter_id_prefix = e2e1f-\n")
    s = load_settings([path], [])
    assert (s.router_namespaces, s.router_id_prefix) == ("serve", "e2e1f-")


def test_router_namespaces_mode_must_be_off_or_serve(state):
    message = error([base(state, "[metaproxy]\nrouter_namespaces = on\n")])
    assert "[metaproxy] router_namespaces" in message and "'on'" in message


def test_router_id_prefix_that_no_id_could_start_with_is_refused(state):
    message = error([base(state, "[metaproxy]\nrouter_id_prefix = -r/1\n")])
    assert "[metaproxy] router_id_prefix" in message
    assert "no qrouter- namespace could match it" in message and "Fix: use letters" in message


def test_load_with_defaults_only(state):
    """A file setting only state_path loads, and records the file it read."""
    path = base(state)
    s = load_settings([path], [])
    assert {k: getattr(s, k) for k in UPSTREAM_DEFAULTS} == UPSTREAM_DEFAULTS
    assert s.config_files == (path,)
    assert s.metadata_proxy_socket == f"{state}/metadata_proxy"


def test_uses_a_private_configopts(state):
    """load_settings never registers options on the global cfg.CONF."""
    load_settings([base(state)], [])
    assert "metadata_backlog" not in cfg.CONF
    assert "metaproxy" not in cfg.CONF


def test_second_file_overrides_first(state):
    """--config-file order: the later file wins, options only in the first stay."""
    first = base(
        state,
        """
        metadata_backlog = 100
        nova_metadata_port = 9000
        [metaproxy]
        nova_timeout = 10
    """,
    )
    second = write(
        state,
        "second.ini",
        """
        [DEFAULT]
        metadata_backlog = 200
    """,
    )
    s = load_settings([first, second], [])
    assert (s.metadata_backlog, s.nova_metadata_port, s.nova_timeout) == (200, 9000, 10.0)
    assert s.config_files == (first, second)


def test_config_dir_files_after_config_files(state):
    """--config-dir: its *.conf files, sorted, are read after the --config-file files."""
    confd = state / "conf.d"
    confd.mkdir()
    write(confd, "20-b.conf", "[DEFAULT]\nmetadata_backlog = 20\n")
    write(confd, "10-a.conf", "[DEFAULT]\nmetadata_backlog = 10\nnova_metadata_port = 1234\n")
    write(confd, "99-ignored.ini", "[DEFAULT]\nmetadata_backlog = 99\n")
    first = base(state, "metadata_backlog = 1\n")
    s = load_settings([first], [str(confd)])
    assert (s.metadata_backlog, s.nova_metadata_port) == (20, 1234)
    assert s.config_files == (first, str(confd / "10-a.conf"), str(confd / "20-b.conf"))


def test_state_path_interpolation(state):
    """$state_path reaches metadata_proxy_socket and the [metaproxy] paths, set or default."""
    path = base(
        state,
        """
        [metaproxy]
        namespace_dir = $state_path/decl
    """,
    )
    s = load_settings([path], [])
    assert s.metadata_proxy_socket == f"{state}/metadata_proxy"
    assert s.lookup_table == f"{state}/metaproxy/ports.json"
    assert s.namespace_socket_dir == f"{state}/metaproxy/ns"
    assert s.namespace_dir == f"{state}/decl"
    assert s.control_socket == f"{state}/metaproxy/control.sock"


def test_cache_and_agent_sections(state):
    """[cache] and [AGENT] are read (section names case-insensitive, as oslo.config)."""
    path = base(
        state,
        """
        [cache]
        enabled = true
        expiration_time = 30
        backend = oslo_cache.memcache_pool
        [agent]
        report_interval = 0
        log_agent_heartbeats = true
    """,
    )
    s = load_settings([path], [])
    assert (s.cache_enabled, s.cache_expiration_time, s.cache_backend) == (
        True,
        30,
        "oslo_cache.memcache_pool",
    )
    assert (s.report_interval, s.log_agent_heartbeats) == (0.0, True)


def test_metaproxy_section_values(state):
    """[metaproxy] values are converted, namespaces parsed (blanks and repeats dropped)."""
    path = base(
        state,
        """
        [metaproxy]
        namespaces = qrouter-r1, qdhcp-n1,, ovnmeta-n2, qrouter-r1
        gzip_decode = true
        max_body_bytes = 0
        retry_after = 5
    """,
    )
    s = load_settings([path], [])
    assert s.namespaces == (
        Namespace(NamespaceKind.ROUTER, "r1"),
        Namespace(NamespaceKind.NETWORK, "n1"),
        Namespace(NamespaceKind.OVN, "n2"),
    )
    assert (s.gzip_decode, s.max_body_bytes, s.retry_after) == (True, 0, 5)


def test_derived_values(state):
    """socket_mode follows the deduce rule; nova_url brackets an IPv6 literal."""
    path = base(
        state,
        f"""
        nova_metadata_host = fd00::5
        nova_metadata_protocol = https
        nova_metadata_port = 8443
        metadata_proxy_user = {os.geteuid() + 1}
        metadata_proxy_group = {os.getegid() + 1}
        metadata_workers = 0
    """,
    )
    s = load_settings([path], [])
    assert s.nova_url == "https://[fd00::5]:8443"
    assert s.socket_mode == 0o666
    assert s.metadata_workers == 0


def test_realistic_neutron_conf(state):
    """An operator's neutron.conf with many unrelated sections and options loads."""
    neutron = write(
        state,
        "neutron.conf",
        f"""
        [DEFAULT]
        core_plugin = ml2
        service_plugins = router,segments
        auth_strategy = keystone
        dhcp_agents_per_network = 2
        state_path = {state}
        transport_url = rabbit://openstack:RABBITPASS@ctl1:5672,openstack:RABBITPASS@ctl2:5672/
        debug = True
        host = net-node-01.example.com

        [agent]
        root_helper = sudo neutron-rootwrap /etc/neutron/rootwrap.conf
        report_interval = 15

        [database]
        connection = mysql+pymysql://neutron:DBPASS@ctl/neutron

        [keystone_authtoken]
        www_authenticate_uri = http://ctl:5000
        password = KSPASS
        memcached_servers = ctl1:11211,ctl2:11211

        [nova]
        auth_url = http://ctl:5000
        region_name = RegionOne

        [oslo_concurrency]
        lock_path = $state_path/lock

        [oslo_messaging_notifications]
        driver = messagingv2
    """,
    )
    ini = write(
        state,
        "metadata_agent.ini",
        f"""
        [DEFAULT]
        nova_metadata_host = nova-api.example.com
        metadata_proxy_shared_secret = {SECRET}
        metadata_workers = 4
        [cache]
        memcache_servers = ctl1:11211
        [ovs]
        ovsdb_connection = unix:/run/openvswitch/db.sock
    """,
    )
    s = load_settings([neutron, ini], [])
    assert s.host == "net-node-01.example.com"
    assert (s.debug, s.report_interval, s.metadata_workers) == (True, 15.0, 4)
    assert s.nova_url == "http://nova-api.example.com:8775"
    assert s.metadata_proxy_shared_secret == SECRET
    assert s.transport_url.startswith("rabbit://")
    assert "RABBITPASS" not in repr(s)


# --- errors: one message naming file, [section] option, value and fix -----------------


def assert_names(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, (part, message)
    assert "Fix:" in message
    assert "\n" not in message


def test_bad_int(state):
    """A non-integer names the file, the option, the value, the range and the default."""
    path = base(state, "metadata_backlog = lots\n")
    assert_names(
        error([path]),
        path,
        "[DEFAULT] metadata_backlog",
        "'lots'",
        "an integer >= 1",
        "remove the line to use the default 4096",
    )


def test_int_below_minimum(state):
    """An integer below the minimum is reported the same way."""
    path = base(state, "[metaproxy]\nmax_headers = 2\n")
    assert_names(error([path]), path, "[metaproxy] max_headers", "'2'", ">= 8", "default 100")


def test_bad_choice(state):
    """A value outside the choices lists the allowed values."""
    path = base(state, "nova_metadata_protocol = ftp\n")
    assert_names(
        error([path]), path, "[DEFAULT] nova_metadata_protocol", "'ftp'", "one of http, https"
    )


def test_bad_bool(state):
    """A value that is not a boolean says true or false."""
    path = base(state, "[cache]\nenabled = maybe\n")
    assert_names(error([path]), path, "[cache] enabled", "'maybe'", "true or false")


def test_bad_value_names_the_file_that_set_it(state):
    """The message names the last file that set the option, not an earlier one."""
    first = base(state, "metadata_backlog = 10\n")
    second = write(state, "second.ini", "[DEFAULT]\nmetadata_backlog = -3\n")
    message = error([first, second])
    assert_names(message, second, "[DEFAULT] metadata_backlog", "'-3'")
    assert first not in message


def test_bad_value_overridden_by_later_file_is_fine(state):
    """A bad value that a later file replaces is never read."""
    first = base(state, "metadata_backlog = lots\n")
    second = write(state, "second.ini", "[DEFAULT]\nmetadata_backlog = 10\n")
    assert load_settings([first, second], []).metadata_backlog == 10


def test_bad_substitution(state):
    """A $reference to nothing says how to write a literal $."""
    path = base(state, "[metaproxy]\nlookup_table = $nowhere/ports.json\n")
    assert_names(error([path]), path, "[metaproxy] lookup_table", "'$nowhere/ports.json'", "$$")


def test_missing_file(state):
    """A --config-file that does not exist is named."""
    missing = str(state / "nope.ini")
    assert_names(error([base(state), missing]), missing, "not found")


def test_missing_config_dir(state):
    """A --config-dir that does not exist is named."""
    missing = str(state / "nope.d")
    assert_names(error([base(state)], [missing]), missing, "--config-dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(state):
    """A file metaproxy may not read is named."""
    path = base(state)
    os.chmod(path, 0)
    assert_names(error([path]), path, "not readable")


def test_directory_as_config_file(state):
    """A directory given as --config-file is named."""
    assert_names(
        error([base(state), str(state / "metaproxy")]), f"{state}/metaproxy", "cannot be read"
    )


def test_undecodable_file(state):
    """A file that is not text is named."""
    path = state / "binary.ini"
    path.write_bytes(b"[DEFAULT]\nhost = \xff\xfe\n")
    assert_names(error([base(state), str(path)]), str(path), "UTF-8")


def test_syntax_error(state):
    """A line oslo.config cannot parse: file and line number, never the line itself."""
    path = write(state, "broken.ini", f"[DEFAULT]\nstate_path = {state}\nthis is not an option\n")
    assert_names(error([path]), path, "line 3", "No ':' or '=' found")


def test_syntax_error_in_section_header(state):
    """An unterminated section header is quoted (it cannot hold a password)."""
    path = write(state, "broken.ini", "[DEFAULT\nstate_path = /x\n")
    assert_names(error([path]), path, "line 1", "'[DEFAULT'")


def test_bad_namespace_entry(state):
    """A [metaproxy] namespaces entry Namespace.parse rejects is named."""
    path = base(state, "[metaproxy]\nnamespaces = qrouter-r1, qfoo-1\n")
    assert_names(error([path]), path, "[metaproxy] namespaces", "'qfoo-1'", "qdhcp-<network id>")


@pytest.mark.parametrize(
    "have, lack",
    [("nova_client_cert", "nova_client_priv_key"), ("nova_client_priv_key", "nova_client_cert")],
)
def test_half_configured_client_cert(state, have, lack):
    """With https, a client certificate without its key (or the reverse) is an error."""
    pem = write(state, "client.pem", "x")
    path = base(state, f"nova_metadata_protocol = https\n{have} = {pem}\n")
    assert_names(error([path]), path, f"[DEFAULT] {have}", pem, lack)


def test_half_client_cert_ignored_with_http(state):
    """With http the client certificate options are unused, as upstream."""
    path = base(state, "nova_client_cert = /nowhere.pem\n")
    assert load_settings([path], []).nova_client_cert == "/nowhere.pem"


def test_missing_certificate_files(state):
    """With https, cert, key and CA files must exist (the CA unless insecure)."""
    pem = write(state, "client.pem", "x")
    path = base(
        state,
        f"nova_metadata_protocol = https\nnova_client_cert = {pem}\n"
        f"nova_client_priv_key = {state}/key.pem\n",
    )
    assert_names(
        error([path]), path, "[DEFAULT] nova_client_priv_key", f"{state}/key.pem", "does not exist"
    )
    path = base(state, f"nova_metadata_protocol = https\nauth_ca_cert = {state}/ca.pem\n")
    assert_names(error([path]), path, "[DEFAULT] auth_ca_cert", "does not exist")
    path = base(
        state,
        f"nova_metadata_protocol = https\nauth_ca_cert = {state}/ca.pem\n"
        "nova_metadata_insecure = true\n",
    )
    assert load_settings([path], []).nova_metadata_insecure is True


def test_https_with_existing_files(state):
    """With https and existing files the settings load."""
    cert, key, ca = (write(state, n, "x") for n in ("c.pem", "k.pem", "ca.pem"))
    path = base(
        state,
        f"nova_metadata_protocol = https\nnova_client_cert = {cert}\n"
        f"nova_client_priv_key = {key}\nauth_ca_cert = {ca}\n",
    )
    s = load_settings([path], [])
    assert (s.nova_client_cert, s.nova_client_priv_key, s.auth_ca_cert) == (cert, key, ca)


def test_nova_timeout_must_be_below_haproxy(state):
    """[metaproxy] nova_timeout >= 32 (haproxy's timeout server) is an error."""
    path = base(state, "[metaproxy]\nnova_timeout = 32\n")
    assert_names(error([path]), path, "[metaproxy] nova_timeout", "'32'", "below 32")
    path = base(state, "[metaproxy]\nnova_timeout = 31.5\n")
    assert load_settings([path], []).nova_timeout == 31.5


def test_socket_path_too_long(state):
    """A metadata_proxy_socket over 97 bytes is an error (here through $state_path)."""
    deep = state / ("d" * 100)
    (deep / "metaproxy").mkdir(parents=True)
    (deep / "metaproxy" / "ports.json").write_text("[]")
    path = write(state, "long.ini", f"[DEFAULT]\nstate_path = {deep}\n")
    assert_names(
        error([path]),
        "[DEFAULT] metadata_proxy_socket",
        path,
        "97 bytes",
        "'$state_path/metadata_proxy'",
    )


def test_namespace_socket_dir_too_long(state):
    """namespace_socket_dir must leave room for <dir>/ovnmeta-<uuid>.sock in 97 bytes."""
    path = base(state, f"[metaproxy]\nnamespace_socket_dir = {state}/{'n' * 50}\n")
    assert_names(
        error([path]),
        path,
        "[metaproxy] namespace_socket_dir",
        "an OVN namespace's socket path",
        "97 bytes",
    )
    path = base(state, f"[metaproxy]\nnamespace_socket_dir = {state}/{'n' * 30}\n")
    assert load_settings([path], []).namespace_socket_dir == f"{state}/{'n' * 30}"


def test_declared_namespace_socket_too_long(state):
    """A declared namespace whose socket path would not fit is named."""
    long_id = "r" * 64
    path = base(
        state,
        f"[metaproxy]\nnamespace_socket_dir = {state}/{'n' * 20}\nnamespaces = qrouter-{long_id}\n",
    )
    assert_names(
        error([path]), path, "[metaproxy] namespace_socket_dir", f"qrouter-{long_id}'s socket path"
    )


def test_missing_lookup_table(state):
    """lookup_backend = table needs lookup_table to exist, even at its default."""
    (state / "metaproxy" / "ports.json").unlink()
    path = base(state)
    assert_names(
        error([path]),
        "[metaproxy] lookup_table",
        path,
        f"{state}/metaproxy/ports.json",
        "does not exist",
    )


# --- lookup_backend's default: rpc with a transport_url, table without ------------


def test_transport_url_makes_rpc_the_default_lookup(state):
    """An ML2/OVS node's own neutron.conf (transport_url) is enough: lookups go over RPC,
    and no port table is needed."""
    (state / "metaproxy" / "ports.json").unlink()
    path = base(state, "transport_url = rabbit://openstack:RABBITPASS@ctl:5672/\n")
    s = load_settings([path], [])
    assert s.lookup_backend == "rpc"


def test_explicit_table_wins_over_transport_url(state):
    path = base(
        state,
        "transport_url = rabbit://u:RABBITPASS@ctl:5672/\n[metaproxy]\nlookup_backend = table\n",
    )
    assert load_settings([path], []).lookup_backend == "table"


def test_no_transport_url_keeps_the_table(state):
    assert load_settings([base(state)], []).lookup_backend == "table"


def test_rpc_without_transport_url_names_the_fix(state):
    path = base(state, "[metaproxy]\nlookup_backend = rpc\n")
    assert_names(
        error([path]),
        path,
        "[metaproxy] lookup_backend",
        "transport_url is not set",
        "neutron.conf",
    )


# --- the secret ------------------------------------------------------------------


def test_secret_not_in_repr(state):
    """Neither the shared secret nor the transport URL is in repr(settings)."""
    path = base(
        state,
        f"metadata_proxy_shared_secret = {SECRET}\ntransport_url = rabbit://u:RABBITPASS@h//\n",
    )
    text = repr(load_settings([path], []))
    assert SECRET not in text and "RABBITPASS" not in text
    assert "metadata_proxy_shared_secret" not in text
    assert SECRET not in repr(default_settings(metadata_proxy_shared_secret=SECRET))


@pytest.mark.parametrize(
    "bad",
    [
        "metadata_backlog = lots\n",
        "[metaproxy]\nnamespaces = nope\n",
        "nova_metadata_protocol = https\nnova_client_cert = /x.pem\n",
        "[metaproxy]\nnova_timeout = 40\n",
    ],
)
def test_secret_not_in_errors(state, bad):
    """A bad value elsewhere in the file holding the secret never shows the secret."""
    path = base(state, f"metadata_proxy_shared_secret = {SECRET}\n" + bad)
    message = error([path])
    assert path in message
    assert SECRET not in message


def test_secret_with_bad_reference_is_hidden(state):
    """A $ in the secret that refers to nothing: named, value hidden."""
    path = base(state, f"metadata_proxy_shared_secret = {SECRET}$x\n")
    message = error([path])
    assert_names(message, path, "[DEFAULT] metadata_proxy_shared_secret", "(value hidden)", "$$")
    assert SECRET not in message


def test_secret_not_in_syntax_error(state):
    """A syntax error on the secret's line does not quote it."""
    path = write(state, "broken.ini", f"[DEFAULT]\n metadata_proxy_shared_secret {SECRET}\n")
    message = error([path])
    assert path in message and SECRET not in message


# --- default_settings, options and the sample --------------------------------------


def test_default_settings_overrides():
    """state_path flows into the paths; other overrides replace fields; derived follow."""
    s = default_settings(
        state_path="/srv/n",
        nova_metadata_host="::1",
        retry_after=3,
        metadata_proxy_user=str(os.geteuid() + 1),
        metadata_proxy_group=str(os.getegid() + 1),
    )
    assert (s.state_path, s.metadata_proxy_socket) == ("/srv/n", "/srv/n/metadata_proxy")
    assert s.lookup_table == "/srv/n/metaproxy/ports.json"
    assert (s.retry_after, s.nova_url, s.socket_mode) == (3, "http://[::1]:8775", 0o666)
    assert default_settings(nova_url="http://x:1", nova_metadata_port=2).nova_url == "http://x:1"
    with pytest.raises(TypeError):
        default_settings(no_such_field=1)


def test_settings_fields_are_the_options():
    """Settings has one field per option ([cache], [neutron] and [ovs] ones prefixed,
    [agent] extensions as agent_extensions) plus the derived ones."""
    names = {
        (f"{group}_" if group in ("cache", "neutron", "ovs") else "") + opt.dest
        for group, opts in list_opts()
        for opt in opts
    }
    names = (names - {"extensions"}) | {"agent_extensions"}
    assert {f.name for f in attrs.fields(Settings)} == names | {
        "ovn_agent_shape",
        "socket_mode",
        "nova_url",
        "nova_urls",
        "config_files",
        "log_path",
    }


def test_sample_lists_every_option():
    """Every registered option appears in the sample, under its section, with its default."""
    sample = sample_config()
    for group, opts in list_opts():
        assert f"[{group}]" in sample
        for opt in opts:
            assert f"\n#{opt.dest} =" in sample, opt.dest
    assert "#metadata_backlog = 4096\n" in sample
    assert "#lookup_table = $state_path/metaproxy/ports.json\n" in sample
    assert "one of http, https" in sample
    assert "#host = example.domain\n" in sample


def test_sample_file_is_current():
    """etc/metadata_agent.ini.sample is sample_config()'s output (regenerate with
    ``python -m metaproxy.config.doc sample > etc/metadata_agent.ini.sample``)."""
    assert SAMPLE.read_text() == sample_config()


def test_sample_loads_as_defaults(state):
    """The sample is a valid file whose commented options leave every default in place."""
    sample = write(state, "sample.ini", sample_config())
    s = load_settings([base(state), sample], [])
    assert attrs.evolve(s, config_files=()) == attrs.evolve(
        default_settings(state_path=str(state)), config_files=()
    )


def test_register_options_on_another_conf():
    """register_options works on any ConfigOpts (e.g. for a generator)."""
    conf = cfg.ConfigOpts()
    config.register_options(conf)
    conf(args=[], default_config_files=[], default_config_dirs=[])
    assert conf.metaproxy.nova_timeout == 28.0
    assert conf.AGENT.report_interval == 30.0
    assert conf.cache.backend == "dogpile.cache.null"


def test_configuration_reference_is_current():
    """docs/configuration.md is configuration_markdown()'s output (regenerate with
    ``python -m metaproxy.config.doc configuration > docs/configuration.md``)."""
    page = (Path(__file__).resolve().parents[3] / "docs" / "configuration.md").read_text()
    assert page == configuration_markdown()


def test_configuration_reference_has_a_table_row_for_every_option():
    """Every registered option has its row under its own section's heading; defaults as
    an operator knows them from Neutron's and metaproxy's documentation."""
    page = configuration_markdown()
    headings = [f"\n## `[{group}]`\n" for group, _ in list_opts()]
    for (group, opts), heading in zip(list_opts(), headings, strict=True):
        section = page[page.index(heading) + 1 :]
        if "\n## " in section:
            section = section[: section.index("\n## ")]
        for opt in opts:
            assert f"\n| `{opt.dest}` | `" in section, (group, opt.dest)
    for row in (
        "| `metadata_proxy_socket` | `$state_path/metadata_proxy` |",
        "| `metadata_backlog` | `4096` |",
        "| `report_interval` | `30` |",
        "| `nova_timeout` | `28` |",
        "| `ovn_sb_connection` | `tcp:127.0.0.1:6642` |",
    ):
        assert row in page, row
    assert "| `password` | `<None>` | User's password. Secret: never logged. |" in page
    assert options_markdown() in page


def test_metrics_listen_entry_is_checked_with_file_option_and_fix(state):
    path = base(state)
    with open(path, "a") as f:
        f.write("\n[metaproxy]\nmetrics_listen = 127.0.0.1:9180, localhost:80\n")
    with pytest.raises(ConfigError) as e:
        load_settings([path], [])
    message = str(e.value)
    assert path in message and "[metaproxy] metrics_listen" in message
    assert "'localhost:80' is not valid" in message and "Fix: write HOST:PORT" in message
