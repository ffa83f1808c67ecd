"""bench.fakes.ovnsb.table_to_operations: a port table as OVN Southbound rows (pure)."""

from bench.fakes.ovnsb import table_to_operations
from bench.lookups import LOOKUPS


def test_ports_routers_and_networks_become_rows() -> None:
    ops = table_to_operations(
        {
            "routers": {"rt": ["n2"]},
            "ports": [
                {
                    "id": "p1",
                    "network_id": "n1",
                    "mac_address": "fa:16:3e:00:00:01",
                    "fixed_ips": ["10.0.0.5", "fd00::5"],
                    "device_id": "vm1",
                    "project_id": "pr",
                },
                {
                    "id": "r1",
                    "network_id": "n1",
                    "mac_address": "fa:16:3e:00:00:02",
                    "fixed_ips": ["10.0.0.1"],
                    "device_id": "rt0",
                    "project_id": "pr",
                    "device_owner": "network:router_interface",
                },
            ],
        }
    )
    by_table = {}
    for op in ops:
        by_table.setdefault(op["table"], []).append(op)
    assert [op["row"]["external_ids"] for op in by_table["Datapath_Binding"]] == [
        ["map", [("name", "neutron-n1")]],
        ["map", [("name", "neutron-n2")]],
    ]
    vm, rif, extra = by_table["Port_Binding"]
    assert vm["row"]["mac"] == "fa:16:3e:00:00:01 10.0.0.5 fd00::5"
    assert vm["row"]["chassis"] == ["named-uuid", "chassis"] and "type" not in vm["row"]
    assert ("neutron:device_id", "vm1") in vm["row"]["external_ids"][1]
    assert rif["row"]["type"] == "patch" and "chassis" not in rif["row"]
    assert extra["row"]["datapath"] == ["named-uuid", "dp1"]
    assert ("neutron:device_id", "rt") in extra["row"]["external_ids"][1]
    assert (vm["row"]["tunnel_key"], rif["row"]["tunnel_key"]) == (1, 2)


def test_ovn_is_a_bench_lookup() -> None:
    assert "ovn" in LOOKUPS
