"""The sections of two lookup backends: C{[neutron]} (keystoneauth's options, for
C{lookup_backend = neutron_api}) and C{[ovn]} (the OVN metadata agent's Southbound
options, for C{lookup_backend = ovn}).
"""

from __future__ import annotations

from oslo_config import cfg

__all__ = ["NEUTRON_INTERFACES", "NEUTRON_OPTS", "OVN_OPTS"]

#: keystoneauth's interface names (its "internalURL" spellings accepted too).
NEUTRON_INTERFACES = ("public", "internal", "admin")
# [neutron]: keystoneauth's option names, as nova.conf's [neutron] section uses them to reach
# Neutron's API; read for lookup_backend = neutron_api.
NEUTRON_OPTS = [
    cfg.StrOpt(
        "auth_type",
        choices=["password", "v3applicationcredential"],
        help="How to authenticate with Keystone (v3): password (username, "
        "password, user and project domain) or v3applicationcredential "
        "(application_credential_id and _secret). Required with "
        "lookup_backend = neutron_api.",
    ),
    cfg.StrOpt(
        "auth_url",
        help="Keystone's URL, e.g. https://keystone.example:5000/v3 (without /v3, /v3 is added).",
    ),
    cfg.StrOpt("username", help="User name, with auth_type = password."),
    cfg.StrOpt("password", secret=True, help="The user's password, with auth_type = password."),
    cfg.StrOpt("user_domain_name", help="Domain name of the user (or user_domain_id)."),
    cfg.StrOpt("user_domain_id", help="Domain id of the user (or user_domain_name)."),
    cfg.StrOpt(
        "project_name",
        help="Project the token is scoped to (or project_id); the user needs a role "
        "there that may list every project's ports (admin, or a reader role that "
        "Neutron's policy allows).",
    ),
    cfg.StrOpt("project_id", help="Project id the token is scoped to (or project_name)."),
    cfg.StrOpt("project_domain_name", help="Domain name of project_name (or project_domain_id)."),
    cfg.StrOpt("project_domain_id", help="Domain id of project_name (or project_domain_name)."),
    cfg.StrOpt(
        "application_credential_id",
        help="Application credential id, with auth_type = v3applicationcredential.",
    ),
    cfg.StrOpt(
        "application_credential_secret",
        secret=True,
        help="Application credential secret, with auth_type = v3applicationcredential.",
    ),
    cfg.StrOpt("region_name", help="Region of Neutron's endpoint in the catalog (unset: any)."),
    cfg.StrOpt(
        "service_type", default="network", help="Service type of Neutron's endpoint in the catalog."
    ),
    cfg.ListOpt(
        "valid_interfaces",
        default=["internal", "public"],
        help="Catalog interfaces to use for Neutron's endpoint, in order of "
        "preference: public, internal, admin.",
    ),
    cfg.StrOpt(
        "endpoint_override",
        help="Neutron's URL (e.g. http://neutron.example:9696), instead of the "
        "catalog's endpoint; Keystone is still asked for tokens.",
    ),
    cfg.StrOpt(
        "cafile",
        help="CA bundle that verifies Keystone's and Neutron's certificates with "
        "https (unset: the system's CAs).",
    ),
    cfg.BoolOpt(
        "insecure",
        default=False,
        help="With https, do not verify Keystone's and Neutron's certificates.",
    ),
    cfg.FloatOpt(
        "timeout",
        default=5,
        min=0.1,
        help="Seconds one lookup call may take, getting a token from Keystone "
        "included; then the instance gets 503 with Retry-After. A router "
        "namespace's lookup makes two calls.",
    ),
]


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
