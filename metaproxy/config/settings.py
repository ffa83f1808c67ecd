"""L{Settings}, the checked and immutable configuration, and how one is built from a
C{cfg.ConfigOpts}: L{read_options} reads every option, L{build_settings} derives the
fields no option holds directly (socket mode, Nova URLs, default lookup backend).
L{default_settings} builds one from the defaults alone, for tests.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from oslo_config import cfg

from metaproxy.config.errors import Sources, bad_value
from metaproxy.config.options import list_opts, register_options
from metaproxy.config.socketmode import socket_mode
from metaproxy.namespace import Namespace

__all__ = [
    "Settings",
    "settings_field",
    "read_options",
    "build_settings",
    "default_lookup_backend",
    "resolve_ovn_chassis",
    "resolve_ovn_agent_shape",
    "OVN_METADATA_AGENT_SHAPE",
    "NEUTRON_OVN_AGENT_SHAPE",
    "default_settings",
    "log_file_path",
]

#: The log file's name when only log_dir is set (oslo.log names it after the program).
LOG_FILE_NAME = "metaproxy.log"

#: The OVN chassis mode's deployment shapes, by the agent metaproxy stands in for
#: (L{resolve_ovn_agent_shape}).
OVN_METADATA_AGENT_SHAPE = "neutron-ovn-metadata-agent"
NEUTRON_OVN_AGENT_SHAPE = "neutron-ovn-agent"
#: neutron-ovn-agent's file, and its default [ovs] ovsdb_connection.
NEUTRON_OVN_AGENT_FILE = "neutron_ovn_agent.ini"
NEUTRON_OVN_AGENT_OVSDB_CONNECTION = "tcp:127.0.0.1:6640"

#: Settings fields named otherwise than their option (group, option): field.
_FIELD_NAMES = {("AGENT", "extensions"): "agent_extensions"}


@attrs.frozen(kw_only=True)
class Settings:
    """Every option, validated; names are the options' ([cache] ones get ``cache_``,
    [neutron] ones ``neutron_``, [ovs] ones ``ovs_``, and [agent] extensions is
    ``agent_extensions``). [neutron] holds keystoneauth's
    options that do not depend on the auth plugin; the plugin's own (auth_url, username,
    ...) are read by keystoneauth itself (L{metaproxy.config.keystone})."""

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
    log_file: str | None
    log_dir: str | None
    use_stderr: bool
    use_journal: bool
    use_syslog: bool
    syslog_log_facility: str
    log_date_format: str
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
    router_namespaces: str
    router_id_prefix: str
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
    neutron_auth_section: str | None
    neutron_cafile: str | None
    neutron_certfile: str | None
    neutron_keyfile: str | None
    neutron_insecure: bool
    neutron_timeout: float
    neutron_collect_timing: bool
    neutron_split_loggers: bool
    neutron_tls_ciphers: str | None
    neutron_tls_min_version: str | None
    neutron_service_type: str
    neutron_service_name: str | None
    neutron_valid_interfaces: tuple[str, ...]
    neutron_region_name: str | None
    neutron_endpoint_override: str | None
    neutron_version: str | None
    neutron_min_version: str | None
    neutron_max_version: str | None
    neutron_connect_retries: int | None
    neutron_connect_retry_delay: float | None
    neutron_status_code_retries: int | None
    neutron_status_code_retry_delay: float | None
    neutron_retriable_status_codes: tuple[int, ...] | None
    ovn_sb_connection: str
    ovn_sb_private_key: str
    ovn_sb_certificate: str
    ovn_sb_ca_cert: str
    ovsdb_connection_timeout: int
    ovsdb_retry_max_interval: int
    ovsdb_probe_interval: int
    ovs_ovsdb_connection: str
    ovs_ovsdb_connection_timeout: int
    agent_down_time: int
    #: be this chassis's OVN metadata agent (L{metaproxy.chassis}); resolved from
    #: C{[metaproxy] ovn_chassis} by L{resolve_ovn_chassis}
    ovn_chassis: bool
    #: neutron-ovn-agent's [agent] extensions (neutron_ovn_agent.ini)
    agent_extensions: tuple[str, ...]
    #: which agent the chassis mode stands in for, L{OVN_METADATA_AGENT_SHAPE} or
    #: L{NEUTRON_OVN_AGENT_SHAPE}: resolved by L{resolve_ovn_agent_shape}
    ovn_agent_shape: str
    external_pids: str
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
    #: the log file: log_dir and log_file combined as oslo.log does (None: no file)
    log_path: str | None
    nova_urls: tuple[str, ...]
    nova_url: str
    config_files: tuple[str, ...]


def settings_field(group: str, name: str) -> str:
    """The L{Settings} field of an option: [cache], [neutron] and [ovs] ones get their
    section's name as a prefix."""
    if (group, name) in _FIELD_NAMES:
        return _FIELD_NAMES[(group, name)]
    return f"{group}_{name}" if group in ("cache", "neutron", "ovs") else name


def log_file_path(log_file: str | None, log_dir: str | None) -> str | None:
    """The log file of C{log_file} and C{log_dir}, combined as oslo.log does: the file
    in the directory (an absolute file stays as it is), the directory alone gives
    C{<log_dir>/metaproxy.log}; None when neither is set."""
    if log_file and log_dir:
        return os.path.join(log_dir, log_file)
    if log_dir:
        return os.path.join(log_dir, LOG_FILE_NAME)
    return log_file or None


def _nova_url(protocol: str, host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a DNS name
    return f"{protocol}://{host}:{port}"


def read_options(conf: cfg.ConfigOpts, sources: Sources) -> dict[str, Any]:
    """Every option's value (oslo.config converts lazily), keyed by Settings field."""
    values = {}
    for group, opts in list_opts():
        node = conf if group == "DEFAULT" else conf[group]
        for opt in opts:
            try:
                values[settings_field(group, opt.dest)] = node[opt.dest]
            except (cfg.Error, ValueError) as exc:
                raise bad_value(sources, group, opt, exc) from None
    return values


def resolve_ovn_agent_shape(
    config_files: Sequence[str], set_in_files: Callable[[str, str], bool]
) -> str:
    """Which of upstream's agents the chassis mode stands in for: neutron-ovn-agent
    (L{NEUTRON_OVN_AGENT_SHAPE}) when its file is read (C{[agent] extensions} is set in
    a file, or a file read is named C{neutron_ovn_agent.ini}); otherwise the OVN
    metadata agent (L{OVN_METADATA_AGENT_SHAPE}).

    @param set_in_files: C{(group, name) -> bool}: an option is set in a file read.
    """
    if set_in_files("AGENT", "extensions") or any(
        os.path.basename(path) == NEUTRON_OVN_AGENT_FILE for path in config_files
    ):
        return NEUTRON_OVN_AGENT_SHAPE
    return OVN_METADATA_AGENT_SHAPE


def resolve_ovn_chassis(
    ovn_chassis: bool | None,
    lookup_backend: str | None,
    set_in_files: Callable[[str, str], bool],
    shape: str = OVN_METADATA_AGENT_SHAPE,
) -> bool:
    """Whether the OVN chassis mode is on: C{[metaproxy] ovn_chassis} when it is set;
    unset, when C{lookup_backend} is unset or C{ovn} and the files name the databases
    the replaced agent uses: both C{[ovs] ovsdb_connection} and C{[ovn]
    ovn_sb_connection} (an OVN metadata agent's C{neutron_ovn_metadata_agent.ini}), or
    C{[ovn] ovn_sb_connection} in the neutron-ovn-agent shape (C{neutron_ovn_agent.ini};
    that agent's C{[ovs] ovsdb_connection} has a default it uses).

    @param set_in_files: C{(group, name) -> bool}: an option is set in a file read.
    """
    if ovn_chassis is not None:
        return ovn_chassis
    local_ovs = shape == NEUTRON_OVN_AGENT_SHAPE or set_in_files("ovs", "ovsdb_connection")
    return (
        lookup_backend in (None, "ovn") and local_ovs and set_in_files("ovn", "ovn_sb_connection")
    )


def build_settings(
    values: dict[str, Any],
    config_files: tuple[str, ...],
    set_in_files: Callable[[str, str], bool] = lambda group, name: False,
) -> Settings:
    """L{Settings} from L{read_options}' values: derived fields computed, the chassis
    mode's shape (L{resolve_ovn_agent_shape}) and the mode itself resolved
    (L{resolve_ovn_chassis}; on, it takes C{lookup_backend = ovn} when none is set)."""
    values = dict(values, config_files=config_files)
    shape = values["ovn_agent_shape"] = resolve_ovn_agent_shape(config_files, set_in_files)
    values["agent_extensions"] = tuple(
        e.strip() for e in values["agent_extensions"] or () if e.strip()
    )
    if shape == NEUTRON_OVN_AGENT_SHAPE and not set_in_files("ovs", "ovsdb_connection"):
        values["ovs_ovsdb_connection"] = NEUTRON_OVN_AGENT_OVSDB_CONNECTION
    values["ovn_chassis"] = resolve_ovn_chassis(
        values["ovn_chassis"], values["lookup_backend"], set_in_files, shape
    )
    if values["ovn_chassis"] and values["lookup_backend"] is None:
        values["lookup_backend"] = "ovn"
    values["namespaces"] = tuple(values["namespaces"])
    values["neutron_valid_interfaces"] = tuple(
        i.strip() for i in values["neutron_valid_interfaces"] or () if i.strip()
    )
    if values["neutron_retriable_status_codes"] is not None:
        values["neutron_retriable_status_codes"] = tuple(values["neutron_retriable_status_codes"])
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
    values["log_path"] = log_file_path(values["log_file"], values["log_dir"])
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


_DERIVED = {
    "log_path": ("log_file", "log_dir"),
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
    values = read_options(conf, Sources(()))
    values["namespaces"] = [Namespace.parse(n) for n in values["namespaces"]]
    if "neutron_valid_interfaces" in overrides:
        overrides["neutron_valid_interfaces"] = tuple(overrides["neutron_valid_interfaces"])
    settings = attrs.evolve(build_settings(values, ()), **overrides)
    if "transport_url" in overrides and "lookup_backend" not in overrides:
        settings = attrs.evolve(
            settings, lookup_backend=default_lookup_backend(settings.transport_url)
        )
    for derived, inputs in _DERIVED.items():
        if derived not in overrides and any(name in overrides for name in inputs):
            args = [getattr(settings, name) for name in inputs]
            if derived == "socket_mode":
                value = socket_mode(*args)
            elif derived == "log_path":
                value = log_file_path(*args)
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
