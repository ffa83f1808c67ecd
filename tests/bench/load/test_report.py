"""Storm results: nearest-rank percentiles, the Markdown table, JSON, plot (the
comparisons are tests/bench/compare/test_ratios.py)."""

import json
import sys

import pytest

from bench.load.plots import MATPLOTLIB_MISSING
from bench.load.report import (
    StormResult,
    percentile,
    summarize,
)
from tests.bench.storm_results import sample


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


def test_haproxy_in_front_adds_its_cpu_to_the_nodes():
    """With the proxies measured, their CPU per request and the node's (agent plus
    proxies) are shown, and survive JSON; without proxies the node's is the agent's."""
    plain = sample()  # 110 requests, 27.5 ms of agent CPU: 250 us each
    assert plain.proxies is None and plain.node_cpu_per_request == pytest.approx(250e-6)
    assert "haproxy CPU" not in plain.to_markdown()
    fronted = sample(
        proxies={
            "name": "haproxy",
            "count": 3,
            "processes": 3,
            "cpu_seconds": 0.033,
            "peak_rss_bytes": 30 * 2**20,
        }
    )
    assert fronted.proxy_cpu_per_request == pytest.approx(300e-6)
    assert fronted.node_cpu_per_request == pytest.approx(550e-6)
    text = fronted.to_markdown()
    assert "| haproxy CPU per request | 300 µs (0.03 s in all, 3 daemons) |" in text
    assert "| node CPU per request (agent + haproxy) | 550 µs |" in text
    assert "| haproxy peak RSS | 30.0 MiB in all (3 processes) |" in text
    assert StormResult.from_json(fronted.to_json()) == fronted
    summary = json.loads(fronted.to_json())["summary"]
    assert summary["node_cpu_seconds_per_request"] == pytest.approx(550e-6)
    figures = {name: value for name, value, _, _ in fronted.figures()}
    assert figures["node CPU per request, agent + haproxy (µs)"] == pytest.approx(550)
