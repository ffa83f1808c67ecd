"""The metadata socket's file mode, and the users and groups it is meant for.

``metadata_proxy_socket_mode`` says who may connect to the metadata socket: connecting
to a Unix socket needs write permission on it, so the mode decides whether the namespace
proxies (haproxy, running as ``metadata_proxy_user``/``metadata_proxy_group``) can reach
metaproxy. The ``deduce`` rule is the legacy agent's (reference section 1.7), kept
exactly; unlike Neutron since 2025.1, metaproxy actually applies the result.
"""

from __future__ import annotations

import grp
import os
import pwd
import re

__all__ = ["MODES", "socket_mode", "resolve_user", "resolve_group"]

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
        raise ValueError(
            f"socket mode {mode!r} is not one of deduce, user, group, all"
        ) from None


def _numeric_id(value: str, kind: str) -> int | None:
    """C{value} as a uid/gid if it is written as a number, else None."""
    if not re.fullmatch(r"-?[0-9]+", value):
        return None
    number = int(value)
    if number < 0:
        raise ValueError(f"{kind} id {value!r} is negative; use a name or an id >= 0")
    return number


def resolve_user(user: str) -> int:
    """The uid for C{user}: a number is used as is, a name is looked up in the passwd
    database, and an empty string means the effective user.

    @raise ValueError: no such user (the message names it).
    """
    if user == "":
        return os.geteuid()
    number = _numeric_id(user, "user")
    if number is not None:
        return number
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ValueError(
            f"no such user {user!r} on this host: set metadata_proxy_user to an existing "
            "user name or a uid, or leave it empty for metaproxy's own user"
        ) from None


def resolve_group(group: str) -> int:
    """The gid for C{group}: a number is used as is, a name is looked up in the group
    database, and an empty string means the effective group.

    @raise ValueError: no such group (the message names it).
    """
    if group == "":
        return os.getegid()
    number = _numeric_id(group, "group")
    if number is not None:
        return number
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(
            f"no such group {group!r} on this host: set metadata_proxy_group to an "
            "existing group name or a gid, or leave it empty for metaproxy's own group"
        ) from None
