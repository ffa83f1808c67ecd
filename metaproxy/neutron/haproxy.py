"""The haproxy configuration for a namespace proxy, rendered the way Neutron renders it.

Neutron's L3, DHCP and OVN agents spawn one haproxy per router or network namespace; it
listens on the metadata address, writes the header naming the router or network, and
forwards over a Unix socket to the metadata agent.  :func:`render_haproxy_config` renders
the same file (docs/upstream.md, "haproxy configuration"): metaproxy either serves
Neutron's shared socket, so the agents' own haproxy keeps working, or one socket per
namespace, whose path :func:`namespace_socket_path` names.

Rendering is pure: no file, user or network look-up.  :func:`resolve_user` and
:func:`resolve_group` turn ``metadata_proxy_user``/``metadata_proxy_group`` into the
names haproxy needs, as Neutron does before rendering.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Iterable

import attrs

from metaproxy.namespace import MAX_SOCKET_PATH_BYTES, Namespace, NamespaceKind

__all__ = [
    "RateLimit",
    "InvalidUserOrGroup",
    "render_haproxy_config",
    "parse_ip_versions",
    "resolve_user",
    "resolve_group",
    "METADATA_ADDRESS",
    "METADATA_ADDRESS_V6",
    "METADATA_PORT",
    "MAX_SOCKET_PATH_BYTES",
]

METADATA_ADDRESS = "169.254.169.254"
METADATA_ADDRESS_V6 = "fe80::a9fe:a9fe"
#: The port haproxy listens on in a router namespace (l3_agent.ini ``metadata_port``);
#: iptables redirects 169.254.169.254:80 there.
METADATA_PORT = 9697
#: The port DHCP and OVN namespaces listen on: the metadata address itself.
_HTTP_PORT = 80


class InvalidUserOrGroup(ValueError):
    """``metadata_proxy_user`` or ``metadata_proxy_group`` names no user or group."""


def _positive(_instance: object, attribute: attrs.Attribute, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, not {value!r}")


def _ip_versions(value: Iterable[int | str]) -> tuple[int, ...]:
    return tuple(int(v) for v in value)


@attrs.frozen
class RateLimit:
    """Neutron's ``[metadata_rate_limiting]``: two per-source request-rate windows.

    A source making more than ``base_query_rate_limit`` requests within
    ``base_window_duration`` seconds, or more than ``burst_query_rate_limit`` within
    ``burst_window_duration`` seconds, gets 429.  ``ip_versions`` must hold exactly one of
    4 or 6 (the stick-table type); anything else disables limiting, as upstream does.
    """

    ip_versions: tuple[int, ...] = attrs.field(default=(4,), converter=_ip_versions)
    base_window_duration: int = attrs.field(default=10, validator=_positive)
    base_query_rate_limit: int = attrs.field(default=10, validator=_positive)
    burst_window_duration: int = attrs.field(default=10, validator=_positive)
    burst_query_rate_limit: int = attrs.field(default=10, validator=_positive)


def parse_ip_versions(ip_versions: Iterable[int | str]) -> int | None:
    """The one IP version to rate-limit, or None (no limiting) like upstream's.

    ``[4]`` → 4, ``[6]`` → 6; ``[4, 6]``, ``[5]`` or ``[]`` → None.
    """
    versions = [int(v) for v in ip_versions]
    if len(versions) != 1 or versions[0] not in (4, 6):
        return None
    return versions[0]


def resolve_user(user: str | None) -> str:
    """The user name haproxy drops to: a name or uid, or the effective user if empty.

    Raises :class:`InvalidUserOrGroup` when no such user exists (Neutron's
    ``InvalidUserOrGroupException``).
    """
    if not user:
        uid = os.geteuid()
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            raise InvalidUserOrGroup(f"the effective uid {uid} has no user name") from None
    try:
        return pwd.getpwnam(user).pw_name
    except KeyError:
        pass
    try:
        return pwd.getpwuid(int(user)).pw_name
    except (ValueError, KeyError):
        raise InvalidUserOrGroup(f"metadata_proxy_user {user!r}: no such user") from None


def resolve_group(group: str | None) -> str:
    """The group name haproxy drops to: a name or gid, or the effective group if empty."""
    if not group:
        gid = os.getegid()
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            raise InvalidUserOrGroup(f"the effective gid {gid} has no group name") from None
    try:
        return grp.getgrnam(group).gr_name
    except KeyError:
        pass
    try:
        return grp.getgrgid(int(group)).gr_name
    except (ValueError, KeyError):
        raise InvalidUserOrGroup(f"metadata_proxy_group {group!r}: no such group") from None


# A value written into the file as one unquoted haproxy word: no whitespace (it would
# split the word or start a new line, i.e. inject configuration), no quote, backslash,
# '#' (comment) or '$' (variable), no control character.
_WORD = re.compile(r"[^\s\"'\\#$\x00-\x1f\x7f]+\Z")


def _word(name: str, value: str) -> str:
    if not isinstance(value, str) or not _WORD.match(value):
        raise ValueError(
            f"{name} {value!r} cannot be written into the haproxy configuration: "
            "it must be non-empty, without whitespace, quotes, backslashes, '#' or '$'"
        )
    return value


def _socket_path(value: str) -> str:
    _word("socket_path", value)
    if not value.startswith("/"):
        # haproxy takes a server address as a Unix socket only when it starts with '/'.
        raise ValueError(f"socket_path {value!r} must be an absolute path")
    if len(os.fsencode(value)) > MAX_SOCKET_PATH_BYTES:
        raise ValueError(
            f"socket_path {value!r} is {len(os.fsencode(value))} bytes long; haproxy accepts "
            f"at most {MAX_SOCKET_PATH_BYTES} (use a shorter socket directory)"
        )
    return value


def _seconds(name: str, value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer number of seconds >= 1, not {value!r}")
    return f"{value}s"


_GLOBAL = """\
global
    log         /dev/log local0 {log_level}
    log-tag     haproxy-metadata-proxy-{id}
    user        {user}
    group       {group}
    maxconn     1024
    nbthread    2
    pidfile     {pidfile}
    daemon

defaults
    log global
    mode http
    option httplog
    option dontlognull
    option http-server-close
    option forwardfor
    retries                 3
    timeout http-request    {timeout_http_request}
    timeout connect         {timeout_connect}
    timeout client          {timeout_client}
    timeout server          {timeout_server}
    timeout http-keep-alive {timeout_http_keep_alive}
"""

_RATE_LIMIT_BACKENDS = """\
backend base_rate_limiter
    stick-table type {table_type} size 10k expire {expire}s store http_req_rate({base_window}s)
backend burst_rate_limiter
    stick-table type {table_type} size 10k expire {expire}s store http_req_rate({burst_window}s)
"""

# Neutron's template, line for line (its long lines included).
_RATE_LIMIT_RULES = """\
    http-request track-sc0 src table base_rate_limiter
    http-request track-sc1 src table burst_rate_limiter
    http-request deny deny_status 429 if {{ src_http_req_rate(base_rate_limiter) gt {base_limit} }}
    http-request deny deny_status 429 if {{ src_http_req_rate(burst_rate_limiter) gt {burst_limit} }}
"""  # noqa: E501


def _header_lines(namespace: Namespace) -> list[str]:
    kind = namespace.kind
    if kind is NamespaceKind.OVN:
        # Upstream only adds X-OVN-Network-ID.  A guest that sends its own copy then
        # reaches the agent with two values (webob joins them with a comma, which
        # matches no network, so upstream answers 404).  Deleting the header first
        # means a guest-supplied copy can never reach the agent: the only value it
        # sees is the one haproxy writes here.
        return [
            f"http-request del-header {kind.header_name}",
            f"http-request add-header {kind.header_name} {namespace.id}",
        ]
    # ML2/OVS: delete the *other* id header, then set this one (set-header replaces
    # any client-supplied copy), as upstream does since LP #1865036.
    other = NamespaceKind.NETWORK if kind is NamespaceKind.ROUTER else NamespaceKind.ROUTER
    return [
        f"http-request del-header {other.header_name}",
        f"http-request set-header {kind.header_name} {namespace.id}",
    ]


def render_haproxy_config(
    namespace: Namespace,
    socket_path: str,
    user: str,
    group: str,
    pidfile: str,
    *,
    debug: bool = False,
    ipv6_interface: str | None = None,
    bind_v6_any: bool = False,
    metadata_port: int = METADATA_PORT,
    timeout_http_request: int = 30,
    timeout_connect: int = 30,
    timeout_client: int = 32,
    timeout_server: int = 32,
    timeout_http_keep_alive: int = 30,
    rate_limit: RateLimit | None = None,
) -> str:
    """Render the haproxy configuration for ``namespace``, forwarding to ``socket_path``.

    A router namespace binds ``0.0.0.0:<metadata_port>`` (``:::<metadata_port>`` with
    ``bind_v6_any``); a DHCP or OVN namespace binds ``169.254.169.254:80`` and, with
    ``ipv6_interface``, ``[fe80::a9fe:a9fe]:80`` on that interface.  ``user`` and
    ``group`` are names (see :func:`resolve_user`).  ``rate_limit`` None, or with
    ``ip_versions`` other than exactly one of 4 or 6, renders no rate limiting.

    Raises ValueError for an option that does not apply to the namespace's kind or a
    value that cannot be written into the file safely.
    """
    kind = namespace.kind
    if kind is NamespaceKind.ROUTER:
        if ipv6_interface is not None:
            raise ValueError(
                "ipv6_interface applies to DHCP and OVN namespaces; a router namespace "
                "binds one address for both (bind_v6_any)"
            )
        if (
            isinstance(metadata_port, bool)
            or not isinstance(metadata_port, int)
            or not (1 <= metadata_port <= 65535)
        ):
            raise ValueError(f"metadata_port must be a TCP port (1-65535), not {metadata_port!r}")
        binds = [f"bind {':::' if bind_v6_any else '0.0.0.0:'}{metadata_port}"]
    else:
        if bind_v6_any:
            raise ValueError(
                "bind_v6_any applies to router namespaces; a DHCP or OVN namespace binds "
                "169.254.169.254 (and fe80::a9fe:a9fe with ipv6_interface)"
            )
        binds = [f"bind {METADATA_ADDRESS}:{_HTTP_PORT}"]
        if ipv6_interface is not None:
            binds.append(
                f"bind [{METADATA_ADDRESS_V6}]:{_HTTP_PORT} "
                f"interface {_word('ipv6_interface', ipv6_interface)}"
            )

    text = _GLOBAL.format(
        log_level="debug" if debug else "info",
        id=namespace.id,
        user=_word("user", user),
        group=_word("group", group),
        pidfile=_word("pidfile", pidfile),
        timeout_http_request=_seconds("timeout_http_request", timeout_http_request),
        timeout_connect=_seconds("timeout_connect", timeout_connect),
        timeout_client=_seconds("timeout_client", timeout_client),
        timeout_server=_seconds("timeout_server", timeout_server),
        timeout_http_keep_alive=_seconds("timeout_http_keep_alive", timeout_http_keep_alive),
    )

    ip_version = parse_ip_versions(rate_limit.ip_versions) if rate_limit is not None else None
    listen = [f"    {line}" for line in binds]
    if ip_version is not None:
        assert rate_limit is not None
        text += "\n" + _RATE_LIMIT_BACKENDS.format(
            table_type="ipv6" if ip_version == 6 else "ip",
            expire=max(rate_limit.base_window_duration, rate_limit.burst_window_duration),
            base_window=rate_limit.base_window_duration,
            burst_window=rate_limit.burst_window_duration,
        )
        listen.extend(
            _RATE_LIMIT_RULES.format(
                base_limit=rate_limit.base_query_rate_limit,
                burst_limit=rate_limit.burst_query_rate_limit,
            ).splitlines()
        )
    listen.append(f"    server metadata {_socket_path(socket_path)}")
    listen.extend(f"    {line}" for line in _header_lines(namespace))
    text += "\nlisten listener\n" + "\n".join(listen) + "\n"
    return text
