"""Configuration: the operator's ``neutron.conf`` and ``metadata_agent.ini``, read with
oslo.config under Neutron's option names and defaults, plus a ``[metaproxy]`` section.

L{load_settings} reads the files into a private C{cfg.ConfigOpts} (never the global
C{cfg.CONF}), reads and checks every option, and returns an immutable L{Settings}. Every
problem is one L{ConfigError} whose text names the file, the ``[section] option``, the
value and the fix. Secret options are never put in a message nor in a repr.
"""

from __future__ import annotations

import configparser
import glob
import ipaddress
import os
import socket
from typing import Any

import attrs
from oslo_config import cfg, iniparser, types

from metaproxy.config.socketmode import socket_mode
from metaproxy.namespace import (
    MAX_SOCKET_PATH_BYTES,
    InvalidNamespace,
    Namespace,
    NamespaceKind,
    namespace_socket_path,
)

__all__ = [
    "ConfigError",
    "Settings",
    "load_settings",
    "default_settings",
    "register_options",
    "list_opts",
    "allowed_values",
    "default_text",
    "default_lookup_backend",
    "HAPROXY_TIMEOUT_SERVER",
    "NEUTRON_INTERFACES",
    "parse_listen",
]

#: haproxy's ``timeout server`` (Neutron's hard-coded 32 s): Nova must answer before it.
HAPROXY_TIMEOUT_SERVER = 32.0

_S = "$state_path/metaproxy"

# [DEFAULT]: Neutron's metadata agent options (reference 2.1), same names and defaults.
METADATA_OPTS = [
    cfg.StrOpt(
        "metadata_proxy_socket",
        default="$state_path/metadata_proxy",
        help="Unix socket metaproxy listens on for the namespace proxies (haproxy). "
        "The L3 and DHCP agents read the same option for haproxy's server line.",
    ),
    cfg.StrOpt(
        "metadata_proxy_user",
        default="",
        help="User (uid or name) running the namespace proxies; empty means "
        "metaproxy's effective user. Used to deduce the socket mode.",
    ),
    cfg.StrOpt(
        "metadata_proxy_group",
        default="",
        help="Group (gid or name) running the namespace proxies; empty means "
        "metaproxy's effective group. Used to deduce the socket mode.",
    ),
    cfg.StrOpt(
        "metadata_proxy_socket_mode",
        default="deduce",
        choices=["deduce", "user", "group", "all"],
        help="Permissions of the metadata socket: user (0644), group (0664), all "
        "(0666), or deduce them from metadata_proxy_user and metadata_proxy_group. "
        "Unlike Neutron since 2025.1, metaproxy applies it.",
    ),
    cfg.IntOpt(
        "metadata_workers",
        min=0,
        sample_default="<number of CPUs> / 2",
        help="How many worker processes serve the sockets; unset means half the "
        "CPUs, as in Neutron. 0 or 1: one process serves every socket (one reactor, "
        "no thread per request). N >= 2: the agent's process binds every socket "
        "(namespaces added at run time included) and hands them to N worker "
        "processes that all accept on all of them; a worker that dies is restarted "
        "while the others keep serving, SIGHUP is passed on to the workers.",
    ),
    cfg.IntOpt(
        "metadata_backlog",
        default=4096,
        min=1,
        help="listen() backlog of the metadata socket (applied, unlike Neutron "
        "since 2025.1, whose real backlog is 5).",
    ),
    cfg.HostAddressOpt(
        "nova_metadata_host",
        default="127.0.0.1",
        help="IP address or DNS name of Nova's metadata API.",
    ),
    cfg.PortOpt("nova_metadata_port", default=8775, help="TCP port of Nova's metadata API."),
    cfg.StrOpt(
        "nova_metadata_protocol",
        default="http",
        choices=["http", "https"],
        help="Protocol to reach Nova's metadata API.",
    ),
    cfg.BoolOpt(
        "nova_metadata_insecure",
        default=False,
        help="With https, do not verify Nova's certificate.",
    ),
    cfg.StrOpt(
        "auth_ca_cert",
        help="CA bundle that verifies Nova's certificate with https (unset: the "
        "system's CAs). Checked at start unless nova_metadata_insecure is set.",
    ),
    cfg.StrOpt(
        "nova_client_cert",
        default="",
        help="Client certificate for https to Nova; needs nova_client_priv_key.",
    ),
    cfg.StrOpt("nova_client_priv_key", default="", help="Private key of nova_client_cert."),
    cfg.StrOpt(
        "metadata_proxy_shared_secret",
        default="",
        secret=True,
        help="Secret that signs the instance id; must equal Nova's [neutron] "
        "metadata_proxy_shared_secret. Write $$ for a literal $.",
    ),
    cfg.IntOpt(
        "rpc_response_max_timeout", default=600, help="Maximum seconds to wait for an RPC response."
    ),
]
# [DEFAULT] options Neutron shares with every agent (usually set in neutron.conf).
COMMON_OPTS = [
    cfg.HostDomainOpt(
        "host",
        default=socket.gethostname(),
        sample_default="example.domain",
        help="This node's name, as the Neutron server knows the agent.",
    ),
    cfg.StrOpt(
        "state_path",
        default="/var/lib/neutron",
        help="Neutron's state directory; $state_path in other options refers to it.",
    ),
    cfg.BoolOpt(
        "debug",
        default=False,
        help="Log at debug level. SIGHUP applies a change without a restart.",
    ),
    cfg.BoolOpt(
        "use_json",
        default=False,
        help="Write log lines as JSON objects, one per line (oslo.log's option "
        "name), instead of text. Applies to the file or stream given with "
        "twistd's --logfile.",
    ),
    cfg.StrOpt(
        "transport_url",
        secret=True,
        help="oslo.messaging transport URL of the Neutron server's RPC bus.",
    ),
    cfg.IntOpt("rpc_response_timeout", default=60, help="Seconds to wait for an RPC response."),
]
AGENT_OPTS = [
    cfg.FloatOpt(
        "report_interval",
        default=30,
        help="Seconds between state reports to the Neutron server; 0 disables them.",
    ),
    cfg.BoolOpt("log_agent_heartbeats", default=False, help="Log each state report."),
]
CACHE_OPTS = [
    cfg.BoolOpt(
        "enabled",
        default=False,
        help="Keep port lookup answers for expiration_time seconds (oslo.cache's "
        "option name; metaproxy keeps its own in-process cache, no cache server is "
        "used). Concurrent identical lookups are shared either way.",
    ),
    cfg.IntOpt(
        "expiration_time",
        default=600,
        min=0,
        help="Seconds a lookup answer is kept when enabled; 0 keeps nothing.",
    ),
    cfg.StrOpt(
        "backend",
        default="dogpile.cache.null",
        help="oslo.cache backend: accepted and ignored, metaproxy keeps its own "
        "in-process cache whatever this says.",
    ),
]
METAPROXY_OPTS = [
    cfg.StrOpt(
        "lookup_backend",
        choices=["table", "rpc", "neutron_api", "ovn"],
        sample_default="rpc when transport_url is set, table otherwise",
        help="Where instances are looked up: rpc asks neutron-server over "
        "transport_url (get_ports on topic q-plugin, as neutron-metadata-agent "
        "does; each call waits at most rpc_response_timeout seconds, and never "
        "longer than nova_timeout); neutron_api asks Neutron's API (the [neutron] "
        "section: Keystone credentials and endpoint; enable [cache] with it); ovn "
        "keeps a replica of the OVN Southbound database named in [ovn] "
        "ovn_sb_connection and answers from memory; table reads lookup_table. "
        "Unset: rpc when transport_url is set, table otherwise.",
    ),
    cfg.IntOpt(
        "rpc_lookup_threads",
        default=8,
        min=1,
        help="Threads making RPC lookups at once (oslo.messaging calls block); "
        "more lookups wait their turn. Concurrent identical lookups share one "
        "call whatever this says.",
    ),
    cfg.StrOpt(
        "lookup_table",
        default=f"{_S}/ports.json",
        help="Port table file for lookup_backend = table; must exist at start.",
    ),
    cfg.StrOpt(
        "namespace_socket_dir",
        default=f"{_S}/ns",
        help="Directory of the per-namespace sockets metaproxy creates, one "
        "<namespace name>.sock per namespace.",
    ),
    cfg.StrOpt(
        "namespace_dir",
        default=f"{_S}/namespaces.d",
        help="Watched directory of namespace declarations: one empty file per "
        "namespace, named like it (e.g. qrouter-<router id>). Adding or removing a "
        "file adds or removes that namespace's socket without a restart.",
    ),
    cfg.ListOpt(
        "namespaces",
        default=[],
        help="Namespaces served from the start, comma separated: "
        "qrouter-<router id>, qdhcp-<network id> or ovnmeta-<network id>.",
    ),
    cfg.FloatOpt(
        "namespace_rescan_interval",
        default=10,
        min=0.1,
        help="Seconds between rescans of namespace_dir (inotify, where "
        "available, sees changes sooner).",
    ),
    cfg.StrOpt(
        "control_socket",
        default=f"{_S}/control.sock",
        help="Unix socket of the local control command (metaproxy ctl), mode "
        "0600: only metaproxy's user and root may use it.",
    ),
    cfg.FloatOpt(
        "nova_timeout",
        default=28,
        min=0.1,
        help="Seconds Nova has to answer a request; must be below haproxy's "
        "timeout server (32) so that metaproxy, not haproxy, answers the error.",
    ),
    cfg.FloatOpt("nova_connect_timeout", default=5, min=0.1, help="Seconds to connect to Nova."),
    cfg.IntOpt(
        "nova_pool_size",
        default=200,
        min=1,
        help="Idle keep-alive connections to Nova kept for reuse (idle ones close "
        "after 4 s); near nova_max_in_flight, or bursts open and close connections.",
    ),
    cfg.IntOpt(
        "nova_max_in_flight",
        default=200,
        min=1,
        help="Most requests in flight to Nova at once; more wait their turn.",
    ),
    cfg.IntOpt(
        "max_header_bytes",
        default=16384,
        min=1024,
        help="Largest request head (request line and headers) accepted, in bytes; larger gets 431.",
    ),
    cfg.IntOpt(
        "max_headers", default=100, min=8, help="Most request headers accepted; more gets 431."
    ),
    cfg.IntOpt(
        "max_body_bytes",
        default=65536,
        min=0,
        help="Largest request body accepted, in bytes; larger gets 413.",
    ),
    cfg.FloatOpt(
        "request_timeout",
        default=30,
        min=0.1,
        help="Seconds a client has to send a whole request; then it gets 408.",
    ),
    cfg.IntOpt(
        "retry_after",
        default=1,
        min=0,
        help="Retry-After seconds sent with a 503 (cloud-init retries).",
    ),
    cfg.BoolOpt(
        "gzip_decode",
        default=False,
        help="Decompress gzip bodies from Nova, as Neutron 2025.2 and later do. "
        "The default passes bodies through byte-exact.",
    ),
    cfg.ListOpt(
        "nova_metadata_endpoints",
        default=[],
        help="More Nova metadata API endpoints after the one of nova_metadata_host, "
        "nova_metadata_port and nova_metadata_protocol, comma separated: URLs "
        "(http://host:port, https://[v6addr]:port) or host:port (with "
        "nova_metadata_protocol). Requests go to the first healthy one; GET and HEAD "
        "requests fail over to the next when one cannot be reached. The TLS options "
        "apply to every https endpoint.",
    ),
    cfg.IntOpt(
        "nova_breaker_failures",
        default=5,
        min=1,
        help="Consecutive failures (unreachable or no answer in nova_timeout) after "
        "which an endpoint is left alone for nova_breaker_cooldown seconds; then one "
        "request probes it, and it is used again once one succeeds.",
    ),
    cfg.FloatOpt(
        "nova_breaker_cooldown",
        default=5,
        min=0.1,
        help="Seconds an endpoint is left alone after nova_breaker_failures; "
        "doubles while its probes fail, up to 12 times this.",
    ),
    cfg.IntOpt(
        "nova_max_queued",
        default=1000,
        min=0,
        help="Most requests waiting for one of nova_max_in_flight's slots (per "
        "endpoint); more get 503 with Retry-After at once instead of waiting.",
    ),
    cfg.IntOpt(
        "max_connections",
        default=16384,
        min=1,
        help="Most connections from the namespace proxies open at once, all sockets "
        "together; more are answered 503 with Retry-After and closed (keep it below "
        "the process's open-file limit).",
    ),
    cfg.IntOpt(
        "max_connections_per_namespace",
        default=2048,
        min=1,
        help="Most connections open at once on one namespace's own socket (haproxy "
        "opens at most its maxconn, 1024); more are answered 503 and closed. The "
        "shared socket carries every namespace and is bounded by max_connections.",
    ),
    cfg.StrOpt(
        "guest_forwarded_for",
        default="log",
        choices=["off", "log", "enforce"],
        help="A request that carried an X-Forwarded-For of its own (more than haproxy's "
        "one) came through a proxy inside the instance: off ignores it, log counts "
        "and logs it (at most one line per refusal_log_interval), enforce answers "
        "403 as well.",
    ),
    cfg.FloatOpt(
        "refusal_log_interval",
        default=60,
        min=0,
        help="Seconds between two log lines about guest-forwarded requests, rate "
        "limiting, full connection limits or a full Nova queue; the lines left out "
        "are counted in the next.",
    ),
    cfg.IntOpt(
        "rate_limit_max_sources",
        default=100000,
        min=1,
        help="Most sources (namespace, address) the rate limiter remembers; idle "
        "ones are forgotten after twice the longest window anyway.",
    ),
    cfg.ListOpt(
        "metrics_listen",
        default=[],
        help="Where to serve /metrics (Prometheus text format) and /healthz, comma "
        "separated: HOST:PORT or PORT (TCP; a bare port binds 127.0.0.1 only, "
        "IPv6 as [::1]:PORT) and/or unix:PATH (mode 0660). Never an address "
        "instances can reach. Empty: off.",
    ),
    cfg.FloatOpt(
        "health_probe_interval",
        default=10,
        min=1,
        help="Seconds between the /healthz probes of Nova (a GET / on the "
        "metadata API, which needs no instance).",
    ),
    cfg.FloatOpt(
        "drain_timeout",
        default=20,
        min=0,
        help="On SIGTERM: stop accepting, then let the requests in flight finish "
        "for at most this many seconds before exiting (status 0). Keep it below "
        "systemd's TimeoutStopSec.",
    ),
    cfg.IntOpt(
        "log_rate_limit",
        default=20,
        min=0,
        help="Most log lines about failed or refused requests of one kind per 10 "
        "seconds; past it they are counted, and one line per kind says how many "
        "were left out. 0: no limit.",
    ),
]
# [metadata_rate_limiting]: Neutron's options (reference 2.2), read by the agent here.
RATE_LIMIT_OPTS = [
    cfg.BoolOpt(
        "rate_limit_enabled",
        default=False,
        help="Limit the requests of each source (namespace and address) in the "
        "agent, with a base and a burst window; more get 429 with Retry-After.",
    ),
    cfg.ListOpt(
        "ip_versions",
        default=[4],
        item_type=types.Integer(choices=[4, 6]),
        help="Address families limited: 4, 6, or 4,6 for both (haproxy can limit "
        "only one; metaproxy limits both).",
    ),
    cfg.IntOpt("base_window_duration", default=10, min=1, help="Seconds of the base window."),
    cfg.IntOpt(
        "base_query_rate_limit",
        default=10,
        min=1,
        help="Requests one source may make in the base window.",
    ),
    cfg.IntOpt("burst_window_duration", default=10, min=1, help="Seconds of the burst window."),
    cfg.IntOpt(
        "burst_query_rate_limit",
        default=10,
        min=1,
        help="Requests one source may make in the burst window.",
    ),
]

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


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Every option metaproxy reads, by section (the oslo-config-generator shape)."""
    return [
        ("DEFAULT", METADATA_OPTS + COMMON_OPTS),
        ("AGENT", AGENT_OPTS),
        ("cache", CACHE_OPTS),
        ("metadata_rate_limiting", RATE_LIMIT_OPTS),
        ("metaproxy", METAPROXY_OPTS),
        ("neutron", NEUTRON_OPTS),
        ("ovn", OVN_OPTS),
    ]


def register_options(conf: cfg.ConfigOpts) -> None:
    """Register every option of L{list_opts} on C{conf}."""
    for group, opts in list_opts():
        conf.register_opts(opts, group=None if group == "DEFAULT" else group)


def _field(group: str, name: str) -> str:
    """The L{Settings} field of an option: [cache] and [neutron] ones get their section's
    name as a prefix."""
    return f"{group}_{name}" if group in ("cache", "neutron") else name


class ConfigError(Exception):
    """The configuration cannot be used; str() is one message for the operator."""


@attrs.frozen(kw_only=True)
class Settings:
    """Every option, validated; names are the options' ([cache] ones get ``cache_``,
    [neutron] ones ``neutron_``)."""

    metadata_proxy_socket: str
    metadata_proxy_user: str
    metadata_proxy_group: str
    metadata_proxy_socket_mode: str
    metadata_workers: int
    metadata_backlog: int
    nova_metadata_host: str
    nova_metadata_port: int
    nova_metadata_protocol: str
    nova_metadata_insecure: bool
    auth_ca_cert: str | None
    nova_client_cert: str
    nova_client_priv_key: str
    metadata_proxy_shared_secret: str = attrs.field(repr=False)
    rpc_response_max_timeout: int
    host: str
    state_path: str
    debug: bool
    use_json: bool
    transport_url: str | None = attrs.field(repr=False)
    rpc_response_timeout: int
    report_interval: float
    log_agent_heartbeats: bool
    cache_enabled: bool
    cache_expiration_time: int
    cache_backend: str
    lookup_backend: str
    rpc_lookup_threads: int
    lookup_table: str
    namespace_socket_dir: str
    namespace_dir: str
    namespaces: tuple[Namespace, ...]
    namespace_rescan_interval: float
    control_socket: str
    nova_timeout: float
    nova_connect_timeout: float
    nova_pool_size: int
    nova_max_in_flight: int
    max_header_bytes: int
    max_headers: int
    max_body_bytes: int
    request_timeout: float
    retry_after: int
    gzip_decode: bool
    neutron_auth_type: str | None
    neutron_auth_url: str | None
    neutron_username: str | None
    neutron_password: str | None = attrs.field(repr=False)
    neutron_user_domain_name: str | None
    neutron_user_domain_id: str | None
    neutron_project_name: str | None
    neutron_project_id: str | None
    neutron_project_domain_name: str | None
    neutron_project_domain_id: str | None
    neutron_application_credential_id: str | None
    neutron_application_credential_secret: str | None = attrs.field(repr=False)
    neutron_region_name: str | None
    neutron_service_type: str
    neutron_valid_interfaces: tuple[str, ...]
    neutron_endpoint_override: str | None
    neutron_cafile: str | None
    neutron_insecure: bool
    neutron_timeout: float
    ovn_sb_connection: str
    ovn_sb_private_key: str
    ovn_sb_certificate: str
    ovn_sb_ca_cert: str
    ovsdb_connection_timeout: int
    ovsdb_retry_max_interval: int
    ovsdb_probe_interval: int
    nova_metadata_endpoints: tuple[str, ...]
    nova_breaker_failures: int
    nova_breaker_cooldown: float
    nova_max_queued: int
    max_connections: int
    max_connections_per_namespace: int
    guest_forwarded_for: str
    refusal_log_interval: float
    rate_limit_max_sources: int
    rate_limit_enabled: bool
    ip_versions: tuple[int, ...]
    base_window_duration: int
    base_query_rate_limit: int
    burst_window_duration: int
    burst_query_rate_limit: int
    metrics_listen: tuple[str, ...]
    health_probe_interval: float
    drain_timeout: float
    log_rate_limit: int
    socket_mode: int
    nova_urls: tuple[str, ...]
    nova_url: str
    config_files: tuple[str, ...]


def _nova_url(protocol: str, host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a DNS name
    return f"{protocol}://{host}:{port}"


class _Sources:
    """Where each option was set: the files read again with configparser, last wins."""

    def __init__(self, files: tuple[str, ...]):
        self.files = files
        self._found: dict[tuple[str, str], tuple[str, str]] = {}
        for path in files:
            parser = configparser.RawConfigParser(
                strict=False, interpolation=None, default_section="\0"
            )
            parser.optionxform = str  # type: ignore[assignment,method-assign]
            try:
                parser.read(path)
            except (configparser.Error, OSError, UnicodeError):
                continue  # oslo.config read it; we only lose the attribution
            for section in parser.sections():
                group = "DEFAULT" if section == "DEFAULT" else section.lower()
                for key, value in parser.items(section, raw=True):
                    self._found[(group, key)] = (path, value)

    def where(self, group: str, name: str) -> tuple[str, str] | None:
        """(file, value as written) of the line that sets the option, or None."""
        return self._found.get((group if group == "DEFAULT" else group.lower(), name))


def allowed_values(opt: cfg.Opt) -> str:
    """What C{opt} accepts, in words."""
    t = opt.type
    if getattr(t, "choices", None):
        return "one of " + ", ".join(t.choices)
    if isinstance(t, types.Boolean):
        return "true or false"
    if isinstance(t, types.Port):
        return "a port number from 0 to 65535"
    if isinstance(t, (types.Integer, types.Float)):
        noun = "an integer" if isinstance(t, types.Integer) else "a number"
        bounds = [f">= {t.min}"] * (t.min is not None) + [f"<= {t.max}"] * (t.max is not None)
        return " ".join([noun, " and ".join(bounds)]).strip()
    if isinstance(t, types.HostDomain):
        return "a host name"
    if isinstance(t, types.HostAddress):
        return "an IP address or a DNS name"
    if isinstance(t, types.List):
        return "a comma-separated list"
    return "text ($name refers to another option; write $$ for a literal $)"


def default_text(opt: cfg.Opt, sample: bool = True) -> str:
    """The default as the sample file writes it (C{sample}) or as a message names it."""
    if opt.sample_default is not None and (sample or opt.default is None):
        return str(opt.sample_default)
    if opt.default is None:
        return "<None>" if sample else "(unset)"
    if isinstance(opt.default, bool):
        return str(opt.default).lower()
    if isinstance(opt.default, list):
        return ",".join(map(str, opt.default)) if sample or opt.default else "(empty)"
    return str(opt.default) if sample or opt.default != "" else "(empty)"


def _problem(
    sources: _Sources, group: str, opt: cfg.Opt, value: Any, problem: str, fix: str
) -> ConfigError:
    """One message: file, [section] option = value, what is wrong, and the fix."""
    found = sources.where(group, opt.dest)
    if found is not None:
        shown = "(value hidden)" if opt.secret else repr(found[1])
        head = f"{found[0]}: [{group}] {opt.dest} = {shown}"
    else:
        shown = "(value hidden)" if opt.secret else repr(value)
        read = ", ".join(sources.files) or "no configuration file"
        head = f"[{group}] {opt.dest} = {shown} (default {default_text(opt)!r}, not set in {read})"
    return ConfigError(f"{head}: {problem}. Fix: {fix}.")


def _bad_value(sources: _Sources, group: str, opt: cfg.Opt, exc: Exception) -> ConfigError:
    allowed = allowed_values(opt)
    found = sources.where(group, opt.dest)
    default = f"remove the line to use the default {default_text(opt, sample=False)}"
    if found is not None and "$" in found[1] and not isinstance(exc, ValueError):
        problem = "refers with $ to something that is not an option"
        fix = (
            f"write $$ for a literal $ ($name must name an option, e.g. $state_path), or {default}"
        )
    elif opt.secret:
        problem, fix = f"is not valid; allowed: {allowed}", f"set {allowed}, or {default}"
    else:
        reason = str(exc).partition("is not valid: ")[2] or str(exc)
        problem = f"is not valid ({reason}); allowed: {allowed}"
        fix = f"set {allowed}, or {default}"
    return _problem(sources, group, opt, None, problem, fix)


def _read_options(conf: cfg.ConfigOpts, sources: _Sources) -> dict[str, Any]:
    """Every option's value (oslo.config converts lazily), keyed by Settings field."""
    values = {}
    for group, opts in list_opts():
        node = conf if group == "DEFAULT" else conf[group]
        for opt in opts:
            try:
                values[_field(group, opt.dest)] = node[opt.dest]
            except (cfg.Error, ValueError) as exc:
                raise _bad_value(sources, group, opt, exc) from None
    return values


def _build(values: dict[str, Any], config_files: tuple[str, ...]) -> Settings:
    values = dict(values, config_files=config_files)
    values["namespaces"] = tuple(values["namespaces"])
    values["neutron_valid_interfaces"] = tuple(
        i.strip() for i in values["neutron_valid_interfaces"] if i.strip()
    )
    values["ip_versions"] = tuple(values["ip_versions"])
    values["nova_metadata_endpoints"] = tuple(
        e.strip() for e in values["nova_metadata_endpoints"] if e.strip()
    )
    values["metrics_listen"] = tuple(e.strip() for e in values["metrics_listen"] if e.strip())
    if values["metadata_workers"] is None:
        values["metadata_workers"] = (os.cpu_count() or 1) // 2
    values["socket_mode"] = socket_mode(
        values["metadata_proxy_socket_mode"],
        values["metadata_proxy_user"],
        values["metadata_proxy_group"],
    )
    values["nova_url"] = _nova_url(
        values["nova_metadata_protocol"], values["nova_metadata_host"], values["nova_metadata_port"]
    )
    values["nova_urls"] = _nova_urls(
        values["nova_url"], values["nova_metadata_protocol"], values["nova_metadata_endpoints"]
    )
    if values["lookup_backend"] is None:
        values["lookup_backend"] = default_lookup_backend(values["transport_url"])
    return Settings(**values)


def _nova_urls(first: str, protocol: str, endpoints: tuple[str, ...]) -> tuple[str, ...]:
    """Every Nova endpoint as a URL: the upstream options' first, then
    C{nova_metadata_endpoints} (C{host:port} entries take C{nova_metadata_protocol})."""
    urls = [first]
    for entry in endpoints:
        urls.append(entry if "://" in entry else f"{protocol}://{entry}")
    return tuple(urls)


def default_lookup_backend(transport_url: str | None) -> str:
    """C{lookup_backend} when unset: C{rpc} with a C{transport_url}, C{table} without."""
    return "rpc" if transport_url else "table"


def _opt(group: str, name: str) -> cfg.Opt:
    return next(o for g, opts in list_opts() if g == group for o in opts if o.dest == name)


def _parse_namespaces(entries: list[str], sources: _Sources) -> tuple[Namespace, ...]:
    parsed: dict[Namespace, None] = {}
    for entry in entries:
        if not entry.strip():
            continue
        try:
            parsed[Namespace.parse(entry.strip())] = None
        except InvalidNamespace as exc:
            raise _problem(
                sources,
                "metaproxy",
                _opt("metaproxy", "namespaces"),
                entries,
                f"entry {entry.strip()!r} is not valid: {exc}",
                f"correct or remove {entry.strip()!r}; entries are qrouter-<router id>, "
                "qdhcp-<network id> or ovnmeta-<network id>, comma separated",
            ) from None
    return tuple(parsed)


def _check_file(sources: _Sources, group: str, name: str, path: str, what: str) -> None:
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise _problem(
            sources,
            group,
            _opt(group, name),
            path,
            f"{what} {path!r} does not exist or is not a readable file",
            f"create it or correct the path in [{group}] {name}",
        )


_UUID = "01234567-89ab-cdef-0123-456789abcdef"  # a Neutron id's length


def _check_socket_path(
    sources: _Sources, group: str, name: str, value: str, path: str, what: str
) -> None:
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH_BYTES:
        raise _problem(
            sources,
            group,
            _opt(group, name),
            value,
            f"{what}, {path!r}, is {size} bytes; haproxy accepts Unix socket paths of at "
            f"most {MAX_SOCKET_PATH_BYTES} bytes",
            "set a shorter path (or a shorter state_path)",
        )


def parse_listen(entry: str) -> tuple[str, str, int | str]:
    """C{("tcp", host, port)} or C{("unix", path, 0)} for one C{metrics_listen} entry.

    @raise ValueError: the entry is neither (the message says why).
    """
    if entry.startswith("unix:"):
        path = entry[5:]
        if not path.startswith("/"):
            raise ValueError("a Unix socket path must be absolute")
        if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
            raise ValueError(f"a Unix socket path must be at most {MAX_SOCKET_PATH_BYTES} bytes")
        return ("unix", path, 0)
    host, sep, port = entry.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", entry
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{host!r} is not an IP address (write 127.0.0.1, ::1 in "
            "brackets, or another local address)"
        ) from None
    return ("tcp", host, int(port))


def _cross_check(s: Settings, sources: _Sources) -> None:
    """Checks across options; the first failure raises."""
    d = "DEFAULT"
    if s.nova_metadata_protocol == "https":
        cert, key = s.nova_client_cert, s.nova_client_priv_key
        if bool(cert) != bool(key):
            have, lack = (
                ("nova_client_cert", "nova_client_priv_key")
                if cert
                else ("nova_client_priv_key", "nova_client_cert")
            )
            raise _problem(
                sources,
                d,
                _opt(d, have),
                cert or key,
                f"nova_metadata_protocol is https and {lack} is not set; a client "
                "certificate and its private key are used together",
                f"set [DEFAULT] {lack} as well, or remove {have} to connect without "
                "a client certificate",
            )
        if cert:
            _check_file(sources, d, "nova_client_cert", cert, "client certificate")
            _check_file(sources, d, "nova_client_priv_key", key, "private key")
        if s.auth_ca_cert and not s.nova_metadata_insecure:
            _check_file(sources, d, "auth_ca_cert", s.auth_ca_cert, "CA bundle")
    if s.nova_timeout >= HAPROXY_TIMEOUT_SERVER:
        raise _problem(
            sources,
            "metaproxy",
            _opt("metaproxy", "nova_timeout"),
            s.nova_timeout,
            f"must be below haproxy's timeout server ({HAPROXY_TIMEOUT_SERVER:g} s), or "
            "haproxy cuts the connection before metaproxy can answer",
            "set a number of seconds below 32, or remove the line to use the default 28",
        )
    for group, name in ((d, "metadata_proxy_socket"), ("metaproxy", "control_socket")):
        _check_socket_path(
            sources, group, name, getattr(s, name), getattr(s, name), "the socket path"
        )
    # Each namespace gets <namespace_socket_dir>/<namespace name>.sock.
    example = Namespace(NamespaceKind.OVN, _UUID)
    for ns in s.namespaces + (example,):
        what = "an OVN namespace's socket path" if ns is example else f"{ns.name}'s socket path"
        _check_socket_path(
            sources,
            "metaproxy",
            "namespace_socket_dir",
            s.namespace_socket_dir,
            namespace_socket_path(s.namespace_socket_dir, ns),
            what,
        )
    if s.rate_limit_enabled and not s.ip_versions:
        raise _problem(
            sources,
            "metadata_rate_limiting",
            _opt("metadata_rate_limiting", "ip_versions"),
            "",
            "is empty while rate_limit_enabled is true, so nothing would be limited",
            "set 4, 6 or 4,6, or remove the line to use the default 4",
        )
    for url, entry in zip(s.nova_urls[1:], s.nova_metadata_endpoints, strict=False):
        from metaproxy.nova.client import check_url  # imported here: config stays light

        problem = check_url(url)
        if problem is not None:
            raise _problem(
                sources,
                "metaproxy",
                _opt("metaproxy", "nova_metadata_endpoints"),
                list(s.nova_metadata_endpoints),
                f"entry {entry!r}: {problem}",
                "write each entry as http://host:port, https://host:port or "
                "host:port, comma separated",
            )
    for entry in s.metrics_listen:
        try:
            parse_listen(entry)
        except ValueError as e:
            raise _problem(
                sources,
                "metaproxy",
                _opt("metaproxy", "metrics_listen"),
                list(s.metrics_listen),
                f"entry {entry!r} is not valid: {e}",
                "write HOST:PORT, PORT (127.0.0.1) or unix:PATH, comma "
                "separated, or leave it empty to serve no metrics",
            ) from None
    if s.lookup_backend == "table":
        _check_file(sources, "metaproxy", "lookup_table", s.lookup_table, "port table")
    if s.lookup_backend == "rpc" and not s.transport_url:
        raise _problem(
            sources,
            "metaproxy",
            _opt("metaproxy", "lookup_backend"),
            s.lookup_backend,
            "asks neutron-server over RPC, but [DEFAULT] transport_url is not set",
            "set [DEFAULT] transport_url to neutron-server's (it is usually in "
            "neutron.conf: pass that file with --config-file too), or set lookup_backend = "
            "table",
        )
    if s.transport_url and s.rpc_response_timeout < 1:
        raise _problem(
            sources,
            d,
            _opt(d, "rpc_response_timeout"),
            s.rpc_response_timeout,
            "must be at least 1 second",
            "set a number of seconds >= 1, or remove the line to use the default 60",
        )
    if s.lookup_backend == "neutron_api":
        _check_neutron(s, sources)
    if s.lookup_backend == "ovn":
        _check_ovn(s, sources)


def _http_url(value: str) -> bool:
    scheme, sep, rest = value.partition("://")
    return bool(sep) and scheme.lower() in ("http", "https") and bool(rest.strip("/"))


def _check_neutron(s: Settings, sources: _Sources) -> None:
    """[neutron]: what lookup_backend = neutron_api needs to get a token and the endpoint."""
    n = "neutron"
    why = "lookup_backend = neutron_api"

    def missing(name: str, problem: str, fix: str) -> ConfigError:
        return _problem(
            sources, n, _opt(n, name), getattr(s, f"neutron_{name}"), f"{why} {problem}", fix
        )

    def one_of(a: str, b: str, problem: str) -> None:
        if not (getattr(s, f"neutron_{a}") or getattr(s, f"neutron_{b}")):
            raise missing(a, problem, f"set [neutron] {a} (or {b})")

    if not s.neutron_auth_type:
        raise missing(
            "auth_type",
            "needs Keystone credentials",
            "set [neutron] auth_type = password (with username, password, "
            "user_domain_name, project_name, project_domain_name) or "
            "v3applicationcredential (with application_credential_id and "
            "application_credential_secret), as in nova.conf's [neutron] section",
        )
    if not s.neutron_auth_url:
        raise missing(
            "auth_url",
            "needs Keystone's URL",
            "set [neutron] auth_url, e.g. https://keystone.example:5000/v3",
        )
    url = s.neutron_auth_url.rstrip("/")
    if not _http_url(url):
        raise missing(
            "auth_url",
            "needs an http:// or https:// URL",
            "set [neutron] auth_url, e.g. https://keystone.example:5000/v3",
        )
    if url.endswith("/v2.0"):
        raise missing(
            "auth_url",
            "authenticates with Keystone's v3 API only",
            "point [neutron] auth_url at /v3 (or at Keystone's root)",
        )
    if s.neutron_auth_type == "password":
        for name in ("username", "password"):
            if not getattr(s, f"neutron_{name}"):
                raise missing(
                    name, f"with auth_type = password needs the {name}", f"set [neutron] {name}"
                )
        one_of(
            "user_domain_name",
            "user_domain_id",
            "with auth_type = password needs the user's domain",
        )
        one_of(
            "project_name",
            "project_id",
            "with auth_type = password needs the project the token is scoped to",
        )
        if s.neutron_project_name and not s.neutron_project_id:
            one_of(
                "project_domain_name",
                "project_domain_id",
                "with project_name needs the project's domain",
            )
    else:
        for name in ("application_credential_id", "application_credential_secret"):
            if not getattr(s, f"neutron_{name}"):
                raise missing(
                    name,
                    f"with auth_type = v3applicationcredential needs {name}",
                    f"set [neutron] {name}",
                )
    for interface in s.neutron_valid_interfaces or ("",):
        if interface.removesuffix("URL") not in NEUTRON_INTERFACES:
            raise missing(
                "valid_interfaces",
                f"cannot use interface {interface!r}",
                "list some of public, internal, admin",
            )
    if s.neutron_endpoint_override and not _http_url(s.neutron_endpoint_override):
        raise missing(
            "endpoint_override",
            "needs an http:// or https:// URL",
            "set [neutron] endpoint_override, e.g. http://neutron.example:9696, "
            "or remove it to use the catalog's endpoint",
        )
    if s.neutron_cafile and not s.neutron_insecure:
        _check_file(sources, n, "cafile", s.neutron_cafile, "CA bundle")


def _check_ovn(s: Settings, sources: _Sources) -> None:
    from metaproxy.ovsdb.remote import RemoteError, parse_remotes

    try:
        remotes = parse_remotes(s.ovn_sb_connection)
    except RemoteError as e:
        raise _problem(
            sources,
            "ovn",
            _opt("ovn", "ovn_sb_connection"),
            s.ovn_sb_connection,
            str(e),
            "write tcp:IP:PORT, ssl:IP:PORT or unix:PATH (several "
            "separated by commas), as for the OVN metadata agent",
        ) from None
    if any(remote.kind == "ssl" for remote in remotes):
        for name, what in (
            ("ovn_sb_private_key", "private key"),
            ("ovn_sb_certificate", "certificate"),
            ("ovn_sb_ca_cert", "CA certificate"),
        ):
            path = getattr(s, name)
            if not path:
                raise _problem(
                    sources,
                    "ovn",
                    _opt("ovn", name),
                    path,
                    f"ovn_sb_connection uses ssl: and needs the {what}",
                    f"set [ovn] {name} to its PEM file, or connect with tcp: or unix:",
                )
            _check_file(sources, "ovn", name, path, what)


def _files_read(config_files: list[str], config_dirs: list[str]) -> tuple[str, ...]:
    """The files oslo.config reads, in its order: the files, then each dir's *.conf."""
    files = [os.path.abspath(os.path.expanduser(f)) for f in config_files]
    for directory in config_dirs:
        files += sorted(glob.glob(os.path.join(os.path.expanduser(directory), "*.conf")))
    return tuple(os.path.abspath(f) for f in files)


def _undecodable(files: tuple[str, ...]) -> str:
    for path in files:
        try:
            with open(path) as f:
                f.read()
        except UnicodeDecodeError:
            return path
    return ", ".join(files)


def _parse_error(exc: cfg.ConfigFileParseError) -> ConfigError:
    cause = exc.__context__
    if isinstance(cause, iniparser.ParseError):
        # Only a section header is quoted: any other line may hold a password.
        line = f": {cause.line!r}" if (cause.line or "").startswith("[") else ""
        problem = f"line {cause.lineno}: {cause.msg}{line}"
    else:
        problem = "cannot be parsed"
    return ConfigError(
        f"{exc.config_file}: {problem}. Fix: write 'name = value' lines under a "
        "[section] header (indented lines continue the previous value)."
    )


def load_settings(config_files: list[str], config_dirs: list[str]) -> Settings:
    """Read the operator's files (``--config-file`` in order, then each ``--config-dir``'s
    ``*.conf`` sorted; later files win), check everything, return L{Settings}.

    @raise ConfigError: a file is missing or unreadable, or a value is wrong.
    """
    for directory in config_dirs:
        if not os.path.isdir(os.path.expanduser(directory)):
            raise ConfigError(
                f"{directory}: configuration directory not found. Fix: create it, or "
                f"remove --config-dir {directory}."
            )
    conf = cfg.ConfigOpts()
    register_options(conf)
    try:
        conf(
            args=[],
            project="neutron",
            prog="metaproxy",
            use_env=False,
            default_config_files=list(config_files),
            default_config_dirs=[os.path.expanduser(d) for d in config_dirs],
        )
    except cfg.ConfigFilesNotFoundError as exc:
        raise ConfigError(
            f"{', '.join(exc.config_files)}: configuration file not found. Fix: correct "
            "the --config-file path or create the file."
        ) from None
    except cfg.ConfigFilesPermissionDeniedError as exc:
        raise ConfigError(
            f"{', '.join(exc.config_files)}: configuration file not readable. Fix: let "
            "metaproxy's user read it (chmod/chgrp)."
        ) from None
    except cfg.ConfigFileParseError as exc:
        raise _parse_error(exc) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{_undecodable(_files_read(config_files, config_dirs))}: not valid "
            "text in this locale's encoding. Fix: save it as UTF-8."
        ) from None
    except OSError as exc:  # a directory given as --config-file, say
        raise ConfigError(
            f"{exc.filename}: cannot be read ({exc.strerror}). Fix: give the "
            "path of a configuration file."
        ) from None
    files = _files_read(config_files, config_dirs)
    sources = _Sources(files)
    values = _read_options(conf, sources)
    values["namespaces"] = _parse_namespaces(values["namespaces"], sources)
    settings = _build(values, files)
    _cross_check(settings, sources)
    return settings


_DERIVED = {
    "socket_mode": ("metadata_proxy_socket_mode", "metadata_proxy_user", "metadata_proxy_group"),
    "nova_url": ("nova_metadata_protocol", "nova_metadata_host", "nova_metadata_port"),
    "nova_urls": (
        "nova_metadata_protocol",
        "nova_metadata_host",
        "nova_metadata_port",
        "nova_url",
        "nova_metadata_endpoints",
    ),
}


def default_settings(**overrides: Any) -> Settings:
    """L{Settings} from the defaults alone, no file read and no checks (for tests).

    C{state_path} is applied before the defaults are interpolated, so the paths follow
    it; other overrides replace fields afterwards (C{attrs.evolve}), and C{socket_mode}
    and C{nova_url} are derived again from overridden inputs unless given too.
    """
    conf = cfg.ConfigOpts()
    register_options(conf)
    conf(
        args=[],
        project="neutron",
        prog="metaproxy",
        use_env=False,
        default_config_files=[],
        default_config_dirs=[],
    )
    if "state_path" in overrides:
        conf.set_override("state_path", overrides["state_path"])
    values = _read_options(conf, _Sources(()))
    values["namespaces"] = [Namespace.parse(n) for n in values["namespaces"]]
    if "neutron_valid_interfaces" in overrides:
        overrides["neutron_valid_interfaces"] = tuple(overrides["neutron_valid_interfaces"])
    settings = attrs.evolve(_build(values, ()), **overrides)
    if "transport_url" in overrides and "lookup_backend" not in overrides:
        settings = attrs.evolve(
            settings, lookup_backend=default_lookup_backend(settings.transport_url)
        )
    for derived, inputs in _DERIVED.items():
        if derived not in overrides and any(name in overrides for name in inputs):
            args = [getattr(settings, name) for name in inputs]
            if derived == "socket_mode":
                value = socket_mode(*args)
            elif derived == "nova_url":
                value = _nova_url(*args)
            else:
                value = _nova_urls(
                    settings.nova_url,
                    settings.nova_metadata_protocol,
                    tuple(settings.nova_metadata_endpoints),
                )
            settings = attrs.evolve(settings, **{derived: value})
    return settings
