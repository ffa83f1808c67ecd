"""The sections of two lookup backends: C{[neutron]} (keystoneauth1's own options, for
C{lookup_backend = neutron_api}) and C{[ovn]} (the OVN metadata agent's Southbound
options, for C{lookup_backend = ovn}).
"""

from __future__ import annotations

from keystoneauth1 import loading
from oslo_config import cfg, types

__all__ = [
    "NEUTRON_DEFAULT_TIMEOUT",
    "NEUTRON_OPTS",
    "NEUTRON_PLUGIN_DOCS",
    "neutron_plugin_opts",
    "OVN_OPTS",
]

# [neutron]: read by keystoneauth1 exactly as nova.conf's [neutron] section is (for
# lookup_backend = neutron_api): its auth options (auth_type, auth_section), its session
# options and its adapter options, with nova's defaults for Neutron. The auth plugin's own
# options (auth_url, username, ...) depend on auth_type: keystoneauth registers them when
# it loads the plugin (L{metaproxy.config.keystone}); L{NEUTRON_PLUGIN_DOCS} lists the
# plugins whose options the sample and docs/configuration.md show.

#: The per-lookup bound when [neutron] timeout is unset.
NEUTRON_DEFAULT_TIMEOUT = 5

#: Plugins whose options the sample configuration and docs/configuration.md list.
NEUTRON_PLUGIN_DOCS = ("password", "v3applicationcredential")


def _neutron_opts() -> list[cfg.Opt]:
    """keystoneauth's options for [neutron], with nova's defaults for Neutron
    (service_type network; internal, then public endpoints) and metaproxy's use of
    C{timeout} said in its help. auth_type and auth_section stay exactly keystoneauth's:
    C{loading.register_auth_conf_options} registers them again when it reads
    auth_section."""
    opts = (
        loading.get_auth_common_conf_options()
        + loading.get_session_conf_options()
        + loading.get_adapter_conf_options(include_deprecated=False)
    )
    by_name = {opt.dest: opt for opt in opts}
    timeout = by_name["timeout"]
    timeout.default = NEUTRON_DEFAULT_TIMEOUT
    timeout.type = types.Float(min=0.1)
    timeout.help = (
        "Seconds each request to Keystone or Neutron may wait (keystoneauth's "
        "session timeout), and the bound of one lookup call, getting a token from "
        "Keystone included; then the instance gets 503 with Retry-After. Unset: 5 "
        "seconds (keystoneauth alone would wait without bound). A router namespace's "
        "lookup makes two calls."
    )
    # keystoneauth's help says the opposite ("Verify HTTPS connections.")
    by_name["insecure"].help = "With https, do not verify Keystone's and Neutron's certificates."
    by_name["service_type"].default = "network"
    by_name["valid_interfaces"].default = ["internal", "public"]
    return opts


NEUTRON_OPTS = _neutron_opts()


def neutron_plugin_opts(auth_type: str) -> list[cfg.Opt]:
    """The options keystoneauth reads for C{auth_type} (for the documentation)."""
    return loading.get_auth_plugin_conf_options(auth_type)


# [ovn]: the OVN metadata agent's Southbound options (neutron ovn_conf), same names and
# defaults; read when [metaproxy] lookup_backend = ovn.
OVN_OPTS = [
    cfg.StrOpt(
        "ovn_sb_connection",
        default="tcp:127.0.0.1:6642",
        help="The OVN Southbound database: tcp:IP:PORT, ssl:IP:PORT (needs "
        "ovn_sb_private_key, ovn_sb_certificate and ovn_sb_ca_cert) or unix:PATH; "
        "several, comma separated, are tried in turn.",
    ),
    cfg.StrOpt(
        "ovn_sb_private_key",
        default="",
        help="PEM private key for ssl: connections to the Southbound database.",
    ),
    cfg.StrOpt("ovn_sb_certificate", default="", help="PEM certificate of ovn_sb_private_key."),
    cfg.StrOpt(
        "ovn_sb_ca_cert",
        default="",
        help="PEM CA certificate that must have signed the database server's certificate.",
    ),
    cfg.IntOpt(
        "ovsdb_connection_timeout",
        default=180,
        min=1,
        help="Seconds to connect to the Southbound database and for each of its "
        "answers (the first full copy included).",
    ),
    cfg.IntOpt(
        "ovsdb_retry_max_interval",
        default=180,
        min=1,
        help="Longest wait, in seconds, between attempts to reconnect (the wait "
        "doubles from half a second up to this).",
    ),
    cfg.IntOpt(
        "ovsdb_probe_interval",
        default=60000,
        min=0,
        help="Milliseconds of silence from the database before an echo probe; "
        "when the probe is not answered within as long again the connection is "
        "re-established. 0 disables probing; other values below 1000 count as 1000.",
    ),
]
