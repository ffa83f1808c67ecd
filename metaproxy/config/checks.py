"""Checks across options, run by L{metaproxy.config.load.load_settings} once every
option has a valid value of its own: Nova's TLS files, the timeouts, the socket paths,
the Nova endpoints and metrics addresses, the syslog facility when syslog or journald
is used, and what the chosen lookup backend needs (L{check_neutron} for C{neutron_api},
whose auth plugin L{metaproxy.config.keystone} checks; L{check_ovn} for C{ovn}). The
first failure raises one L{ConfigError}.

This is the only config module that imports lower layers beyond L{metaproxy.namespace}:
L{metaproxy.nova.validation} (C{check_url}), L{metaproxy.ovsdb.remote} (C{parse_remotes})
and L{metaproxy.ops.log_destinations} (C{parse_facility}), all on first use, none of
which imports config.
"""

from __future__ import annotations

import os

from metaproxy.config.errors import ConfigError, Sources, option_error
from metaproxy.config.listen import parse_listen
from metaproxy.config.options import find_option
from metaproxy.config.settings import NEUTRON_OVN_AGENT_SHAPE, Settings
from metaproxy.namespace import (
    MAX_SOCKET_PATH_BYTES,
    Namespace,
    NamespaceKind,
    namespace_socket_path,
)

__all__ = [
    "HAPROXY_TIMEOUT_SERVER",
    "NEUTRON_INTERFACES",
    "cross_check",
    "check_neutron",
    "check_ovn",
    "check_chassis",
    "METADATA_EXTENSION",
]

#: keystoneauth's interface names (C{valid_interfaces}).
NEUTRON_INTERFACES = ("public", "internal", "admin")

#: haproxy's ``timeout server`` (Neutron's hard-coded 32 s): Nova must answer before it.
HAPROXY_TIMEOUT_SERVER = 32.0


def _check_file(sources: Sources, group: str, name: str, path: str, what: str) -> None:
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise option_error(
            sources,
            group,
            find_option(group, name),
            path,
            f"{what} {path!r} does not exist or is not a readable file",
            f"create it or correct the path in [{group}] {name}",
        )


_UUID = "01234567-89ab-cdef-0123-456789abcdef"  # a Neutron id's length


def _check_socket_path(
    sources: Sources, group: str, name: str, value: str, path: str, what: str
) -> None:
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH_BYTES:
        raise option_error(
            sources,
            group,
            find_option(group, name),
            value,
            f"{what}, {path!r}, is {size} bytes; haproxy accepts Unix socket paths of at "
            f"most {MAX_SOCKET_PATH_BYTES} bytes",
            "set a shorter path (or a shorter state_path)",
        )


def cross_check(s: Settings, sources: Sources) -> None:
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
            raise option_error(
                sources,
                d,
                find_option(d, have),
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
        raise option_error(
            sources,
            "metaproxy",
            find_option("metaproxy", "nova_timeout"),
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
    if s.router_id_prefix:
        try:
            Namespace(NamespaceKind.ROUTER, s.router_id_prefix)
        except ValueError:
            raise option_error(
                sources,
                "metaproxy",
                find_option("metaproxy", "router_id_prefix"),
                s.router_id_prefix,
                "is not the start of a router id: no qrouter- namespace could match it",
                "use letters, digits, '-', '_', '.' or ':' (starting with a letter or "
                "digit), or leave it empty to serve every router",
            ) from None
    if s.rate_limit_enabled and not s.ip_versions:
        raise option_error(
            sources,
            "metadata_rate_limiting",
            find_option("metadata_rate_limiting", "ip_versions"),
            "",
            "is empty while rate_limit_enabled is true, so nothing would be limited",
            "set 4, 6 or 4,6, or remove the line to use the default 4",
        )
    for url, entry in zip(s.nova_urls[1:], s.nova_metadata_endpoints, strict=False):
        from metaproxy.nova.validation import check_url  # imported here: config stays light

        problem = check_url(url)
        if problem is not None:
            raise option_error(
                sources,
                "metaproxy",
                find_option("metaproxy", "nova_metadata_endpoints"),
                list(s.nova_metadata_endpoints),
                f"entry {entry!r}: {problem}",
                "write each entry as http://host:port, https://host:port or "
                "host:port, comma separated",
            )
    for entry in s.metrics_listen:
        try:
            parse_listen(entry)
        except ValueError as e:
            raise option_error(
                sources,
                "metaproxy",
                find_option("metaproxy", "metrics_listen"),
                list(s.metrics_listen),
                f"entry {entry!r} is not valid: {e}",
                "write HOST:PORT, PORT (127.0.0.1) or unix:PATH, comma "
                "separated, or leave it empty to serve no metrics",
            ) from None
    if s.lookup_backend == "table":
        _check_file(sources, "metaproxy", "lookup_table", s.lookup_table, "port table")
    if s.lookup_backend == "rpc" and not s.transport_url:
        raise option_error(
            sources,
            "metaproxy",
            find_option("metaproxy", "lookup_backend"),
            s.lookup_backend,
            "asks neutron-server over RPC, but [DEFAULT] transport_url is not set",
            "set [DEFAULT] transport_url to neutron-server's (it is usually in "
            "neutron.conf: pass that file with --config-file too), or set lookup_backend = "
            "table",
        )
    if s.transport_url and s.rpc_response_timeout < 1:
        raise option_error(
            sources,
            d,
            find_option(d, "rpc_response_timeout"),
            s.rpc_response_timeout,
            "must be at least 1 second",
            "set a number of seconds >= 1, or remove the line to use the default 60",
        )
    if s.use_syslog or s.use_journal:
        from metaproxy.ops.log_destinations import SYSLOG_FACILITIES, parse_facility

        try:
            parse_facility(s.syslog_log_facility)
        except ValueError as e:
            raise option_error(
                sources,
                d,
                find_option(d, "syslog_log_facility"),
                s.syslog_log_facility,
                f"{e} (use_syslog or use_journal is set)",
                "set one of " + ", ".join(SYSLOG_FACILITIES) + " (the LOG_ prefix may be "
                "left out), or remove the line to use the default LOG_USER",
            ) from None
    if s.lookup_backend == "neutron_api":
        check_neutron(s, sources)
    if s.lookup_backend == "ovn":
        check_ovn(s, sources)
    if s.ovn_chassis:
        check_chassis(s, sources)


def _http_url(value: str) -> bool:
    scheme, sep, rest = value.partition("://")
    return bool(sep) and scheme.lower() in ("http", "https") and bool(rest.strip("/"))


def check_neutron(s: Settings, sources: Sources) -> None:
    """[neutron]'s session and adapter options that lookup_backend = neutron_api uses
    (the auth plugin's are L{metaproxy.config.keystone}'s): endpoint selection and the
    TLS files."""
    n = "neutron"
    why = "lookup_backend = neutron_api"

    def bad(name: str, problem: str, fix: str) -> ConfigError:
        return option_error(
            sources, n, find_option(n, name), getattr(s, f"neutron_{name}"), f"{why} {problem}", fix
        )

    for interface in s.neutron_valid_interfaces:
        if interface not in NEUTRON_INTERFACES:
            raise bad(
                "valid_interfaces",
                f"cannot use interface {interface!r}",
                "list some of public, internal, admin (keystoneauth's names)",
            )
    if s.neutron_endpoint_override and not _http_url(s.neutron_endpoint_override):
        raise bad(
            "endpoint_override",
            "needs an http:// or https:// URL",
            "set [neutron] endpoint_override, e.g. http://neutron.example:9696, "
            "or remove it to use the catalog's endpoint",
        )
    if s.neutron_version and (s.neutron_min_version or s.neutron_max_version):
        raise bad(
            "version",
            "is mutually exclusive with min_version and max_version",
            "keep version, or min_version and max_version",
        )
    if s.neutron_keyfile and not s.neutron_certfile:
        raise bad(
            "keyfile",
            "is the key of a client certificate, but certfile is not set",
            "set [neutron] certfile to the certificate as well, or remove keyfile",
        )
    if s.neutron_cafile and not s.neutron_insecure:
        _check_file(sources, n, "cafile", s.neutron_cafile, "CA bundle")
    if s.neutron_certfile:
        _check_file(sources, n, "certfile", s.neutron_certfile, "client certificate")
    if s.neutron_keyfile:
        _check_file(sources, n, "keyfile", s.neutron_keyfile, "client certificate key")


def check_ovn(s: Settings, sources: Sources) -> None:
    from metaproxy.ovsdb.remote import RemoteError, parse_remotes

    try:
        remotes = parse_remotes(s.ovn_sb_connection)
    except RemoteError as e:
        raise option_error(
            sources,
            "ovn",
            find_option("ovn", "ovn_sb_connection"),
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
                raise option_error(
                    sources,
                    "ovn",
                    find_option("ovn", name),
                    path,
                    f"ovn_sb_connection uses ssl: and needs the {what}",
                    f"set [ovn] {name} to its PEM file, or connect with tcp: or unix:",
                )
            _check_file(sources, "ovn", name, path, what)


#: neutron-ovn-agent's extension whose place the OVN chassis mode takes.
METADATA_EXTENSION = "metadata"


def check_chassis(s: Settings, sources: Sources) -> None:
    """The OVN chassis mode's options: its lookups from the Southbound, a local
    Open_vSwitch database it can connect to, and, on a neutron-ovn-agent node, that
    agent's C{metadata} extension off (two processes would serve the same chassis)."""
    from metaproxy.ovsdb.remote import RemoteError, parse_remotes

    if s.ovn_agent_shape == NEUTRON_OVN_AGENT_SHAPE and METADATA_EXTENSION in s.agent_extensions:
        others = [e for e in s.agent_extensions if e != METADATA_EXTENSION]
        keep = f"extensions = {', '.join(others)}" if others else "extensions ="
        raise option_error(
            sources,
            "AGENT",
            find_option("AGENT", "extensions"),
            list(s.agent_extensions),
            "neutron-ovn-agent's metadata extension is on, and metaproxy's OVN chassis mode "
            "would be this chassis's metadata agent as well: both would provision the "
            "ovnmeta- namespaces and serve 169.254.169.254 on the same chassis",
            f"remove metadata from [agent] extensions in neutron_ovn_agent.ini ({keep}) "
            "and restart neutron-ovn-agent (or stop it if it has no other extension), "
            "then start metaproxy; or set [metaproxy] ovn_chassis = false to leave "
            "metadata to neutron-ovn-agent",
        )

    if s.lookup_backend != "ovn":
        raise option_error(
            sources,
            "metaproxy",
            find_option("metaproxy", "lookup_backend"),
            s.lookup_backend,
            "the OVN chassis mode ([metaproxy] ovn_chassis) looks instances up in the "
            "OVN Southbound database",
            "set lookup_backend = ovn (or remove the line), or set ovn_chassis = false",
        )
    try:
        remotes = parse_remotes(s.ovs_ovsdb_connection)
    except RemoteError as e:
        remotes = ()
        why = str(e)
    else:
        why = ""
        if any(remote.kind == "ssl" for remote in remotes):
            why = "ssl: is not supported for the local Open_vSwitch database"
    if why:
        raise option_error(
            sources,
            "ovs",
            find_option("ovs", "ovsdb_connection"),
            s.ovs_ovsdb_connection,
            why,
            "write unix:PATH (usually unix:/run/openvswitch/db.sock) or tcp:IP:PORT, "
            "as for the OVN metadata agent",
        )
