"""metaproxy.chassis.steps: from planned and observed state to steps, idempotently."""

from metaproxy.chassis.localovs import OvsPort
from metaproxy.chassis.plan import NetworkPlan
from metaproxy.chassis.steps import (
    AddAddress,
    ChecksumFill,
    CreateNamespace,
    CreateVeth,
    DeleteAddress,
    DeleteLink,
    DeleteNamespace,
    HostState,
    LinkState,
    Plug,
    SetIfaceId,
    SetLink,
    Unplug,
    network_steps,
    ovs_steps,
    teardown_steps,
)

NET = "0123456789abcdef"
NS, OUT, IN = f"ovnmeta-{NET}", "tap01234567890", "tap01234567891"
PLAN = NetworkPlan(
    NET, "md", "fa:16:3e:00:00:02", 1400, frozenset({"10.0.0.2/24", "169.254.169.254/32"})
)


def done_state(**inside_changes):
    inside = LinkState(IN, PLAN.mac, 1400, True, PLAN.addresses)
    for key, value in inside_changes.items():
        inside = __import__("attrs").evolve(inside, **{key: value})
    return HostState(frozenset({NS}), {NS: inside}, {OUT: LinkState(OUT, "", 1400, True)})


def test_nothing_there_creates_everything_in_order() -> None:
    steps = network_steps(PLAN, HostState(), checksum_fill=True)
    assert steps == [
        CreateNamespace(NS),
        CreateVeth(OUT, IN, NS),
        ChecksumFill(NS),
        SetLink(IN, NS, mac=PLAN.mac, mtu=1400),
        SetLink(OUT, None, mtu=1400),
        AddAddress(NS, IN, "10.0.0.2/24"),
        AddAddress(NS, IN, "169.254.169.254/32"),
    ]
    assert ChecksumFill(NS) not in network_steps(PLAN, HostState(), checksum_fill=False)
    with_v6 = network_steps(PLAN, HostState(), checksum_fill=True, ipv6=True)
    assert ChecksumFill(NS, ipv6=True) in with_v6


def test_a_namespace_as_planned_needs_nothing() -> None:
    assert network_steps(PLAN, done_state(), checksum_fill=True) == []


def test_the_kernels_link_local_is_kept_other_extra_addresses_go() -> None:
    extra = PLAN.addresses | {"fe80::f816:3eff:fe00:2/64", "10.9.0.2/24"}
    assert network_steps(PLAN, done_state(addresses=extra), checksum_fill=True) == [
        DeleteAddress(NS, IN, "10.9.0.2/24")
    ]


def test_a_changed_mac_mtu_or_a_down_link_is_corrected() -> None:
    steps = network_steps(PLAN, done_state(mac="fa:16:3e:99:99:99", up=False), checksum_fill=True)
    assert steps == [SetLink(IN, NS, mac=PLAN.mac, mtu=None)]
    assert network_steps(PLAN, done_state(mtu=1500), checksum_fill=True) == [
        SetLink(IN, NS, mac=None, mtu=1400)
    ]


def test_an_orphan_outside_end_is_deleted_before_the_veth_is_made_again() -> None:
    host = HostState(frozenset({NS}), {}, {OUT: LinkState(OUT)})
    steps = network_steps(PLAN, host, checksum_fill=False)
    assert steps[:2] == [DeleteLink(OUT), CreateVeth(OUT, IN, NS)]


def test_teardown_deletes_the_outside_end_then_the_namespace() -> None:
    assert teardown_steps(NET, done_state()) == [DeleteLink(OUT), DeleteNamespace(NS)]
    assert teardown_steps(NET, HostState(frozenset({NS}))) == [DeleteNamespace(NS)]


def test_ovs_port_plugged_once_with_the_metadata_ports_iface_id() -> None:
    assert ovs_steps(NET, PLAN, {}, "br-int") == [Plug("br-int", OUT, "md")]
    port = OvsPort(OUT, "p-uuid", ("br-int",), ("md",), ("i-uuid",))
    assert ovs_steps(NET, PLAN, {OUT: port}, "br-int") == []
    wrong = OvsPort(OUT, "p-uuid", ("br-int",), ("old",), ("i-uuid",))
    assert ovs_steps(NET, PLAN, {OUT: wrong}, "br-int") == [SetIfaceId(wrong, "md")]
    elsewhere = OvsPort(OUT, "p-uuid", ("br-old",), ("md",), ("i-uuid",))
    assert ovs_steps(NET, PLAN, {OUT: elsewhere}, "br-int") == [
        Unplug(elsewhere),
        Plug("br-int", OUT, "md"),
    ]


def test_ovs_port_unplugged_when_not_planned() -> None:
    port = OvsPort(OUT, "p-uuid", ("br-int",), ("md",), ("i-uuid",))
    assert ovs_steps(NET, None, {OUT: port}, "br-int") == [Unplug(port)]
    assert ovs_steps(NET, None, {}, "br-int") == []


def test_a_new_veth_is_plugged_anew_even_when_the_database_has_its_port() -> None:
    port = OvsPort(OUT, "p-uuid", ("br-int",), ("md",), ("i-uuid",))
    assert ovs_steps(NET, PLAN, {OUT: port}, "br-int", replug=True) == [
        Unplug(port),
        Plug("br-int", OUT, "md"),
    ]
    assert ovs_steps(NET, PLAN, {}, "br-int", replug=True) == [Plug("br-int", OUT, "md")]
