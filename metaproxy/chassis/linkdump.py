"""The links of the calling thread's network namespace, by name, from one dump of the
links and one of the addresses on a plain rtnetlink socket (blocking).

Why not pyroute2 here: its C{IPRoute.get_links()} turns every link of the dump into
objects (some 28 KiB each), and the root namespace of a chassis with 1,000 networks
holds a link per VM and per metadata veth: about 3,000 links took 3.4 s and some 83 MiB
per dump, once per provisioning pass, memory that CPython's object arenas then kept.
Only four fields of the few links wanted are read here, from the bytes as they come:
the name, the MAC, the MTU, the flags, and then the addresses of those links; nothing
else is decoded or kept.

The socket belongs to the namespace of the thread that opens it
(L{metaproxy.chassis.netlink} enters the namespace first).
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import struct
from collections.abc import Iterable, Iterator

from metaproxy.chassis.steps import LinkState

__all__ = ["link_states", "parse_links", "parse_addresses"]

_NETLINK_ROUTE = 0
_RTM_NEWLINK, _RTM_GETLINK = 16, 18
_RTM_NEWADDR, _RTM_GETADDR = 20, 22
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU = 1, 3, 4
_IFA_ADDRESS = 1
_IFF_UP = 1

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefix length, flags, scope, index
_ATTR = struct.Struct("=HH")  # rtattr: length, type
_ERRNO = struct.Struct("=i")
_RECEIVE = 1 << 16

_sequence = itertools.count(1)


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attributes(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, start, end) of each attribute in C{data[start:end]}."""
    while start + _ATTR.size <= end:
        length, kind = _ATTR.unpack_from(data, start)
        if length < _ATTR.size:
            return
        yield kind & 0x3FFF, start + _ATTR.size, start + length
        start += _align(length)


def _messages(data: bytes, wanted: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the payload of each message of type C{wanted} in C{data} (a
    message cut short ends the reading)."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _flags, _seq, _port = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size or offset + length > len(data):
            return
        if kind == wanted:
            yield offset + _HEADER.size, offset + length
        offset += _align(length)


def parse_links(data: bytes, names: set[str]) -> dict[int, LinkState]:
    """The links named in C{names} among C{RTM_NEWLINK} messages, by index."""
    found = {}
    for start, end in _messages(data, _RTM_NEWLINK):
        if end - start < _IFINFO.size:
            continue
        _family, _type, index, flags, _change = _IFINFO.unpack_from(data, start)
        name, mac, mtu = None, "", 0
        for kind, a, b in _attributes(data, start + _IFINFO.size, end):
            if kind == _IFLA_IFNAME:
                name = data[a:b].split(b"\0", 1)[0].decode(errors="replace")
                if name not in names:
                    break
            elif kind == _IFLA_ADDRESS:
                mac = data[a:b].hex(":")
            elif kind == _IFLA_MTU and b - a >= 4:
                mtu = struct.unpack_from("=I", data, a)[0]
        if name is not None and name in names:
            found[index] = LinkState(name=name, mac=mac, mtu=mtu, up=bool(flags & _IFF_UP))
    return found


def parse_addresses(data: bytes, indexes: Iterable[int]) -> dict[int, set[str]]:
    """The addresses (C{ADDRESS/PREFIX}) of the links C{indexes} among C{RTM_NEWADDR}
    messages."""
    found: dict[int, set[str]] = {index: set() for index in indexes}
    for start, end in _messages(data, _RTM_NEWADDR):
        if end - start < _IFADDR.size:
            continue
        family, prefixlen, _flags, _scope, index = _IFADDR.unpack_from(data, start)
        addresses = found.get(index)
        if addresses is None:
            continue
        for kind, a, b in _attributes(data, start + _IFADDR.size, end):
            if kind == _IFA_ADDRESS and family in (socket.AF_INET, socket.AF_INET6):
                address = ipaddress.ip_address(data[a:b])
                addresses.add(f"{address}/{prefixlen}")
    return found


def _dump(sock: socket.socket, request_type: int, body: bytes) -> Iterator[bytes]:
    """The chunks of a dump's answer, as received (up to C{NLMSG_DONE})."""
    sequence = next(_sequence) & 0xFFFFFFFF
    header = _HEADER.pack(
        _HEADER.size + len(body), request_type, _NLM_F_REQUEST | _NLM_F_DUMP, sequence, 0
    )
    sock.send(header + body)
    while True:
        data = sock.recv(_RECEIVE)
        done = False
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _flags, seq, _port = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size:
                break
            if seq == sequence:
                if kind == _NLMSG_DONE:
                    done = True
                elif kind == _NLMSG_ERROR:
                    code = -_ERRNO.unpack_from(data, offset + _HEADER.size)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    done = True
            offset += _align(length)
        yield data
        if done or not data:
            return


def link_states(names: Iterable[str]) -> dict[str, LinkState]:
    """The links named C{names} (those that exist) in the calling thread's namespace,
    with their addresses. @raise OSError: netlink refused (or no permission)."""
    wanted = set(names)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        links: dict[int, LinkState] = {}
        for chunk in _dump(sock, _RTM_GETLINK, _IFINFO.pack(0, 0, 0, 0, 0)):
            links.update(parse_links(chunk, wanted))
        addresses: dict[int, set[str]] = {index: set() for index in links}
        if links:
            for chunk in _dump(sock, _RTM_GETADDR, _IFADDR.pack(0, 0, 0, 0, 0)):
                for index, found in parse_addresses(chunk, links).items():
                    addresses[index] |= found
    return {
        link.name: LinkState(
            name=link.name,
            mac=link.mac,
            mtu=link.mtu,
            up=link.up,
            addresses=frozenset(ipaddress.ip_interface(a).with_prefixlen for a in addresses[index]),
        )
        for index, link in links.items()
    }
