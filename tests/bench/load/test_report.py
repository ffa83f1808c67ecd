"""Storm results: nearest-rank percentiles, the Markdown table, JSON, comparison, plot."""

import json
import sys

import attrs
import pytest

from bench.load.plots import MATPLOTLIB_MISSING
from bench.load.report import (
    StormResult,
    compare_markdown,
    compare_rows,
    merge_results,
    percentile,
    summarize,
)


def test_nearest_rank_percentiles():
    # the textbook example: 15, 20, 35, 40, 50
    data = [40, 15, 50, 35, 20]
    assert [percentile(data, p) for p in (0, 5, 30, 40, 50, 100)] == [15, 15, 20, 20, 35, 50]
    hundred = list(range(1, 101))
    assert [percentile(hundred, p) for p in (50, 95, 99, 99.5, 100)] == [50, 95, 99, 100, 100]
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(data, 101)


def test_summarize():
    assert summarize([3.0, 1.0, 2.0, 4.0]) == {
        "n": 4,
        "p50": 2.0,
        "p95": 4.0,
        "p99": 4.0,
        "max": 4.0,
        "mean": 2.5,
    }
    assert summarize([])["p50"] is None


def sample(**changes):
    result = StormResult(
        label="metaproxy",
        target="shared",
        settings={
            "instances": 4,
            "routers": 2,
            "fleet": "4 instances, 2 routers",
            "concurrency": 2,
            "ramp": 0.0,
            "keepalive": False,
            "workers": 2,
            "request_timeout": 30.0,
            "target_description": "shared socket /tmp/s",
        },
        started="2025-01-01T00:00:00+00:00",
        duration=2.0,
        requests=110,
        good=100,
        connections=110,
        errors={"status 403": 6, "connection refused": 4},
        boots=4,
        boots_completed=3,
        boots_clean=3,
        boot_failures={"connection refused": 1},
        latencies=[0.001 * i for i in range(1, 101)],
        boot_times=[1.25, 1.5, 1.75],
        boot_lengths=[28, 28, 26, 28],
        generator={
            "workers": 2,
            "cpu_seconds": [0.5, 1.9],
            "busy": [0.25, 0.95],
            "collector_cpu_seconds": 0.1,
        },
        agent={
            "pids": [42],
            "processes": 1,
            "cpu_seconds": 0.0275,
            "peak_rss_bytes": 50 * 2**20,
            "peak_hwm_bytes": 51 * 2**20,
        },
        nova={
            "total": 100,
            "by_status": {"200": 94, "403": 6},
            "by_outcome": {"ok": 94, "bad_signature": 6},
            "cpu_seconds": 0.5,
        },
        host={"cpus": 2, "busy": 0.5},
        notes=["a note"],
    )
    return attrs.evolve(result, **changes)


def test_markdown_has_the_figures():
    text = sample().to_markdown()
    for expected in (
        "| requests/s | 55 |",  # 110 requests in 2 s
        "| good requests/s | 50 (90.9%) |",
        "| latency p50 / p95 / p99 / max | 50.0 / 95.0 / 99.0 / 100.0 ms |",
        "| boot time p50 / p95 / p99 | 1.50 / 1.75 / 1.75 s (3 of 4 boots",
        "| boots failed | 1: connection refused 1 |",
        "| errors | 10: status 403 6, connection refused 4 |",
        "| refused connections (among the errors) | 4: connection refused 4 |",
        "| non-CRLF answers | 0 |",
        "| agent CPU per request | 250 µs",
        "| agent peak RSS | 50.0 MiB (1 process) |",
        "bad_signature: 6",
        "25%, 95% of a core per worker (SATURATED",
        "- a note",
    ):
        assert expected in text, expected


def test_json_round_trip():
    result = sample()
    text = result.to_json()
    document = json.loads(text)
    assert document["summary"]["latency"]["p99"] == pytest.approx(0.099)
    assert document["summary"]["requests_per_second"] == 55
    assert document["summary"]["generator_saturated"] is True
    assert StormResult.from_json(text) == result
    assert StormResult.from_json(text) != sample(good=99)
    with pytest.raises(ValueError):
        StormResult.from_json(json.dumps({**document, "format": "other/1"}))


def test_refusals_and_non_crlf_answers_are_counted_apart():
    result = sample(
        errors={"status 403": 6, "connection refused": 4, "backlog full": 3, "timeout": 2},
        nonstandard={"bare LF line ends": 5, "bytes after the answer": 1},
    )
    assert result.error_count == 15 and result.refused == 7 and result.nonstandard_count == 6
    text = result.to_markdown()
    assert (
        "| refused connections (among the errors) | 7: connection refused 4, backlog full 3 |"
    ) in text
    assert "| non-CRLF answers | 6: bare LF line ends 5, bytes after the answer 1 |" in text
    summary = json.loads(result.to_json())["summary"]
    assert (summary["refused"], summary["nonstandard_answers"]) == (7, 6)
    assert StormResult.from_json(result.to_json()) == result


def test_older_json_without_framing_counts():
    document = json.loads(sample().to_json())
    del document["nonstandard"]
    assert StormResult.from_json(json.dumps(document)).nonstandard == {}


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


def test_plot_without_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    assert sample().plot(str(tmp_path / "p.png")) is False
    assert not (tmp_path / "p.png").exists()
    assert "matplotlib" in MATPLOTLIB_MISSING


def test_plot_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "p.png"
    assert sample().plot(str(path)) is True
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
