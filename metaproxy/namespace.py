"""Namespaces: which router or network a request comes from.

A namespace is named the way Neutron names it on the node (``qrouter-<router id>``,
``qdhcp-<network id>``, ``ovnmeta-<network id>``); its kind decides which header the
namespace proxy sets and how the instance is looked up (a router's networks, or one
network).
"""

from __future__ import annotations

import enum
import re

import attrs

__all__ = [
    "NamespaceKind",
    "Namespace",
    "InvalidNamespace",
    "namespace_socket_path",
    "MAX_SOCKET_PATH_BYTES",
]

#: The longest Unix socket path haproxy accepts, in bytes; it applies to every socket
#: metaproxy listens on, since the namespace proxies' ``server`` line connects to it.
#: Why 97: Linux's sun_path holds 108 bytes with the NUL, and haproxy keeps room for a
#: ``.<pid>.tmp`` suffix on every Unix address (src/tools.c ``str2sa_range``). A longer
#: path fails ``haproxy -c`` with "socket path ... too long (max 97)".
MAX_SOCKET_PATH_BYTES = 97


class InvalidNamespace(ValueError):
    """A namespace name or id that metaproxy cannot use."""


class NamespaceKind(enum.Enum):
    """The three kinds of namespace proxy, with the header each one sets."""

    ROUTER = "router"
    NETWORK = "network"
    OVN = "ovn"

    @property
    def prefix(self) -> str:
        return _PREFIX[self]

    @property
    def header(self) -> bytes:
        """The request header (lower case) the namespace proxy sets for this kind."""
        return _HEADER[self]

    @property
    def header_name(self) -> str:
        """The header as Neutron spells it, for messages and haproxy configuration."""
        return _HEADER_NAME[self]

    @property
    def noun(self) -> str:
        """``router`` or ``network``: how upstream's messages name the id."""
        return "router" if self is NamespaceKind.ROUTER else "network"


_PREFIX = {
    NamespaceKind.ROUTER: "qrouter-",
    NamespaceKind.NETWORK: "qdhcp-",
    NamespaceKind.OVN: "ovnmeta-",
}
_HEADER_NAME = {
    NamespaceKind.ROUTER: "X-Neutron-Router-ID",
    NamespaceKind.NETWORK: "X-Neutron-Network-ID",
    NamespaceKind.OVN: "X-OVN-Network-ID",
}
_HEADER = {kind: name.lower().encode("ascii") for kind, name in _HEADER_NAME.items()}

# Neutron ids are UUIDs; accept any id made of the characters a file name and a header
# value can carry safely, so a test or a hand-made deployment can use short ids.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")


@attrs.frozen
class Namespace:
    """One namespace: its kind and the router or network id it stands for."""

    kind: NamespaceKind
    id: str = attrs.field()

    @id.validator
    def _check_id(self, _attribute: object, value: str) -> None:
        if not isinstance(value, str) or not _ID.match(value):
            raise InvalidNamespace(
                f"{value!r} is not a valid router or network id "
                "(letters, digits, '-', '_', '.', ':'; at most 64 characters)"
            )

    @property
    def name(self) -> str:
        """The namespace's name on the node, e.g. ``qrouter-<id>``."""
        return self.kind.prefix + self.id

    @classmethod
    def parse(cls, name: str) -> Namespace:
        """Parse ``qrouter-<id>``, ``qdhcp-<id>`` or ``ovnmeta-<id>``."""
        for kind in NamespaceKind:
            if name.startswith(kind.prefix):
                return cls(kind, name[len(kind.prefix) :])
        raise InvalidNamespace(
            f"{name!r} is not a namespace name: expected qrouter-<router id>, "
            "qdhcp-<network id> or ovnmeta-<network id>"
        )

    def __str__(self) -> str:
        return self.name


def namespace_socket_path(socket_dir: str, namespace: Namespace) -> str:
    """Where a namespace's own socket lives: C{<socket_dir>/<namespace name>.sock}."""
    return f"{socket_dir.rstrip('/')}/{namespace.name}.sock"
