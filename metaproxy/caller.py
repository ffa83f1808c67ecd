"""Who is asking: the namespace the request came from and the instance's address.

On a per-namespace socket the namespace is the socket's, whatever the request claims. On
the shared socket it is the one namespace header the namespace proxy set. The address is
the B{last} C{X-Forwarded-For} value: haproxy's C{option forwardfor} appends its own, so
anything before it was written by the guest. An IPv4-mapped IPv6 address is looked up as
IPv4; an IPv6 link-local address is looked up by the MAC its EUI-64 identifier encodes.

On a TCP listener inside the namespace itself (no haproxy in between,
L{metaproxy.http.listeners.Listeners.add_tcp}) the caller comes from the kernel instead:
the namespace is the listener's and the address is the connection's peer
(L{identify_peer}). Nothing the guest sends changes it: every C{X-Forwarded-For} and
namespace header on such a connection was written by the guest, and is ignored.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Protocol

import attrs

from metaproxy.namespace import InvalidNamespace, Namespace, NamespaceKind

__all__ = ["CallerError", "Identity", "identify", "identify_peer", "mac_from_link_local"]


class ProxiedRequest(Protocol):
    """What identification reads of a request: the two things haproxy sets
    (L{metaproxy.http.request.Request} has them). Only this shape is known here, so the
    server shell can identify a TCP listener's peer without a circle of imports."""

    #: the value of the last C{X-Forwarded-For} header (C{b""} if none)
    forwarded_for: bytes
    #: the C{X-Neutron-Router-ID}, C{X-Neutron-Network-ID}, C{X-OVN-Network-ID} headers
    namespace_headers: tuple[tuple[bytes, bytes], ...]


_KIND_BY_HEADER = {kind.header: kind for kind in NamespaceKind}
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: A dotted-quad IPv4 address exactly as C{ipaddress} writes it (no leading zeros): the
#: usual X-Forwarded-For, taken as it is without building an address object.
_PLAIN_IPV4 = re.compile(rb"(?:" + _OCTET + rb"\.){3}" + _OCTET + rb"\Z")
_PLAIN_IPV4_TEXT = re.compile(_PLAIN_IPV4.pattern.decode("ascii"))

#: Namespaces already made from a header, by C{(header, value)}: ~28 requests per boot
#: name the same one. Bounded: emptied when full.
_namespaces: dict[tuple[bytes, bytes], Namespace] = {}
_MAX_NAMESPACES = 16384


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
        (upstream sends the original value, not the IPv4 form); for a TCP peer, the
        peer's address as the kernel gives it.
    @ivar from_peer: the address is the TCP peer's (L{identify_peer}): every
        C{X-Forwarded-For} of the request is the guest's own.
    """

    namespace: Namespace
    ip: str
    mac: str | None
    forwarded_for: bytes
    from_peer: bool = False


def mac_from_link_local(address: ipaddress.IPv6Address) -> str:
    """The MAC address an EUI-64 interface identifier encodes (as oslo.utils derives it).

    The middle C{ff:fe} is dropped without being checked and the universal/local bit is
    flipped: C{fe80::99} gives C{02:00:00:00:00:99}.
    """
    low = int(address) & 0xFFFFFFFFFFFFFFFF
    value = (((low & 0xFFFFFF0000000000) >> 16) + (low & 0xFFFFFF)) ^ 0x020000000000
    raw = value.to_bytes(6, "big")
    return ":".join("%02x" % b for b in raw)


def _namespace_from_headers(request: ProxiedRequest) -> Namespace:
    headers = request.namespace_headers
    if len(headers) == 1:
        header, value = headers[0]  # the usual case: the proxy's own header, alone
    else:
        found: dict[NamespaceKind, tuple[bytes, bytes]] = {}
        for header, value in headers:
            # the proxy's own copy comes last (haproxy appends); ML2 proxies delete
            # guest copies first, so there is normally exactly one
            found[_KIND_BY_HEADER[header]] = (header, value)
        if not found:
            raise CallerError(
                400,
                "The request has no X-Neutron-Router-ID, "
                "X-Neutron-Network-ID or X-OVN-Network-ID header: it did "
                "not come through a namespace proxy.",
            )
        if len(found) > 1:
            router = found.get(NamespaceKind.ROUTER)
            network = found.get(NamespaceKind.NETWORK, found.get(NamespaceKind.OVN))
            raise CallerError(
                400,
                "Both network %s and router %s defined."
                % (_printable(network), _printable(router)),
            )
        header, value = next(iter(found.values()))
    namespace = _namespaces.get((header, value))
    if namespace is None:
        kind = _KIND_BY_HEADER[header]
        try:
            namespace = Namespace(kind, value.decode("ascii"))
        except (UnicodeDecodeError, InvalidNamespace):
            raise CallerError(400, f"The {kind.header_name} header is not a valid id.") from None
        if len(_namespaces) >= _MAX_NAMESPACES:
            _namespaces.clear()
        _namespaces[header, value] = namespace
    return namespace


def _printable(field: tuple[bytes, bytes] | None) -> str:
    if field is None:
        return "None"
    return field[1].decode("ascii", "backslashreplace")[:80]


def identify(request: ProxiedRequest, namespace: Namespace | None) -> Identity:
    """Work out who is asking.

    @param namespace: the namespace a per-namespace socket stands for, or C{None} on the
        shared socket (the namespace then comes from the request's header).
    @raise CallerError: no usable namespace or address; the message is for the client.
    """
    if namespace is None:
        namespace = _namespace_from_headers(request)
    last = request.forwarded_for
    if b"," in last:
        last = last.rsplit(b",", 1)[1].strip(b" \t")
    if not last:
        raise CallerError(400, "The request has no X-Forwarded-For address.")
    if _PLAIN_IPV4.match(last):
        return Identity(namespace, last.decode("ascii"), None, last)
    try:
        text = last.decode("ascii")
        address = ipaddress.ip_address(text)
    except (UnicodeDecodeError, ValueError):
        raise CallerError(400, "X-Forwarded-For is not an IP address.") from None
    return _identity(namespace, address, last, False)


def identify_peer(namespace: Namespace, host: str) -> Identity:
    """The caller of a connection to a TCP listener inside C{namespace}: its peer.

    @param host: the peer's address as the kernel reports it (Twisted's
        C{transport.getPeer().host}): dotted IPv4, or IPv6 with the scope of a
        link-local address after C{%} (C{fe80::1%eth0}), which is dropped.
    @raise CallerError: C{host} is not an IP address (never, from the kernel).
    """
    if _PLAIN_IPV4_TEXT.match(host):
        return Identity(namespace, host, None, host.encode("ascii"), True)
    text = host.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise CallerError(400, "The connection's peer is not an IP address.") from None
    return _identity(namespace, address, text.encode("ascii"), True)


def _identity(
    namespace: Namespace,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    forwarded_for: bytes,
    from_peer: bool,
) -> Identity:
    mac = None
    if address.version == 6:
        mapped = address.ipv4_mapped
        if mapped is not None:
            address = mapped
        elif address.is_link_local:
            mac = mac_from_link_local(address)
    return Identity(namespace, address.compressed, mac, forwarded_for, from_peer)
