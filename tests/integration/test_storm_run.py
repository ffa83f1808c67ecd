"""A tiny real boot storm: the real agent (twistd metaproxy) and the fake Nova as
processes, the generator's worker processes, both kinds of socket."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.load.fleet import boot_length, make_fleet
from bench.load.storm import StormConfig
from bench.local_storms import run_local_storms

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_storm_through_both_kinds_of_socket():
    fleet = make_fleet(10, 2)
    config = StormConfig(instances=10, routers=2, concurrency=5, workers=2, request_timeout=10.0)
    results = run_local_storms(fleet, config, ["namespaces", "shared"])
    expected_lengths = boot_length(fleet)
    no_user_data = sum(1 for i in fleet.instances if i.user_data is None)
    assert [r.target for r in results] == ["namespaces", "shared"]
    for result in results:
        assert result.errors == {} and result.boot_failures == {}
        assert result.boots == result.boots_completed == result.boots_clean == 10
        assert result.boot_lengths == expected_lengths
        assert result.requests == sum(result.boot_lengths) == result.good
        assert result.connections == result.requests  # one connection per request
        assert len(result.latencies) == result.requests and len(result.boot_times) == 10
        # every request reached Nova once; the user data 404s are Nova's own
        assert result.nova["total"] == result.requests
        assert result.nova["by_outcome"] == {
            "ok": result.requests - no_user_data,
            "not_found": no_user_data,
        }
        assert result.agent["cpu_seconds"] > 0 and result.agent["peak_rss_bytes"] > 0
        assert result.agent["processes"] == 1
        assert len(result.generator["cpu_seconds"]) == 2


def test_wrong_secret_every_request_is_a_relayed_403(tmp_path):
    """The command line, with an agent whose secret Nova does not share."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "storm",
            "--instances",
            "10",
            "--routers",
            "2",
            "--concurrency",
            "5",
            "--target",
            "shared",
            "--wrong-secret",
            "--no-progress",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    [path] = tmp_path.glob("*-shared.json")
    result = json.loads(path.read_text())
    assert result["requests"] == 10 and result["good"] == 0  # each boot ends at its first
    assert result["errors"] == {"status 403": 10}
    assert result["boot_failures"] == {"status 403": 10}
    assert result["nova"]["by_outcome"] == {"bad_signature": 10}
    assert "| errors | 10: status 403 10 |" in run.stdout
    assert (tmp_path / "latest.md").read_text().count("status 403 10") == 2
