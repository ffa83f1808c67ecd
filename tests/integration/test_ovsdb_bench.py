"""The OVSDB measurements of bench/scale, small: a reconnect resumes with the changes
only, and a member restart spreads its clients (real ovsdb-server processes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from bench.fakes.ovnsb import missing
from bench.fakes.ovnsb_cluster import SbCluster
from bench.scale.ovsdb_reconnect import measure_reconnect
from bench.scale.ovsdb_storm import storm
from bench.scale.southbound import load_fleet

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))


@pytest_twisted.ensureDeferred
async def test_a_reconnect_sends_only_the_changes_and_a_full_copy_sends_everything(
    tmp_path: Path,
) -> None:
    cluster = SbCluster.start(tmp_path / "c", size=1)
    try:
        chassis = load_fleet(cluster, 600, 6)["chassis"]
        figures = {}
        for mode, resume in (("resume", True), ("full", False)):
            figures[mode] = await measure_reconnect(
                reactor, cluster, chassis, resume=resume, outage=0.5, changes=10, transactions=5
            )
    finally:
        cluster.stop()
    resumed, full = figures["resume"]["reconnect"], figures["full"]["reconnect"]
    assert (resumed["kind"], full["kind"]) == ("changes", "full")
    assert resumed["bound_ports"] == full["bound_ports"] == 590
    # a full copy carries every row; the changes only the 10 ports (and the schema)
    assert full["bytes"] > figures["full"]["initial"]["bytes"] * 0.9
    assert resumed["bytes"] * 5 < full["bytes"]


@pytest_twisted.ensureDeferred
async def test_a_restarted_members_clients_spread_over_the_others(tmp_path: Path) -> None:
    cluster = SbCluster.start(tmp_path / "c", size=3)
    try:
        load_fleet(cluster, 20, 2)
        before = await storm(reactor, cluster, 30, 1.0, "before", seed=1, start_over=0.5)
        for i in range(3):
            cluster.wait_connected([i], 30)
        now = await storm(reactor, cluster, 30, 1.0, "now", seed=1, start_over=0.5)
    finally:
        cluster.stop()
    # the configured order: every client on the first member, then all on the next one
    assert before["before"] == {"m0": 30} and before["moved_to"] == {"m1": 30}
    # each client's own order: spread before, and the moved ones over both others
    assert len(now["before"]) == 3 and max(now["before"].values()) < 30
    assert len(now["moved_to"]) == 2 and now["stopped"] not in now["moved_to"]
    assert sum(now["moved_to"].values()) == now["moved"]
