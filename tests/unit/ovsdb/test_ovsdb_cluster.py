"""metaproxy.ovsdb.cluster: verdicts on _Server.Database rows (decoded, as the monitor's
store holds them: optional columns as tuples)."""

from metaproxy.ovsdb.cluster import ClusterView

CID_A = "aaaaaaaa-0000-0000-0000-000000000001"
CID_B = "bbbbbbbb-0000-0000-0000-000000000002"


def row(model="clustered", connected=True, leader=False, index=(10,), cid=(CID_A,), name="SB"):
    return {
        "name": name,
        "model": model,
        "connected": connected,
        "leader": leader,
        "index": index,
        "cid": cid,
    }


def judge(view, *rows):
    return view.judge("SB", {f"u{i}": r for i, r in enumerate(rows)})


def test_a_connected_member_is_usable_and_says_its_role() -> None:
    view = ClusterView()
    verdict = judge(view, row(name="_Server", model="standalone"), row(leader=True))
    assert (verdict.state, verdict.role, verdict.usable) == ("usable", "leader", True)
    assert "index 10" in verdict.why
    assert judge(view, row(index=(11,))).role == "follower"


def test_a_member_without_its_cluster_is_refused() -> None:
    verdict = judge(ClusterView(), row(connected=False, leader=True))
    assert verdict.state == "cluster_disconnected" and not verdict.usable
    assert "disconnected from its cluster" in verdict.why


def test_a_member_behind_the_index_already_read_is_stale_until_it_catches_up() -> None:
    view = ClusterView()
    assert judge(view, row(index=(20,))).usable
    stale = judge(view, row(index=(19,)))
    assert stale.state == "stale" and "19 is behind 20" in stale.why
    assert judge(view, row(index=(20,))).usable and view.min_index == 20


def test_another_cluster_starts_the_index_over() -> None:
    view = ClusterView()
    assert judge(view, row(index=(500,))).usable
    assert judge(view, row(index=(3,), cid=(CID_B,))).usable
    assert view.cid == CID_B and view.min_index == 3


def test_standalone_relay_and_missing_databases() -> None:
    view = ClusterView()
    assert judge(view, row(model="standalone", connected=True, index=(), cid=())).usable
    assert judge(view, row(model="relay", connected=True, index=(), cid=())).role == "relay"
    relay_down = judge(view, row(model="relay", connected=False, index=(), cid=()))
    assert relay_down.state == "cluster_disconnected" and "relay" in relay_down.why
    missing = judge(view, row(name="Other"))
    assert missing.state == "no_database" and "does not serve SB" in missing.why
