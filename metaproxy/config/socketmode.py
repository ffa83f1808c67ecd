"""The metadata socket's file mode, deduced from the users and groups it is meant for.

``metadata_proxy_socket_mode`` says who may connect to the metadata socket: connecting
to a Unix socket needs write permission on it, so the mode decides whether the namespace
proxies (haproxy, running as ``metadata_proxy_user``/``metadata_proxy_group``) can reach
metaproxy. The ``deduce`` rule is the legacy agent's (docs/upstream.md, "Socket and workers"), kept
exactly; unlike Neutron since 2025.1, metaproxy actually applies the result.
"""

from __future__ import annotations

import grp
import os
import pwd

__all__ = ["MODES", "socket_mode"]

#: The values of ``metadata_proxy_socket_mode`` other than ``deduce``, and their modes.
MODES: dict[str, int] = {"user": 0o644, "group": 0o664, "all": 0o666}


def _is_effective_user(user: str) -> bool:
    """Is C{user} (a uid or a name) the effective user of this process?"""
    euid = os.geteuid()
    if user == str(euid):
        return True
    try:
        return user == pwd.getpwuid(euid).pw_name
    except KeyError:  # the effective uid has no passwd entry (a container, say)
        return False


def _is_effective_group(group: str) -> bool:
    """Is C{group} (a gid or a name) the effective group of this process?"""
    egid = os.getegid()
    if group == str(egid):
        return True
    try:
        return group == grp.getgrgid(egid).gr_name
    except KeyError:
        return False


def socket_mode(mode: str, user: str, group: str) -> int:
    """The permission bits for the metadata socket.

    C{mode} is ``metadata_proxy_socket_mode``: ``user`` (0o644), ``group`` (0o664),
    ``all`` (0o666), or ``deduce``, which picks ``user`` when C{user} is empty, ``0``,
    ``root`` or the effective user; otherwise ``group`` when C{group} is empty or the
    effective group; otherwise ``all``.

    @raise ValueError: C{mode} is none of these.
    """
    if mode == "deduce":
        if user in ("", "0", "root") or _is_effective_user(user):
            mode = "user"
        elif group == "" or _is_effective_group(group):
            mode = "group"
        else:
            mode = "all"
    try:
        return MODES[mode]
    except KeyError:
        raise ValueError(f"socket mode {mode!r} is not one of deduce, user, group, all") from None
