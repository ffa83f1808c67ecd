"""The C{namespaces-tcp} target's plain parts: the fleet renamed after the topology, the
agent's lines, the target's name and description. The built front is exercised by
tests/e2e/test_routers.py."""

import pytest

from bench.load.fleet import make_fleet
from bench.load.nstarget import plan_front, target_for
from bench.load.routerfront import TARGET_NAME, router_fleet, router_mode_config


class FakeTopology:
    tag = "e2e0badcafe"

    def id(self, name):
        return f"{self.tag}-{name}"


def test_routers_take_the_topologys_ids_in_order():
    fleet = router_fleet(make_fleet(12, 3), FakeTopology())
    assert [ns.name for ns in fleet.namespaces] == [
        "qrouter-e2e0badcafe-r0",
        "qrouter-e2e0badcafe-r1",
        "qrouter-e2e0badcafe-r2",
    ]
    assert {i.namespace.name for i in fleet.instances} == set(fleet.namespace_names())


def test_networks_that_keep_haproxy_are_refused():
    with pytest.raises(ValueError, match="serves router namespaces only"):
        router_fleet(make_fleet(12, 2, dhcp_networks=1), FakeTopology())


def test_the_agent_serves_this_runs_routers_only():
    assert router_mode_config(FakeTopology()) == (
        "router_namespaces = serve\nrouter_id_prefix = e2e0badcafe-\n"
    )


def test_the_target_names_itself_and_says_there_is_no_haproxy():
    fleet = router_fleet(make_fleet(12, 3), FakeTopology())
    plan = plan_front(fleet, 12)
    target = target_for(
        plan, [f"side{i}" for i in range(3)], "routers", fleet.instances, name=TARGET_NAME
    )
    assert target.name == "namespaces-tcp" and target.headers(fleet.instances[0]) == b""
    assert target.describe().startswith("metaproxy listening in 3 router namespaces itself")
    assert "no haproxy" in target.describe()
