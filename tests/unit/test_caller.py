"""Identifying the caller: namespace and address (docs/upstream.md, "Identifying the
caller"; tests/CHECKLIST.md)."""

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaproxy import caller
from metaproxy.caller import CallerError, identify, identify_peer, mac_from_link_local
from metaproxy.http.request import Request
from metaproxy.namespace import Namespace, NamespaceKind


def request(*headers):
    return Request(b"GET", b"/", b"HTTP/1.1", tuple((n.lower(), v) for n, v in headers))


ROUTER = (b"X-Neutron-Router-ID", b"r1")
NETWORK = (b"X-Neutron-Network-ID", b"n1")
OVN = (b"X-OVN-Network-ID", b"n2")


@pytest.mark.parametrize(
    "header, kind, id_",
    [
        (ROUTER, NamespaceKind.ROUTER, "r1"),
        (NETWORK, NamespaceKind.NETWORK, "n1"),
        (OVN, NamespaceKind.OVN, "n2"),
    ],
)
def test_shared_socket_namespace_from_header(header, kind, id_):
    """On the shared socket the namespace comes from the one namespace header."""
    who = identify(request(header, (b"X-Forwarded-For", b"192.168.1.1")), None)
    assert who.namespace == Namespace(kind, id_)
    assert who.ip == "192.168.1.1" and who.mac is None


def test_both_router_and_network_is_400():
    """Both the network and the router header: 400 with upstream's message, no lookup."""
    with pytest.raises(CallerError) as info:
        identify(request(ROUTER, NETWORK, (b"X-Forwarded-For", b"10.0.0.5")), None)
    assert info.value.status == 400
    assert info.value.message == "Both network n1 and router r1 defined."


def test_ovn_header_with_router_header_is_400():
    """A guest-supplied router header next to the OVN header is refused, not guessed."""
    with pytest.raises(CallerError) as info:
        identify(request(OVN, ROUTER, (b"X-Forwarded-For", b"10.0.0.5")), None)
    assert info.value.status == 400


def test_no_namespace_header_on_shared_socket_is_400():
    """Neither header (a health check bypassing haproxy) is a clear 400."""
    with pytest.raises(CallerError) as info:
        identify(request((b"X-Forwarded-For", b"10.0.0.5")), None)
    assert info.value.status == 400 and "X-Neutron-Router-ID" in info.value.message


def test_per_namespace_socket_ignores_headers():
    """On a namespace's own socket, headers claiming another namespace are ignored."""
    own = Namespace(NamespaceKind.ROUTER, "mine")
    who = identify(
        request((b"X-Neutron-Router-ID", b"other"), NETWORK, (b"X-Forwarded-For", b"10.0.0.5")), own
    )
    assert who.namespace == own


def test_last_forwarded_for_wins():
    """A guest-supplied X-Forwarded-For before haproxy's: the last value is used."""
    who = identify(
        request(ROUTER, (b"X-Forwarded-For", b"10.9.9.9"), (b"X-Forwarded-For", b"10.0.0.5")), None
    )
    assert who.ip == "10.0.0.5" and who.forwarded_for == b"10.0.0.5"
    who = identify(request(ROUTER, (b"X-Forwarded-For", b"10.9.9.9, 10.0.0.6")), None)
    assert who.ip == "10.0.0.6"


def test_ipv4_mapped_looked_up_as_ipv4():
    """::ffff:192.168.1.1 is looked up as 192.168.1.1; Nova still gets the original."""
    who = identify(request(ROUTER, (b"X-Forwarded-For", b"::ffff:192.168.1.1")), None)
    assert who.ip == "192.168.1.1" and who.mac is None
    assert who.forwarded_for == b"::ffff:192.168.1.1"


def test_link_local_looked_up_by_mac():
    """An IPv6 link-local caller is looked up by the MAC of its EUI-64 identifier."""
    who = identify(request(NETWORK, (b"X-Forwarded-For", b"fe80::5054:ff:fede:5bbf")), None)
    assert who.mac == "52:54:00:de:5b:bf"
    assert who.ip == "fe80::5054:ff:fede:5bbf"


def test_global_ipv6_looked_up_by_ip():
    """2001:db8::1 is an IP lookup without a MAC (TOS checklist)."""
    who = identify(request(OVN, (b"X-Forwarded-For", b"2001:db8::1")), None)
    assert who.ip == "2001:db8::1" and who.mac is None


def test_mac_vector_from_oslo():
    """fe80::99 gives 02:00:00:00:00:99 (oslo.utils' derivation, TOS checklist)."""
    assert mac_from_link_local(ipaddress.IPv6Address("fe80::99")) == "02:00:00:00:00:99"


@pytest.mark.parametrize(
    "value", [None, b"", b"not-an-ip", b"10.0.0.300", b"\xff\xfe", b"10.0.0.5, ", b"10.0.0.5:80"]
)
def test_missing_or_unparsable_forwarded_for_is_400(value):
    """A missing or unparsable X-Forwarded-For (or non-UTF-8 bytes) is a 400, not a 502."""
    headers = [ROUTER] + ([(b"X-Forwarded-For", value)] if value is not None else [])
    with pytest.raises(CallerError) as info:
        identify(request(*headers), None)
    assert info.value.status == 400


def test_bad_namespace_id_is_400():
    """A namespace header that is not a usable id (non-ASCII, spaces) is a 400."""
    for value in (b"\xe9t\xe9", b"a b", b""):
        with pytest.raises(CallerError) as info:
            identify(
                request((b"X-Neutron-Router-ID", value), (b"X-Forwarded-For", b"10.0.0.5")), None
            )
        assert info.value.status == 400


_OCTETS = st.one_of(
    st.integers(0, 300).map(str),
    st.sampled_from(
        ["00", "01", "010", "099", "0255", "256", "", " 1", "1 ", "+1", "1e2", "0x1", "٣"]
    ),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_OCTETS, min_size=3, max_size=5).map(".".join))
def test_dotted_addresses_read_as_ipaddress_reads_them(text):
    """Whatever looks like a dotted quad is taken (or refused) exactly as the
    ipaddress module takes it, in the form it writes."""
    value = text.encode("utf-8")
    try:
        expected = ipaddress.ip_address(text)
    except ValueError:
        with pytest.raises(CallerError):
            identify(request(ROUTER, (b"X-Forwarded-For", value)), None)
    else:
        who = identify(request(ROUTER, (b"X-Forwarded-For", value)), None)
        assert who.ip == expected.compressed and who.mac is None
        assert who.forwarded_for == value


def test_same_namespace_header_gives_the_same_namespace():
    """A namespace header seen before is not parsed again; a bad one is refused each
    time and not kept."""
    first = identify(request(ROUTER, (b"X-Forwarded-For", b"10.0.0.5")), None).namespace
    again = identify(request(ROUTER, (b"X-Forwarded-For", b"10.0.0.6")), None).namespace
    assert again is first
    for _ in range(2):
        with pytest.raises(CallerError):
            identify(
                request((b"X-Neutron-Router-ID", b"a b"), (b"X-Forwarded-For", b"10.0.0.5")), None
            )
    assert (b"x-neutron-router-id", b"a b") not in caller._namespaces


def test_namespaces_kept_are_bounded(monkeypatch):
    """The namespaces kept are emptied when full; lookups stay right."""
    monkeypatch.setattr(caller, "_namespaces", {})
    monkeypatch.setattr(caller, "_MAX_NAMESPACES", 3)
    for i in range(10):
        who = identify(
            request((b"X-Neutron-Network-ID", b"n%d" % i), (b"X-Forwarded-For", b"10.0.0.5")), None
        )
        assert who.namespace == Namespace(NamespaceKind.NETWORK, f"n{i}")
        assert len(caller._namespaces) <= 3


def test_same_identity_from_a_parsed_request():
    """A parsed request (fields picked out by the parser) gives the same identity as
    one built by hand."""
    from metaproxy.http.request import RequestParser

    parsed = RequestParser().feed(
        b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.9.9.9\r\n"
        b"X-Neutron-Router-ID: r1\r\nX-Forwarded-For: 10.0.0.5\r\n\r\n"
    )
    by_hand = request(ROUTER, (b"X-Forwarded-For", b"10.9.9.9"), (b"X-Forwarded-For", b"10.0.0.5"))
    assert identify(parsed, None) == identify(by_hand, None)


# ---- a TCP listener inside the namespace: the caller is the connection's peer ---------

OVN_NS = Namespace(NamespaceKind.OVN, "n2")


def test_peer_ipv4_is_the_caller():
    who = identify_peer(OVN_NS, "10.0.0.5")
    assert who == caller.Identity(OVN_NS, "10.0.0.5", None, b"10.0.0.5", True)


def test_peer_link_local_is_looked_up_by_its_mac_without_the_scope():
    """The kernel's peer of a link-local connection carries its interface after '%':
    the MAC comes from the EUI-64 identifier, Nova is told the address alone."""
    who = identify_peer(OVN_NS, "fe80::f816:3eff:fee2:1%tap0123456789")
    assert who.ip == "fe80::f816:3eff:fee2:1"
    assert who.mac == "fa:16:3e:e2:00:01"
    assert who.forwarded_for == b"fe80::f816:3eff:fee2:1" and who.from_peer


def test_peer_ipv4_mapped_is_looked_up_as_ipv4():
    """On a dual-stack socket an IPv4 caller comes as ::ffff:a.b.c.d: looked up as IPv4,
    told to Nova as the kernel gave it (as haproxy would have written it)."""
    who = identify_peer(OVN_NS, "::ffff:10.0.0.5")
    assert (who.ip, who.mac, who.forwarded_for) == ("10.0.0.5", None, b"::ffff:10.0.0.5")


def test_peer_global_ipv6_is_looked_up_by_address():
    who = identify_peer(OVN_NS, "2001:DB8::5")
    assert (who.ip, who.mac, who.forwarded_for) == ("2001:db8::5", None, b"2001:DB8::5")


def test_peer_that_is_not_an_address_is_refused():
    with pytest.raises(CallerError) as info:
        identify_peer(OVN_NS, "/run/some.sock")
    assert info.value.status == 400


def test_identities_from_headers_are_not_from_the_peer():
    assert not identify(request(ROUTER, (b"X-Forwarded-For", b"10.0.0.5")), None).from_peer
