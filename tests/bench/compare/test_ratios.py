"""Storm results side by side, with ratios, and the rounds of one agent added up."""

import pytest

from bench.compare.ratios import compare_markdown, compare_rows, merge_results
from tests.bench.storm_results import sample


def test_compare_markdown_ratios():
    a = sample()
    b = sample(
        duration=1.0,
        latencies=[0.002 * i for i in range(1, 101)],
        errors={},
        nonstandard={"bare LF line ends": 3},
    )
    text = compare_markdown(a, b, "upstream", "metaproxy")
    lines = text.splitlines()
    assert lines[0] == "| figure | upstream | metaproxy | metaproxy / upstream | better |"
    assert "| requests/s | 55 | 110 | 2.00x | metaproxy (higher is better) |" in lines
    assert "| latency p50 (ms) | 50.0 | 100.0 | 2.00x | upstream (lower is better) |" in lines
    assert "| errors | 10 | 0 | 0.00x | metaproxy (lower is better) |" in lines
    assert (
        "| refused connections (among the errors) | 4 | 0 | 0.00x | metaproxy (lower is better) |"
    ) in lines
    assert "| other errors | 6 | 0 | 0.00x | metaproxy (lower is better) |" in lines
    assert "| non-CRLF answers | 0 | 3 | - | upstream (lower is better) |" in lines
    assert "| requests | 110 | 110 | 1.00x |  |" in lines  # context: no better
    assert "| duration (s) | 2.00 | 1.00 | 0.50x |  |" in lines
    assert "| agent peak RSS (MiB) | 50.0 | 50.0 | 1.00x | same |" in lines
    assert "- upstream: a note" in lines


def test_compare_rows_equal_as_shown_is_the_same():
    a = sample()
    b = sample(agent={**a.agent, "peak_rss_bytes": a.agent["peak_rss_bytes"] + 10})
    rows = {row["figure"]: row for row in compare_rows(a, b, "A", "B")}
    assert rows["agent peak RSS (MiB)"]["better"] == "same"
    assert rows["requests/s"]["direction"] == "higher" and rows["requests"]["direction"] is None
    assert rows["errors"]["ratio"] == 1.0


def test_merge_results_adds_up_rounds():
    one = sample()
    two = sample(
        duration=3.0,
        requests=90,
        good=90,
        connections=90,
        errors={"backlog full": 5},
        boot_failures={"backlog full": 1},
        latencies=[0.5],
        boot_times=[2.0],
        boot_lengths=[28],
        generator={
            "workers": 2,
            "cpu_seconds": [1.5, 0.1],
            "busy": [0.5, 0.03],
            "collector_cpu_seconds": 0.2,
        },
        agent={
            "pids": [42],
            "processes": 2,
            "cpu_seconds": 1.0,
            "peak_rss_bytes": 80 * 2**20,
            "peak_hwm_bytes": 60 * 2**20,
        },
        nova={"total": 90, "by_status": {"200": 90}, "by_outcome": {"ok": 90}, "cpu_seconds": 0.25},
        host={"cpus": 2, "busy": 1.0},
        notes=[],
        nonstandard={"bare LF line ends": 2},
    )
    merged = merge_results([one, two])
    assert (merged.requests, merged.good, merged.connections) == (200, 190, 200)
    assert merged.duration == 5.0 and merged.rps == 40
    assert merged.errors == {"status 403": 6, "connection refused": 4, "backlog full": 5}
    assert merged.refused == 9
    assert merged.boot_failures == {"connection refused": 1, "backlog full": 1}
    assert len(merged.latencies) == 101 and max(merged.latencies) == 0.5
    assert merged.boot_times == [1.25, 1.5, 1.75, 2.0]
    assert merged.boot_lengths == [28, 28, 26, 28, 28]
    assert (merged.boots, merged.boots_completed) == (8, 6)
    assert merged.generator["cpu_seconds"] == [2.0, 2.0]
    assert merged.generator["busy"] == [0.4, 0.4]
    assert merged.agent["cpu_seconds"] == pytest.approx(1.0275)
    assert merged.agent["peak_rss_bytes"] == 80 * 2**20
    assert merged.agent["peak_hwm_bytes"] == 60 * 2**20 and merged.agent["processes"] == 2
    assert merged.nova["total"] == 190 and merged.nova["by_status"] == {"200": 184, "403": 6}
    assert merged.host["busy"] == pytest.approx((0.5 * 2 + 1.0 * 3) / 5, abs=1e-3)
    assert merged.notes == ["round 1: a note"]
    assert merged.nonstandard == {"bare LF line ends": 2}
    assert merged.settings["rounds"] == 2
    assert "over 2 rounds" in merged.to_markdown()
    with pytest.raises(ValueError):
        merge_results([])


def test_merge_results_adds_up_the_proxies_when_every_round_has_them():
    proxies = {"name": "haproxy", "count": 3, "processes": 3, "cpu_seconds": 0.5}
    one = sample(proxies={**proxies, "peak_rss_bytes": 30 * 2**20})
    two = sample(proxies={**proxies, "cpu_seconds": 0.25, "peak_rss_bytes": 40 * 2**20})
    merged = merge_results([one, two])
    assert merged.proxies["cpu_seconds"] == pytest.approx(0.75)
    assert merged.proxies["peak_rss_bytes"] == 40 * 2**20 and merged.proxies["count"] == 3
    assert merge_results([one, sample()]).proxies is None
