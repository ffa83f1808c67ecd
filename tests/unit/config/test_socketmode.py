"""The metadata socket's mode (docs/upstream.md, "Socket and workers"; TPB's socket-mode
tests) and the user/group resolution used for chown and haproxy's configuration."""

from __future__ import annotations

import grp
import os
import pwd

import pytest

from metaproxy.config import socketmode
from metaproxy.config.socketmode import socket_mode


def _not_my_uid() -> str:
    return str(os.geteuid() + 1)


def _not_my_gid() -> str:
    return str(os.getegid() + 1)


@pytest.mark.parametrize("mode, expected", [("user", 0o644), ("group", 0o664), ("all", 0o666)])
def test_explicit_modes(mode, expected):
    """user, group and all map to 0644, 0664 and 0666 whatever the user and group."""
    assert socket_mode(mode, _not_my_uid(), _not_my_gid()) == expected


@pytest.mark.parametrize("user", ["", "0", "root"])
def test_deduce_root_or_empty_user_is_user_mode(user):
    """deduce with the user empty, 0 or root gives 0644 (TPB: deduce + user root)."""
    assert socket_mode("deduce", user, _not_my_gid()) == 0o644


def test_deduce_effective_uid_is_user_mode():
    """deduce with the effective uid written as a number gives 0644."""
    assert socket_mode("deduce", str(os.geteuid()), _not_my_gid()) == 0o644


def test_deduce_effective_user_by_name(monkeypatch):
    """deduce matches the effective user by name too (pwd), not only by number."""
    nobody = pwd.getpwnam("nobody")
    monkeypatch.setattr(socketmode.os, "geteuid", lambda: nobody.pw_uid)
    assert socket_mode("deduce", "nobody", "") == 0o644
    assert socket_mode("deduce", "root", _not_my_gid()) == 0o644
    assert socket_mode("deduce", "0", _not_my_gid()) == 0o644


def test_deduce_other_user_effective_group_is_group_mode():
    """TPB: deduce + non-effective user + effective group gives 0664 (gid or name)."""
    assert socket_mode("deduce", _not_my_uid(), str(os.getegid())) == 0o664
    assert socket_mode("deduce", _not_my_uid(), grp.getgrgid(os.getegid()).gr_name) == 0o664


def test_deduce_other_user_empty_group_is_group_mode():
    """deduce + non-effective user + empty group (= the effective group) gives 0664."""
    assert socket_mode("deduce", _not_my_uid(), "") == 0o664


def test_deduce_other_user_other_group_is_all_mode():
    """TPB: deduce + non-effective user + non-effective group gives 0666."""
    assert socket_mode("deduce", _not_my_uid(), _not_my_gid()) == 0o666


def test_deduce_unknown_names_are_not_effective():
    """Names with no passwd/group entry are simply not the effective ones."""
    assert socket_mode("deduce", "no-such-user-xyz", "no-such-group-xyz") == 0o666


def test_deduce_effective_user_without_passwd_entry(monkeypatch):
    """An effective uid with no passwd entry (a container) only matches by number."""
    monkeypatch.setattr(socketmode.os, "geteuid", lambda: 987654)
    assert socket_mode("deduce", "987654", _not_my_gid()) == 0o644
    assert socket_mode("deduce", "someone", _not_my_gid()) == 0o666


def test_unknown_mode_is_rejected():
    """A mode other than deduce/user/group/all raises ValueError naming it."""
    with pytest.raises(ValueError, match="'everyone'"):
        socket_mode("everyone", "", "")
