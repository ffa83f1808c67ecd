"""The scale run (L{bench.ovnsandbox.scale}) end to end with 5 networks: every phase
done, nothing running in the namespaces, a restart adopting every namespace, the
teardown removing them all."""

from __future__ import annotations

import json

import pytest

from bench.ovnsandbox.scale import main
from tests.integration.chassis.conftest import needs_ovn

pytestmark = [needs_ovn, pytest.mark.slow]


def test_five_networks_go_through_every_phase(tmp_path, capsys):
    status = main(["--networks", "5", "--sample", "2", "--timeout", "120", "--out", str(tmp_path)])
    [written] = tmp_path.glob("*-ovn-scale.json")
    run = json.loads(written.read_text())
    assert status == 0, run["failure"] or run["sandbox_failure"]
    assert run["phases_ok"] == ["start", "footprint", "SB restart", "agent restart", "teardown"]
    footprint = run["footprint"]
    assert footprint["namespaces"] == 5
    assert footprint["processes_in_namespaces"] == 0
    assert footprint["session_processes"] == 1  # one process serves all (no worker here)
    assert footprint["rss"] > 0 and footprint["descriptors"] > 5
    assert len(run["start_sample_http_s"]) == 2
    assert run["start_all_connect_s"] <= run["start_healthy_s"] + 5
    assert run["sb_resync_s"] is not None
    assert (run["restart_made_anew"], run["restart_namespaces_kept"]) == (0, 5)
    assert run["teardown_s"] is not None
    # the teardown closed the five listening sockets
    assert run["teardown_footprint"]["descriptors_by_kind"].get("socket", 0) <= (
        footprint["descriptors_by_kind"]["socket"] - 5
    )
    assert "| start -> /healthz 200 |" in capsys.readouterr().out
