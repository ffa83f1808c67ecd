"""Reading links and addresses from rtnetlink messages as the kernel sends them (built
here byte by byte from the message layout), and from this namespace's kernel."""

from __future__ import annotations

import socket
import struct

import pytest

from metaproxy.chassis.linkdump import link_states, parse_addresses, parse_links
from metaproxy.chassis.steps import LinkState

RTM_NEWLINK, RTM_NEWADDR, NLMSG_DONE = 16, 20, 3


def attribute(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def message(kind: int, body: bytes, seq: int = 1) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 2, seq, 0) + body


def link(index: int, name: str, mac: bytes, mtu: int, flags: int) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0)
    body += attribute(1, mac)  # IFLA_ADDRESS
    body += attribute(3, name.encode() + b"\0")  # IFLA_IFNAME
    body += attribute(4, struct.pack("=I", mtu))  # IFLA_MTU
    body += attribute(16, b"\x01\x02\x03")  # IFLA_LINKMODE-like: skipped, odd length
    return message(RTM_NEWLINK, body)


def address(index: int, family: int, raw: bytes, prefixlen: int) -> bytes:
    body = struct.pack("=BBBBI", family, prefixlen, 0, 0, index)
    return message(RTM_NEWADDR, body + attribute(1, raw))  # IFA_ADDRESS


def test_the_links_named_are_read_with_their_mac_mtu_and_state():
    data = (
        link(1, "lo", bytes(6), 65536, 0x9)
        + link(7, "tapabc0", bytes.fromhex("FA163E0A0B0C"), 1442, 0x1003)
        + link(8, "tapabc1", bytes.fromhex("fa163e000001"), 1500, 0x1002)
        + message(NLMSG_DONE, b"\0\0\0\0")
    )
    found = parse_links(data, {"tapabc0", "tapabc1", "missing"})
    assert found == {
        7: LinkState(name="tapabc0", mac="fa:16:3e:0a:0b:0c", mtu=1442, up=True),
        8: LinkState(name="tapabc1", mac="fa:16:3e:00:00:01", mtu=1500, up=False),
    }


def test_the_addresses_of_the_links_asked_for_are_read_with_their_prefix():
    data = (
        address(7, socket.AF_INET, bytes([10, 0, 3, 2]), 24)
        + address(7, socket.AF_INET, bytes([169, 254, 169, 254]), 32)
        + address(7, socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "fe80::a9fe:a9fe"), 128)
        + address(9, socket.AF_INET, bytes([192, 168, 0, 1]), 24)
    )
    assert parse_addresses(data, [7, 8]) == {
        7: {"10.0.3.2/24", "169.254.169.254/32", "fe80::a9fe:a9fe/128"},
        8: set(),
    }


def test_a_truncated_message_ends_the_reading_without_an_error():
    whole = link(7, "tapabc0", bytes(6), 1442, 1)
    assert parse_links(whole[:-9], {"tapabc0"}) == {}
    assert parse_links(whole[:10], {"tapabc0"}) == {}
    assert parse_links(whole + whole[:20], {"tapabc0"}) == {
        7: LinkState("tapabc0", mac="00:00:00:00:00:00", mtu=1442, up=True)
    }


def test_this_namespace_loopback_is_read_from_the_kernel():
    try:
        found = link_states(["lo", "surely-no-such-link"])
    except OSError as e:  # a sandbox without netlink
        pytest.skip(f"no rtnetlink here: {e}")
    assert set(found) == {"lo"}
    lo = found["lo"]
    assert lo.mac == "00:00:00:00:00:00"
    assert lo.mtu > 0
    if lo.up:
        assert "127.0.0.1/8" in lo.addresses
