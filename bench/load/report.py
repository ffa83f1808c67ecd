# -*- test-case-name: tests.bench.load.test_report -*-
"""A boot storm's result and its three forms: JSON, a Markdown table, a PNG plot.

Percentiles use the B{nearest-rank} method: the p-th percentile of n sorted values is the
value at rank C{ceil(p / 100 * n)} (1-based; p = 0 gives the minimum). It is always one of
the measured values, never an interpolation, so "p99 = 41 ms" means at least 99 % of the
requests took at most 41 ms and at least one took exactly that.

L{StormResult.figures} are the figures two results are compared on, each with the way it
is better (L{HIGHER}, L{LOWER}, L{NEUTRAL}); L{bench.compare.ratios} compares and adds
up results.

Refusals (C{connection refused}, C{backlog full}: the agent did not take the connection)
are errors like the others and are also counted on their own (L{StormResult.refused}).
Answers taken despite framing that is not HTTP/1.1's (a head with bare C{LF} line ends,
bytes after the answer: upstream's agent writes both) are counted as C{non-CRLF answers}
(L{StormResult.nonstandard}).

The PNG needs matplotlib, an optional extra: without it L{StormResult.plot} returns
C{False} and L{bench.load.plots.MATPLOTLIB_MISSING} says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from bench.load.plots import plot_results

__all__ = [
    "FORMAT",
    "REFUSAL_KINDS",
    "BARE_LF_NAME",
    "TRAILING_NAME",
    "HIGHER",
    "LOWER",
    "NEUTRAL",
    "percentile",
    "summarize",
    "StormResult",
    "markdown_cell",
]

#: The C{format} field of the JSON document; bumped when fields change meaning.
FORMAT = "metaproxy-bench-storm/1"
#: A worker busier than this share of one core is reported as saturated.
SATURATED = 0.90
#: The whole machine busier than this share of its CPUs is reported too.
HOST_SATURATED = 0.95
#: Error kinds that are refusals: the agent did not take the connection (ECONNREFUSED:
#: nothing listens; EAGAIN on a Unix connect: its listen queue is full).
REFUSAL_KINDS = ("connection refused", "backlog full")
#: C{non-CRLF answers} kinds (L{StormResult.nonstandard}).
BARE_LF_NAME = "bare LF line ends"
TRAILING_NAME = "bytes after the answer"
#: Which way a figure is better, for comparisons.
HIGHER, LOWER, NEUTRAL = 1, -1, 0


def percentile(values: Sequence[float], p: float, *, presorted: bool = False) -> float | None:
    """The nearest-rank C{p}-th percentile (0 <= p <= 100) of C{values}; None if empty."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not between 0 and 100")
    if not values:
        return None
    ordered = values if presorted else sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(values: Iterable[float]) -> dict[str, float | int | None]:
    """C{n}, C{p50}, C{p95}, C{p99}, C{max} and C{mean} of C{values} (None when empty)."""
    ordered = sorted(values)
    n = len(ordered)
    return {
        "n": n,
        "p50": percentile(ordered, 50, presorted=True),
        "p95": percentile(ordered, 95, presorted=True),
        "p99": percentile(ordered, 99, presorted=True),
        "max": ordered[-1] if n else None,
        "mean": sum(ordered) / n if n else None,
    }


def _counter(value: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in dict(value or {}).items()}


def _floats(value: Any) -> list[float]:
    return [float(v) for v in value or ()]


@attrs.define(eq=True)
class StormResult:
    """Everything one storm measured. Times are in seconds.

    @ivar label: what was measured, e.g. C{"metaproxy"} or C{"neutron-metadata-agent"}.
    @ivar target: C{"shared"} or C{"namespaces"} (or another target's name).
    @ivar settings: how the storm was run: instances, routers, fleet, concurrency, ramp,
        keepalive, workers, request_timeout, target_description...
    @ivar started: when the storm started (ISO 8601, UTC).
    @ivar duration: from the first boot's start to the last answer.
    @ivar requests: requests made (every attempt counts once; no retries).
    @ivar good: requests whose answer was right for the instance (a 200 with the right
        content, or the 404 for absent user data).
    @ivar connections: connections opened (= requests without keep-alive).
    @ivar errors: error kind (see L{bench.load.checks.KINDS}) to count. Refusals
        (L{REFUSAL_KINDS}) are among them.
    @ivar nonstandard: answers that were taken although their framing was not HTTP/1.1's,
        by kind (L{BARE_LF_NAME}, L{TRAILING_NAME}, or both joined by C{", "}); they are
        checked like the others and may be good.
    @ivar boots: boots started; C{boots_completed} ran cloud-init's whole sequence
        (right or wrong answers); C{boots_clean} with every answer right.
    @ivar boot_failures: the error kind that ended each failed boot, counted.
    @ivar latencies: per request that got an HTTP answer, from connecting to its last
        byte (errors without an answer, e.g. refused or timed out, are not in it).
    @ivar boot_times: per completed boot, from its first request to its last answer.
    @ivar boot_lengths: requests made by each boot, in boot order (fleet order).
    @ivar generator: C{workers}, C{cpu_seconds} (per worker), C{busy} (per worker, share
        of one core), C{collector_cpu_seconds} (the parent process).
    @ivar agent: C{pids}, C{processes} (most seen at once), C{cpu_seconds},
        C{peak_rss_bytes} (summed over the tree), C{peak_hwm_bytes} (largest VmHWM).
    @ivar nova: the fake Nova's counters for the storm (C{total}, C{by_status},
        C{by_outcome}, differences over the run) and C{cpu_seconds}; None if not known.
    @ivar host: C{cpus} and C{busy} (share of all CPUs busy during the storm).
    @ivar proxies: the namespace proxies in front of the agent, when measured: C{name}
        (C{haproxy}), C{count}, C{processes}, C{cpu_seconds}, C{peak_rss_bytes} (summed);
        None without proxies.
    @ivar notes: things a reader must know (saturation, limits of v1).
    """

    label: str
    target: str
    settings: dict[str, Any]
    started: str
    duration: float
    requests: int
    good: int
    connections: int
    errors: dict[str, int] = attrs.field(converter=_counter)
    boots: int
    boots_completed: int
    boots_clean: int
    boot_failures: dict[str, int] = attrs.field(converter=_counter)
    latencies: list[float] = attrs.field(converter=_floats)
    boot_times: list[float] = attrs.field(converter=_floats)
    boot_lengths: list[int]
    generator: dict[str, Any]
    agent: dict[str, Any]
    nova: dict[str, Any] | None
    host: dict[str, Any]
    notes: list[str] = attrs.field(factory=list)
    nonstandard: dict[str, int] = attrs.field(factory=dict, converter=_counter)
    proxies: dict[str, Any] | None = None

    # ---- derived figures

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def refused(self) -> int:
        """Requests whose connection the agent refused (among the errors)."""
        return sum(self.errors.get(kind, 0) for kind in REFUSAL_KINDS)

    @property
    def nonstandard_count(self) -> int:
        """Answers taken although not framed as HTTP/1.1 (bare LF, bytes after)."""
        return sum(self.nonstandard.values())

    @property
    def rps(self) -> float:
        return self.requests / self.duration if self.duration > 0 else 0.0

    @property
    def good_rps(self) -> float:
        return self.good / self.duration if self.duration > 0 else 0.0

    @property
    def boots_failed(self) -> int:
        return self.boots - self.boots_completed

    def latency(self) -> dict[str, float | int | None]:
        return summarize(self.latencies)

    def boot_time(self) -> dict[str, float | int | None]:
        return summarize(self.boot_times)

    @property
    def agent_cpu_per_request(self) -> float | None:
        cpu = self.agent.get("cpu_seconds")
        return cpu / self.requests if cpu is not None and self.requests else None

    @property
    def proxy_cpu_per_request(self) -> float | None:
        cpu = (self.proxies or {}).get("cpu_seconds")
        return cpu / self.requests if cpu is not None and self.requests else None

    @property
    def node_cpu_per_request(self) -> float | None:
        """The agent's CPU plus its proxies' (haproxy's), per request: what the node
        spends on metadata."""
        agent = self.agent_cpu_per_request
        if agent is None:
            return None
        return agent + (self.proxy_cpu_per_request or 0.0)

    @property
    def generator_busiest(self) -> float:
        return max(self.generator.get("busy") or [0.0])

    @property
    def generator_saturated(self) -> bool:
        return self.generator_busiest >= SATURATED

    # ---- JSON

    def to_json(self) -> str:
        """The result as a JSON document, with a derived C{summary} section for readers
        (ignored by L{from_json}, which recomputes it)."""
        document = {"format": FORMAT, **attrs.asdict(self, recurse=False)}
        document["summary"] = {
            "requests_per_second": self.rps,
            "good_requests_per_second": self.good_rps,
            "errors": self.error_count,
            "refused": self.refused,
            "nonstandard_answers": self.nonstandard_count,
            "latency": self.latency(),
            "boot_time": self.boot_time(),
            "boots_failed": self.boots_failed,
            "agent_cpu_seconds_per_request": self.agent_cpu_per_request,
            "proxy_cpu_seconds_per_request": self.proxy_cpu_per_request,
            "node_cpu_seconds_per_request": self.node_cpu_per_request,
            "generator_saturated": self.generator_saturated,
        }
        return json.dumps(document, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> StormResult:
        document = json.loads(text)
        if document.get("format") != FORMAT:
            raise ValueError(f"not a storm result of format {FORMAT}: {document.get('format')!r}")
        fields = {a.name for a in attrs.fields(cls)}
        return cls(**{k: v for k, v in document.items() if k in fields})

    # ---- Markdown

    def rows(self) -> list[tuple[str, str]]:
        """C{(figure, value)} rows of the Markdown table."""
        s = self.settings
        lat, boot = self.latency(), self.boot_time()
        rows = [
            ("target", str(s.get("target_description", self.target))),
            ("fleet", str(s.get("fleet", f"{s.get('instances')} instances"))),
            (
                "load",
                f"{s.get('concurrency')} concurrent boots, ramp {s.get('ramp', 0):g} s, "
                f"keep-alive {'on' if s.get('keepalive') else 'off'}, "
                f"{s.get('workers')} generator processes",
            ),
            (
                "requests",
                f"{self.requests:,} in {self.duration:.2f} s "
                + (f"over {s['rounds']} rounds " if s.get("rounds", 1) > 1 else "")
                + f"({self.connections:,} connections)",
            ),
            ("requests/s", f"{self.rps:,.0f}"),
            ("good requests/s", f"{self.good_rps:,.0f} ({_share(self.good, self.requests)})"),
            (
                "latency p50 / p95 / p99 / max",
                " / ".join(_ms(lat[k]) for k in ("p50", "p95", "p99", "max")) + " ms",
            ),
            (
                "boot time p50 / p95 / p99",
                " / ".join(_secs(boot[k]) for k in ("p50", "p95", "p99"))
                + f" s ({self.boots_completed:,} of {self.boots:,} boots completed)",
            ),
            ("boots failed", _counts(self.boots_failed, self.boot_failures)),
            ("errors", _counts(self.error_count, self.errors)),
            (
                "refused connections (among the errors)",
                _counts(self.refused, {k: v for k, v in self.errors.items() if k in REFUSAL_KINDS}),
            ),
            ("non-CRLF answers", _counts(self.nonstandard_count, self.nonstandard)),
        ]
        cpu = self.agent.get("cpu_seconds")
        per = self.agent_cpu_per_request
        rows.append(
            (
                "agent CPU per request",
                "n/a"
                if per is None
                else f"{per * 1e6:,.0f} µs ({cpu:.2f} s in all, "
                f"{_share(cpu, self.duration)} of one core)",
            )
        )
        if self.proxies:
            p = self.proxies
            proxy_per = self.proxy_cpu_per_request
            node_per = self.node_cpu_per_request
            rows.append(
                (
                    f"{p.get('name', 'proxy')} CPU per request",
                    "n/a"
                    if proxy_per is None
                    else f"{proxy_per * 1e6:,.0f} µs ({p['cpu_seconds']:.2f} s in all, "
                    f"{p.get('count', '?')} daemons)",
                )
            )
            rows.append(
                (
                    f"node CPU per request (agent + {p.get('name', 'proxy')})",
                    "n/a" if node_per is None else f"{node_per * 1e6:,.0f} µs",
                )
            )
            rows.append(
                (
                    f"{p.get('name', 'proxy')} peak RSS",
                    f"{_mib(p.get('peak_rss_bytes'))} MiB in all "
                    f"({p.get('processes', '?')} processes)",
                )
            )
        rows.append(
            (
                "agent peak RSS",
                f"{_mib(self.agent.get('peak_rss_bytes'))} MiB "
                f"({self.agent.get('processes', '?')} process"
                f"{'' if self.agent.get('processes') == 1 else 'es'})",
            )
        )
        if self.nova is not None:
            outcomes = {k: v for k, v in (self.nova.get("by_outcome") or {}).items() if v}
            statuses = self.nova.get("by_status") or {}
            text = f"{self.nova.get('total', 0):,} requests"
            if statuses:
                text += "; status " + ", ".join(f"{k}: {v:,}" for k, v in statuses.items())
            if outcomes:
                text += "; " + ", ".join(f"{k}: {v:,}" for k, v in outcomes.items())
            if self.nova.get("cpu_seconds") is not None:
                text += f"; CPU {self.nova['cpu_seconds']:.2f} s"
            rows.append(("fake Nova", text))
        busy = self.generator.get("busy") or []
        rows.append(
            (
                "generator CPU",
                ", ".join(f"{b:.0%}" for b in busy)
                + " of a core per worker"
                + (" (SATURATED: figures are a floor)" if self.generator_saturated else ""),
            )
        )
        if self.host:
            rows.append(
                (
                    "host CPU busy",
                    f"{self.host.get('busy', 0):.0%} of {self.host.get('cpus', '?')} CPUs",
                )
            )
        return rows

    def to_markdown(self) -> str:
        lines = [
            f"### {self.label}, {self.target} ({self.started})",
            "",
            "| figure | value |",
            "|---|---|",
        ]
        lines += [f"| {name} | {markdown_cell(value)} |" for name, value in self.rows()]
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    # ---- comparison figures

    def figures(self) -> list[tuple[str, float | None, Callable[[float | None], str], int]]:
        """C{(name, value, format, direction)} of the figures a comparison shows;
        C{direction} is L{HIGHER} or L{LOWER} (which is better) or L{NEUTRAL}."""
        lat, boot = self.latency(), self.boot_time()
        per = self.agent_cpu_per_request
        return [
            ("requests", float(self.requests), _int, NEUTRAL),
            # context, as requests: an agent that refuses or fails boots early does less work
            ("duration (s)", self.duration, _secs, NEUTRAL),
            ("requests/s", self.rps, _int, HIGHER),
            ("good requests/s", self.good_rps, _int, HIGHER),
            ("latency p50 (ms)", lat["p50"], _ms, LOWER),
            ("latency p95 (ms)", lat["p95"], _ms, LOWER),
            ("latency p99 (ms)", lat["p99"], _ms, LOWER),
            ("latency max (ms)", lat["max"], _ms, LOWER),
            ("boot time p50 (s)", boot["p50"], _secs, LOWER),
            ("boot time p95 (s)", boot["p95"], _secs, LOWER),
            ("boot time p99 (s)", boot["p99"], _secs, LOWER),
            ("boots completed", float(self.boots_completed), _int, HIGHER),
            ("errors", float(self.error_count), _int, LOWER),
            ("refused connections (among the errors)", float(self.refused), _int, LOWER),
            ("other errors", float(self.error_count - self.refused), _int, LOWER),
            ("non-CRLF answers", float(self.nonstandard_count), _int, LOWER),
            ("agent CPU per request (µs)", None if per is None else per * 1e6, _int, LOWER),
            (
                "node CPU per request, agent + haproxy (µs)",
                None if self.node_cpu_per_request is None else self.node_cpu_per_request * 1e6,
                _int,
                LOWER,
            ),
            (
                "haproxy peak RSS (MiB)",
                (self.proxies or {}).get("peak_rss_bytes", 0),
                _mib,
                LOWER,
            ),
            ("agent peak RSS (MiB)", self.agent.get("peak_rss_bytes"), _mib, LOWER),
            ("generator CPU, busiest worker (%)", self.generator_busiest * 100, _int, NEUTRAL),
        ]

    def plot(self, path: str) -> bool:
        """Write the latency CDF and the boot-time histogram as a PNG; C{False} (nothing
        written) when matplotlib is missing."""
        return plot_results([self], path)


# ---- formatting


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _secs(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def _int(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def _share(part: float | None, whole: float | None) -> str:
    if part is None or not whole:
        return "-"
    return f"{part / whole:.1%}"


def _counts(total: int, kinds: dict[str, int]) -> str:
    if not total:
        return "0"
    return f"{total:,}: " + ", ".join(
        f"{kind} {count:,}" for kind, count in sorted(kinds.items(), key=lambda kv: -kv[1])
    )


def markdown_cell(text: str) -> str:
    """C{text} made safe for a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")
