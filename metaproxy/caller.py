"""Who is asking: the namespace the request came from and the instance's address.

On a per-namespace socket the namespace is the socket's, whatever the request claims. On
the shared socket it is the one namespace header the namespace proxy set. The address is
the B{last} C{X-Forwarded-For} value: haproxy's C{option forwardfor} appends its own, so
anything before it was written by the guest. An IPv4-mapped IPv6 address is looked up as
IPv4; an IPv6 link-local address is looked up by the MAC its EUI-64 identifier encodes.
"""

from __future__ import annotations

import ipaddress

import attrs

from metaproxy.namespace import InvalidNamespace, Namespace, NamespaceKind
from metaproxy.request import Request

__all__ = ["CallerError", "Identity", "identify", "mac_from_link_local"]

_XFF = b"x-forwarded-for"
_NAMESPACE_HEADERS = tuple((kind.header, kind) for kind in NamespaceKind)


@attrs.frozen
class CallerError(Exception):
    """The request does not say who is asking: answered with C{status}."""

    status: int
    message: str


@attrs.frozen
class Identity:
    """The caller as the pipeline needs it.

    @ivar namespace: where the request came from.
    @ivar ip: normalised address used for the lookup (IPv4 for IPv4-mapped callers).
    @ivar mac: for IPv6 link-local callers, the MAC to look up instead of the address.
    @ivar forwarded_for: the address as the namespace proxy wrote it, sent on to Nova
        (upstream sends the original value, not the IPv4 form).
    """

    namespace: Namespace
    ip: str
    mac: str | None
    forwarded_for: bytes


def mac_from_link_local(address: ipaddress.IPv6Address) -> str:
    """The MAC address an EUI-64 interface identifier encodes (as oslo.utils derives it).

    The middle C{ff:fe} is dropped without being checked and the universal/local bit is
    flipped: C{fe80::99} gives C{02:00:00:00:00:99}.
    """
    low = int(address) & 0xFFFFFFFFFFFFFFFF
    value = (((low & 0xFFFFFF0000000000) >> 16) + (low & 0xFFFFFF)) ^ 0x020000000000
    raw = value.to_bytes(6, "big")
    return ":".join("%02x" % b for b in raw)


def _namespace_from_headers(request: Request) -> Namespace:
    found: dict[NamespaceKind, bytes] = {}
    for name, value in request.headers:
        for header, kind in _NAMESPACE_HEADERS:
            if name == header:
                # the proxy's own copy comes last (haproxy appends); ML2 proxies delete
                # guest copies first, so there is normally exactly one
                found[kind] = value
    if not found:
        raise CallerError(400, "The request has no X-Neutron-Router-ID, X-Neutron-Network-ID "
                               "or X-OVN-Network-ID header: it did not come through a "
                               "namespace proxy.")
    if len(found) > 1:
        router = found.get(NamespaceKind.ROUTER)
        network = found.get(NamespaceKind.NETWORK, found.get(NamespaceKind.OVN))
        raise CallerError(400, "Both network %s and router %s defined." % (
            _printable(network), _printable(router)))
    kind, value = next(iter(found.items()))
    try:
        return Namespace(kind, value.decode("ascii"))
    except (UnicodeDecodeError, InvalidNamespace):
        raise CallerError(400, f"The {kind.header_name} header is not a valid id.") from None


def _printable(value: bytes | None) -> str:
    if value is None:
        return "None"
    return value.decode("ascii", "backslashreplace")[:80]


def identify(request: Request, namespace: Namespace | None) -> Identity:
    """Work out who is asking.

    @param namespace: the namespace a per-namespace socket stands for, or C{None} on the
        shared socket (the namespace then comes from the request's header).
    @raise CallerError: no usable namespace or address; the message is for the client.
    """
    if namespace is None:
        namespace = _namespace_from_headers(request)
    last = b""
    for name, value in request.headers:
        if name == _XFF:
            last = value
    if b"," in last:
        last = last.rsplit(b",", 1)[1].strip(b" \t")
    if not last:
        raise CallerError(400, "The request has no X-Forwarded-For address.")
    try:
        text = last.decode("ascii")
        address = ipaddress.ip_address(text)
    except (UnicodeDecodeError, ValueError):
        raise CallerError(400, "X-Forwarded-For is not an IP address.") from None
    mac = None
    if address.version == 6:
        mapped = address.ipv4_mapped
        if mapped is not None:
            address = mapped
        elif address.is_link_local:
            mac = mac_from_link_local(address)
    return Identity(namespace, address.compressed, mac, last)
