"""The options neutron-metadata-agent itself reads, under Neutron's names and defaults:
C{[DEFAULT]} (the metadata agent's own and those every Neutron agent shares), C{[AGENT]},
C{[cache]} and C{[metadata_rate_limiting]}.
"""

from __future__ import annotations

import socket

from oslo_config import cfg, types

__all__ = [
    "METADATA_OPTS",
    "COMMON_OPTS",
    "LOG_OPTS",
    "AGENT_OPTS",
    "CACHE_OPTS",
    "RATE_LIMIT_OPTS",
]

# [DEFAULT]: Neutron's metadata agent options (docs/upstream.md, "Options"), same names
# and defaults.
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
        "name), instead of text, to every log destination. SIGHUP applies a change.",
    ),
    cfg.StrOpt(
        "transport_url",
        secret=True,
        help="oslo.messaging transport URL of the Neutron server's RPC bus.",
    ),
    cfg.IntOpt("rpc_response_timeout", default=60, help="Seconds to wait for an RPC response."),
]
# [DEFAULT] oslo.log's options that say where the log goes, under oslo.log's names,
# deprecated names and defaults (debug and use_json are above). The others oslo.log
# has are refused when set (metaproxy.config.log_options).
LOG_OPTS = [
    cfg.StrOpt(
        "log_file",
        deprecated_name="logfile",
        help="Log file (oslo.log's option), opened for appending and reopened on SIGUSR1 "
        "and SIGHUP (contrib/metaproxy.logrotate rotates it); a relative name is taken "
        "in log_dir. The agent's --log-file wins over it. Unset, with log_dir unset "
        "and neither use_stderr nor use_journal: standard output. The destinations "
        "(log_file, log_dir, use_stderr, use_journal, use_syslog) are read at start: "
        "a change needs a restart.",
    ),
    cfg.StrOpt(
        "log_dir",
        deprecated_name="logdir",
        help="Directory of log_file (oslo.log's option); set alone, the log is "
        "<log_dir>/metaproxy.log. The agent's --log-dir wins over it.",
    ),
    cfg.BoolOpt(
        "use_stderr",
        default=False,
        help="Write the log to standard error; standard output is then not written.",
    ),
    cfg.BoolOpt(
        "use_journal",
        default=False,
        help="Send the log to journald with its native protocol: MESSAGE, PRIORITY, "
        "SYSLOG_FACILITY, SYSLOG_IDENTIFIER=metaproxy, LOGGER_NAME, LOGGER_LEVEL and "
        "the line's fields (NAMESPACE, ADDRESS, ...). Standard output is then not "
        "written. metaproxy refuses to start when journald cannot be reached.",
    ),
    cfg.BoolOpt(
        "use_syslog",
        default=False,
        help="Also send the log to the local syslog daemon (/dev/log), tagged "
        "metaproxy, with syslog_log_facility. metaproxy refuses to start when the "
        "daemon cannot be reached.",
    ),
    cfg.StrOpt(
        "syslog_log_facility",
        default="LOG_USER",
        help="Syslog facility of use_syslog and use_journal: LOG_USER, LOG_DAEMON, "
        "LOG_LOCAL0 to LOG_LOCAL7 or another syslog(3) facility, in any case, the "
        "LOG_ prefix optional (as oslo.log accepts them).",
    ),
    cfg.StrOpt(
        "log_date_format",
        default="%Y-%m-%d %H:%M:%S",
        help="Accepted and ignored: text lines carry ISO 8601 times with the UTC offset, "
        "JSON lines ISO 8601 UTC times, whatever this says.",
    ),
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
# [metadata_rate_limiting]: Neutron's options (docs/upstream.md, "Rate limiting in
# haproxy"), read by the agent here.
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
