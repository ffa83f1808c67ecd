"""`python -m bench compare`: a tiny storm against two agents in one run, alternating, with
the ratio table; against upstream's agent too when it is already installed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.compare import upstream
from bench.load.fleet import boot_length, make_fleet

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--instances", "10", "--routers", "2", "--concurrency", "5", "--no-progress"]


def compare(tmp_path, *args, timeout=300):
    run = subprocess.run(
        [sys.executable, "-m", "bench", "compare", *TINY, "--out", str(tmp_path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    written = list(tmp_path.glob("*-compare.json"))
    document = json.loads(written[0].read_text()) if len(written) == 1 else None
    return run, document


def check_clean(result, fleet):
    assert result["errors"] == {} and result["boot_failures"] == {}
    assert result["boots"] == result["boots_completed"] == result["boots_clean"] == 10
    assert result["boot_lengths"] == boot_length(fleet)
    assert result["requests"] == result["good"] == sum(result["boot_lengths"])
    assert result["nova"]["total"] == result["requests"]
    assert result["agent"]["cpu_seconds"] > 0 and result["agent"]["peak_rss_bytes"] > 0


def test_metaproxy_shared_against_namespaces(tmp_path):
    """Two rounds each (so the alternation shows: A1, B1, A2, B2), one agent per side for
    the whole run, the ratio table printed and written."""
    run, document = compare(
        tmp_path, "--a", "metaproxy", "--b", "metaproxy-namespaces", "--rounds", "2"
    )
    assert run.returncode == 0, run.stderr
    fleet = make_fleet(10, 2)
    assert document["format"] == "metaproxy-bench-compare/1"
    assert document["order"] == ["A1", "B1", "A2", "B2"]
    rounds = document["rounds"]
    assert [(r["side"], r["round"]) for r in rounds] == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert [r["result"]["target"] for r in rounds] == ["shared", "namespaces"] * 2
    started = [r["result"]["started"] for r in rounds]
    assert started == sorted(started)
    # each agent started once: the same process served both of its rounds
    assert rounds[0]["result"]["agent"]["pids"] == rounds[2]["result"]["agent"]["pids"]
    assert rounds[1]["result"]["agent"]["pids"] == rounds[3]["result"]["agent"]["pids"]
    assert rounds[0]["result"]["agent"]["pids"] != rounds[1]["result"]["agent"]["pids"]
    for r in rounds:
        check_clean(r["result"], fleet)
    for side in ("a", "b"):
        aggregate = document["aggregate"][side]
        assert aggregate["requests"] == 2 * sum(boot_length(fleet))
        assert aggregate["settings"]["rounds"] == 2 and aggregate["errors"] == {}
        assert len(aggregate["latencies"]) == aggregate["requests"]
    assert list(document["ratios"]) == ["b"]
    ratios = {row["figure"]: row for row in document["ratios"]["b"]}
    assert ratios["requests"]["ratio"] == 1.0
    assert ratios["errors"]["better"] == "same"
    header = (
        "| figure | metaproxy | metaproxy-namespaces | metaproxy-namespaces / metaproxy | better |"
    )
    assert header in run.stdout
    assert "| requests | 556 | 556 | 1.00x |  |" in run.stdout
    assert "| refused connections (among the errors) | 0 | 0 | - | same |" in run.stdout
    latest = (tmp_path / "latest-compare.md").read_text()
    assert header in latest and "| A2 | metaproxy |" in latest and "| B2 |" in latest


def test_a_third_agent_alternates_too(tmp_path):
    """A, B, C, each compared with A; an agent kind given twice gets its side in its
    label (two agents of that kind run)."""
    run, document = compare(
        tmp_path,
        "--a",
        "metaproxy",
        "--b",
        "metaproxy-namespaces",
        "--c",
        "metaproxy",
        "--rounds",
        "1",
    )
    assert run.returncode == 0, run.stderr
    assert document["order"] == ["A1", "B1", "C1"]
    assert [document["agents"][side]["label"] for side in "abc"] == [
        "metaproxy (A)",
        "metaproxy-namespaces",
        "metaproxy (C)",
    ]
    assert sorted(document["ratios"]) == ["b", "c"]
    pids = [r["result"]["agent"]["pids"] for r in document["rounds"]]
    assert len({tuple(p) for p in pids}) == 3
    assert (
        "| figure | metaproxy (A) | metaproxy (C) | metaproxy (C) / metaproxy (A) |" in run.stdout
    )
    assert "## C / A, all rounds" in run.stdout and "## B / A, all rounds" in run.stdout


def test_wrong_secret_every_metaproxy_request_is_a_403(tmp_path):
    run, document = compare(
        tmp_path,
        "--a",
        "metaproxy",
        "--b",
        "metaproxy-namespaces",
        "--rounds",
        "1",
        "--wrong-secret",
    )
    assert run.returncode == 0, run.stderr
    for side in ("a", "b"):
        result = document["aggregate"][side]
        assert result["errors"] == {"status 403": 10} and result["good"] == 0
        assert result["nova"]["by_outcome"] == {"bad_signature": 10}
    assert document["settings"]["wrong_secret"] is True


def test_metaproxy_against_upstream(tmp_path):
    if not upstream.upstream_installed():
        pytest.skip("upstream is not installed (make bench-compare installs it)")
    run, document = compare(tmp_path, "--a", "metaproxy", "--b", "upstream", "--rounds", "1")
    # upstream's errors are results: the exit status is metaproxy's
    assert run.returncode == 0, run.stderr
    fleet = make_fleet(10, 2)
    assert document["order"] == ["A1", "B1"]
    assert document["agents"]["b"]["description"].startswith(
        f"upstream's neutron-metadata-agent ({upstream.NEUTRON_SPEC})"
    )
    check_clean(document["aggregate"]["a"], fleet)
    theirs = document["aggregate"]["b"]
    assert theirs["label"] == "upstream neutron-metadata-agent"
    assert theirs["boots"] == 10 and theirs["good"] > 0
    # Upstream drops the connection on binary (gzipped) user data (webob decodes the
    # body as text); five concurrent boots stay within its listen backlog of 5.
    gzipped = sum(1 for i in fleet.instances if i.user_data and i.user_data[:2] == b"\x1f\x8b")
    assert theirs["errors"] == {"closed without answer": gzipped}
    assert theirs["agent"]["cpu_seconds"] > 0 and theirs["agent"]["peak_rss_bytes"] > 0
    assert "| figure | metaproxy | upstream | upstream / metaproxy | better |" in run.stdout
