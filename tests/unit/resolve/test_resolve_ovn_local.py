"""metaproxy.resolve.ovn_local: this node's chassis name from the local Open_vSwitch
database (its row's external_ids:system-id)."""

from metaproxy.resolve.ovn_local import system_id


def test_system_id_is_the_chassis_name() -> None:
    assert system_id({"Open_vSwitch": {"o": {"external_ids": {"system-id": " ch-1 "}}}}) == "ch-1"
    assert system_id({"Open_vSwitch": {"o": {"external_ids": {}}}}) == ""
    assert system_id({}) == ""
