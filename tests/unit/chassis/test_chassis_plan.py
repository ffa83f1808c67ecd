"""metaproxy.chassis.plan: which networks get a namespace here, holding what."""

from metaproxy.chassis.plan import NetworkPlan, link_local_for, plan_networks, veth_names

NET = "d6e4a803-d6fc-4e31-b67d-601e68bae447"
MD_MAC = "fa:16:3e:67:a2:92"


def tables(*ports, chassis="compute-1", datapath_name=f"neutron-{NET}"):
    return {
        "Chassis": {"ch-uuid": {"name": chassis}},
        "Datapath_Binding": {"dp": {"external_ids": {"name": datapath_name}}},
        "Port_Binding": {f"pb{i}": row for i, row in enumerate(ports)},
    }


def metadata_port(cidrs="10.6.0.2/24", mtu="1400", mac=f"{MD_MAC} 10.6.0.2"):
    return {
        "logical_port": "md-port",
        "datapath": "dp",
        "chassis": (),
        "additional_chassis": (),
        "mac": (mac,) if mac else (),
        "type": "localport",
        "external_ids": {
            "neutron:cidrs": cidrs,
            "neutron:device_owner": "network:distributed",
            "neutron:mtu": mtu,
        },
    }


def vm(mac_entry="fa:16:3e:00:00:01 10.6.0.11", chassis=("ch-uuid",), additional=()):
    return {
        "logical_port": "vm-port",
        "datapath": "dp",
        "chassis": chassis,
        "additional_chassis": additional,
        "mac": (mac_entry,),
        "type": "",
        "external_ids": {"neutron:device_owner": "compute:nova"},
    }


def test_a_bound_vm_and_a_metadata_port_give_the_namespace_as_upstream_builds_it() -> None:
    plans = plan_networks(tables(metadata_port(), vm()), "compute-1")
    assert plans == {
        NET: NetworkPlan(
            NET, "md-port", MD_MAC, 1400, frozenset({"10.6.0.2/24", "169.254.169.254/32"})
        )
    }
    assert plans[NET].namespace == f"ovnmeta-{NET}"
    assert (plans[NET].outside, plans[NET].inside) == ("tapd6e4a803-d0", "tapd6e4a803-d1")
    assert veth_names(NET) == ("tapd6e4a803-d0", "tapd6e4a803-d1")


def test_nothing_without_a_port_here_a_metadata_port_or_its_mac() -> None:
    assert plan_networks(tables(metadata_port(), vm(chassis=("other",))), "compute-1") == {}
    assert plan_networks(tables(vm()), "compute-1") == {}
    assert plan_networks(tables(metadata_port(mac=""), vm()), "compute-1") == {}
    assert plan_networks(tables(metadata_port(mac="nonsense 10.6.0.2"), vm()), "compute-1") == {}
    assert plan_networks(tables(metadata_port(), vm()), "compute-2") == {}
    assert plan_networks(tables(metadata_port(), vm(), datapath_name="other"), "compute-1") == {}


def test_an_additional_chassis_here_counts_live_migration_target() -> None:
    plans = plan_networks(
        tables(metadata_port(), vm(chassis=("other",), additional=("ch-uuid",))), "compute-1"
    )
    assert set(plans) == {NET}


def test_only_subnets_with_a_port_here_are_configured() -> None:
    md = metadata_port(cidrs="10.6.0.2/24 10.7.0.2/24 fd00::2/64")
    plans = plan_networks(tables(md, vm()), "compute-1")
    assert plans[NET].addresses == {"10.6.0.2/24", "169.254.169.254/32"}


def test_an_ipv6_port_adds_the_v6_metadata_address_and_the_link_local() -> None:
    md = metadata_port(cidrs="10.6.0.2/24 fd00::2/64")
    port = vm(mac_entry="fa:16:3e:00:00:01 fd00::11")
    plans = plan_networks(tables(md, port), "compute-1")
    assert plans[NET].addresses == {
        "169.254.169.254/32",
        "fe80::a9fe:a9fe/128",
        "fe80::f816:3eff:fe67:a292/64",
    }
    no_v6 = plan_networks(tables(md, port), "compute-1", ipv6_enabled=False)
    assert no_v6[NET].addresses == {"169.254.169.254/32"}


def test_ports_without_addresses_do_not_make_a_namespace() -> None:
    assert plan_networks(tables(metadata_port(), vm(mac_entry="unknown")), "compute-1") == {}
    assert plan_networks(tables(metadata_port(), vm(mac_entry="fa:16:3e:00:00:01")), "c") == {}


def test_a_missing_mtu_is_left_alone() -> None:
    plans = plan_networks(tables(metadata_port(mtu=""), vm()), "compute-1")
    assert plans[NET].mtu == 0


def test_link_local_is_the_eui64_of_the_mac() -> None:
    assert link_local_for("fa:16:3e:00:00:01") == "fe80::f816:3eff:fe00:1/64"
