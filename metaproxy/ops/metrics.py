"""Metrics: cheap counting on the hot path, Prometheus text format at scrape time.

The request path never touches prometheus_client. L{RequestStats} is what the server
counts into, with plain dict and list increments in one place (the answer written):
requests by socket kind and status, a latency histogram kept as bucket counts, the
connections open (which L{metaproxy.agent.drain} waits for), refusals by reason,
connections refused by the bound that was full, and the identity headers guests sent to
a TCP listener inside their namespace (ignored there).

Everything else is read when Prometheus scrapes: L{Metrics.snapshot} gathers the request
counters, the lookup cache's counters, the Nova pool's gauges, the reloads, and whatever
the sources added with L{Metrics.add_source} return, into one plain, JSON-able dict.
Plain so that worker processes can send theirs to the agent (L{WorkerTotals} adds them
up); L{families} turns a snapshot into Prometheus metric families and L{render} into
the text format, through a private C{CollectorRegistry} (never the global one).

A source is a callable returning L{Sample}s. Each component that counts something
describes its own counters that way (C{RequestPolicy.metric_samples},
C{RateLimiter.metric_samples}, C{NovaEndpoints.metric_samples}), reading the plain
integers its hot path increments; whoever builds the component plugs it in:

    proxy.metrics.add_source(proxy.policy.metric_samples)

This module imports no component: everyone can import it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

__all__ = [
    "LATENCY_BUCKETS",
    "REFUSAL_REASONS",
    "CONNECTION_BOUNDS",
    "GUEST_IDENTITY_HEADERS",
    "RequestStats",
    "Sample",
    "Metrics",
    "merge",
    "families",
    "render",
    "WorkerTotals",
    "CONTENT_TYPE",
]

#: Upper bounds (seconds) of the request latency histogram's buckets.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

#: Status of a refusal by the request parser or the server -> the reason label.
REFUSAL_REASONS = {
    400: "malformed",
    408: "request_timeout",
    413: "body_too_large",
    431: "headers_too_large",
    501: "not_implemented",
    505: "version_not_supported",
}

#: The options whose bound on open connections can be full (the bound label).
CONNECTION_BOUNDS = ("max_connections", "max_connections_per_namespace")

#: The headers that name the caller behind haproxy, which a guest talking to a TCP
#: listener inside its namespace can only have written itself (the header label).
GUEST_IDENTITY_HEADERS = (
    "X-Forwarded-For",
    "X-Neutron-Router-ID",
    "X-Neutron-Network-ID",
    "X-OVN-Network-ID",
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RequestStats:
    """What the server counts, per serving process. Attributes are public and plain:
    the server increments them directly (one dict update and one list update per
    request; no lock: one reactor thread).

    @ivar requests: C{(socket kind, status as 3 ASCII bytes)} -> requests answered.
        The socket kind is C{"shared"} or the namespace kind's value (C{"router"},
        C{"network"}, C{"ovn"}).
    @ivar buckets: requests per latency bucket (L{LATENCY_BUCKETS}, then +Inf), from
        the connection made to the answer written.
    @ivar latency_sum: seconds, summed over the requests counted.
    @ivar open: connections accepted and not yet closed.
    @ivar refused: reason (L{REFUSAL_REASONS}) -> requests the server refused itself.
    @ivar connections_refused: bound (L{CONNECTION_BOUNDS}) -> connections answered 503
        and closed because that bound was full.
    @ivar guest_headers: header (L{GUEST_IDENTITY_HEADERS}) -> requests to a TCP
        listener inside a namespace that carried it (written by the guest, ignored).
    """

    __slots__ = (
        "requests",
        "buckets",
        "latency_sum",
        "open",
        "refused",
        "connections_refused",
        "guest_headers",
        "bounds",
    )

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.requests: dict[tuple[str, bytes], int] = {}
        self.buckets = [0] * (len(bounds) + 1)
        self.latency_sum = 0.0
        self.open = 0
        self.refused: dict[str, int] = {}
        self.connections_refused: dict[str, int] = {}
        self.guest_headers: dict[str, int] = {}

    def record(self, kind: str, status: bytes, seconds: float) -> None:
        """One answer written: C{status} is the 3 bytes after C{HTTP/1.1 }."""
        key = (kind, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        self.buckets[bisect.bisect_left(self.bounds, seconds)] += 1
        self.latency_sum += seconds

    def refuse(self, status: int) -> None:
        """The server refused a request itself (parser error, timeout)."""
        reason = REFUSAL_REASONS.get(status, "other")
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def refuse_connection(self, bound: str) -> None:
        """The server refused a connection because C{bound} (the option) was full."""
        self.connections_refused[bound] = self.connections_refused.get(bound, 0) + 1

    def guest_header(self, header: str) -> None:
        """A request to a TCP listener in a namespace carried C{header}
        (L{GUEST_IDENTITY_HEADERS}), which the guest wrote and the caller ignores."""
        self.guest_headers[header] = self.guest_headers.get(header, 0) + 1


class Sample(NamedTuple):
    """One value a source reports.

    @ivar kind: C{"counter"} (a total that only grows; the name ends in C{_total}) or
        C{"gauge"}.
    @ivar labels: C{((name, value), ...)}.
    """

    name: str
    kind: str
    help: str
    labels: tuple[tuple[str, str], ...]
    value: float


def _status_label(status: bytes) -> str:
    return status.decode("ascii", "replace")


class Metrics:
    """The metrics of one serving process: its L{RequestStats} and what is read at
    scrape time.

    @param cache: the L{metaproxy.resolve.cache.CachingBackend} (counters C{hits},
        C{misses}, C{coalesced}, C{failures}), or None.
    @param nova: the L{metaproxy.nova.endpoints.NovaEndpoints} or a
        L{metaproxy.nova.client.NovaClient} (C{in_flight}, C{queued}, C{idle}), or None.
    """

    def __init__(
        self,
        stats: RequestStats | None = None,
        *,
        cache: Any = None,
        nova: Any = None,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.stats = stats if stats is not None else RequestStats()
        self.cache = cache
        self.nova = nova
        self.ready = ready
        self.reloads: dict[str, int] = {}
        self._sources: list[Callable[[], Iterable[Sample]]] = []

    def add_source(self, source: Callable[[], Iterable[Sample]]) -> None:
        """Call C{source} at each scrape; its L{Sample}s are exported as they are."""
        self._sources.append(source)

    def reloaded(self, outcome: str) -> None:
        """A SIGHUP reload ended with C{outcome} (C{"ok"} or C{"failed"})."""
        self.reloads[outcome] = self.reloads.get(outcome, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """Everything, as plain JSON-able values (see L{families})."""
        s = self.stats
        snap: dict[str, Any] = {
            "requests": [
                [kind, _status_label(status), count]
                for (kind, status), count in sorted(s.requests.items())
            ],
            "buckets": list(s.buckets),
            "bounds": list(s.bounds),
            "latency_sum": s.latency_sum,
            "open": s.open,
            "refused": dict(s.refused),
            "connections_refused": dict(s.connections_refused),
            "guest_headers": dict(s.guest_headers),
            "reloads": dict(self.reloads),
            "lookups": {},
            "nova": {},
            "samples": [],
            "ready": [int(bool(self.ready())), 1] if self.ready is not None else [0, 0],
        }
        if self.cache is not None:
            c = self.cache
            snap["lookups"] = {
                "hit": c.hits,
                "miss": c.misses,
                "coalesced": c.coalesced,
                "failed": c.failures,
            }
        if self.nova is not None:
            n = self.nova
            snap["nova"] = {"in_use": n.in_flight, "idle": n.idle, "queued": n.queued}
        for source in self._sources:
            snap["samples"].extend(
                [
                    list(sample[:3]) + [[list(kv) for kv in sample[3]], sample[4]]
                    for sample in source()
                ]
            )
        return snap


def merge(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Add snapshots up (workers): every counter and gauge is summed."""
    total: dict[str, Any] = {
        "requests": [],
        "buckets": [],
        "bounds": list(LATENCY_BUCKETS),
        "latency_sum": 0.0,
        "open": 0,
        "refused": {},
        "connections_refused": {},
        "guest_headers": {},
        "reloads": {},
        "lookups": {},
        "nova": {},
        "samples": [],
        "ready": [0, 0],
    }
    requests: dict[tuple[str, str], float] = {}
    samples: dict[tuple[str, str, str, tuple], float] = {}
    for snap in snapshots:
        for kind, status, count in snap.get("requests", ()):
            requests[(kind, status)] = requests.get((kind, status), 0) + count
        buckets = snap.get("buckets") or []
        if buckets:
            if not total["buckets"]:
                total["buckets"] = [0] * len(buckets)
                total["bounds"] = list(snap.get("bounds", LATENCY_BUCKETS))
            if len(buckets) == len(total["buckets"]):
                total["buckets"] = [a + b for a, b in zip(total["buckets"], buckets, strict=False)]
        total["latency_sum"] += snap.get("latency_sum", 0.0)
        ready = snap.get("ready") or [0, 0]
        total["ready"] = [total["ready"][0] + ready[0], total["ready"][1] + ready[1]]
        total["open"] += snap.get("open", 0)
        for key in (
            "refused",
            "connections_refused",
            "guest_headers",
            "reloads",
            "lookups",
            "nova",
        ):
            for name, value in (snap.get(key) or {}).items():
                total[key][name] = total[key].get(name, 0) + value
        for name, kind, help_, labels, value in snap.get("samples", ()):
            k = (name, kind, help_, tuple(tuple(kv) for kv in labels))
            samples[k] = samples.get(k, 0) + value
    total["requests"] = [[k, s, c] for (k, s), c in sorted(requests.items())]
    total["samples"] = [
        [n, k, h, [list(kv) for kv in labels], v] for (n, k, h, labels), v in samples.items()
    ]
    return total


def families(snap: dict[str, Any]) -> list[Metric]:
    """Prometheus metric families of a snapshot (L{Metrics.snapshot} or L{merge})."""
    out: list[Metric] = []
    requests = CounterMetricFamily(
        "metaproxy_requests",
        "Requests answered, by socket kind (shared, router, network, ovn) and HTTP status.",
        labels=["socket", "status"],
    )
    for kind, status, count in snap["requests"]:
        requests.add_metric([kind, status], count)
    out.append(requests)
    if snap["buckets"]:
        cumulative, running = [], 0
        for bound, count in zip(list(snap["bounds"]) + ["+Inf"], snap["buckets"], strict=False):
            running += count
            cumulative.append((str(float(bound)) if bound != "+Inf" else "+Inf", running))
        out.append(
            HistogramMetricFamily(
                "metaproxy_request_duration_seconds",
                "Seconds from the connection made to the answer written.",
                buckets=cumulative,
                sum_value=snap["latency_sum"],
            )
        )
    out.append(
        GaugeMetricFamily(
            "metaproxy_connections_open",
            "Connections from the namespace proxies being served.",
            value=snap["open"],
        )
    )
    refused = CounterMetricFamily(
        "metaproxy_refused_requests",
        "Requests the agent refused before the pipeline, by "
        "reason (headers_too_large 431, body_too_large 413, request_timeout 408, "
        "malformed 400, ...).",
        labels=["reason"],
    )
    for reason in sorted(set(REFUSAL_REASONS.values()) | set(snap["refused"])):
        refused.add_metric([reason], snap["refused"].get(reason, 0))
    out.append(refused)
    connections = CounterMetricFamily(
        "metaproxy_connections_refused",
        "Connections answered 503 and closed because a bound was full.",
        labels=["bound"],
    )
    connections_refused = snap.get("connections_refused") or {}
    for bound in sorted(set(CONNECTION_BOUNDS) | set(connections_refused)):
        connections.add_metric([bound], connections_refused.get(bound, 0))
    out.append(connections)
    guest = CounterMetricFamily(
        "metaproxy_guest_identity_headers",
        "Requests to a TCP listener inside a namespace that carried a header naming the "
        "caller (X-Forwarded-For, X-Neutron-Router-ID, X-Neutron-Network-ID, "
        "X-OVN-Network-ID): written by the guest, ignored (the caller is the connection's "
        "peer).",
        labels=["header"],
    )
    guest_headers = snap.get("guest_headers") or {}
    for header in sorted(set(GUEST_IDENTITY_HEADERS) | set(guest_headers)):
        guest.add_metric([header], guest_headers.get(header, 0))
    out.append(guest)
    reloads = CounterMetricFamily(
        "metaproxy_reloads", "SIGHUP reloads, by outcome.", labels=["outcome"]
    )
    for outcome in sorted({"ok", "failed"} | set(snap["reloads"])):
        reloads.add_metric([outcome], snap["reloads"].get(outcome, 0))
    out.append(reloads)
    if snap.get("ready", [0, 0])[1]:
        out.append(
            GaugeMetricFamily(
                "metaproxy_lookup_backend_ready",
                "Serving processes whose lookup backend is ready (of metaproxy_serving_processes).",
                value=snap["ready"][0],
            )
        )
        out.append(
            GaugeMetricFamily(
                "metaproxy_serving_processes",
                "Processes serving the metadata sockets that "
                "reported their metrics (the agent itself, or its workers).",
                value=snap["ready"][1],
            )
        )
    if snap["lookups"]:
        lookups = CounterMetricFamily(
            "metaproxy_lookups",
            "Port lookups: hit (kept answer), miss (backend call), "
            "coalesced (joined a call in flight), failed (backend call failed).",
            labels=["result"],
        )
        for result in ("hit", "miss", "coalesced", "failed"):
            lookups.add_metric([result], snap["lookups"].get(result, 0))
        out.append(lookups)
    if snap["nova"]:
        pool = GaugeMetricFamily(
            "metaproxy_nova_connections",
            "Requests to Nova in flight (in_use), idle "
            "keep-alive connections (idle), requests waiting for a slot (queued).",
            labels=["state"],
        )
        for state in ("in_use", "idle", "queued"):
            pool.add_metric([state], snap["nova"].get(state, 0))
        out.append(pool)
    grouped: dict[tuple[str, str], Metric] = {}
    for name, kind, help_, labels, value in snap["samples"]:
        names = [k for k, _ in labels]
        family = grouped.get((name, kind))
        if family is None:
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = grouped[(name, kind)] = cls(name, help_, labels=names)
        family.add_metric([v for _, v in labels], value)
    out.extend(grouped.values())
    return out


class _Snapshots:
    """A collector over a snapshot function (for a private CollectorRegistry)."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> list[Metric]:
        return families(self._snapshot())


def render(snapshot: Callable[[], dict[str, Any]]) -> bytes:
    """The Prometheus text format of C{snapshot()}."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshots(snapshot))  # type: ignore[arg-type]
    return generate_latest(registry)


class WorkerTotals:
    """The agent's view of its workers' metrics (C{metadata_workers} >= 2).

    Each worker sends its snapshot every few seconds (and once more when it stops). A
    worker's counters start from zero when it restarts: the last snapshot of a worker
    process that is gone is kept in the retired total, so the sums only grow; its gauges
    (connections open, Nova pool) are dropped. What a worker counted after its last
    report and before it died is lost.
    """

    _GAUGES = ("open", "nova")

    def __init__(self) -> None:
        self._latest: dict[int, tuple[int, dict[str, Any]]] = {}  # index -> (pid, snap)
        self._retired: dict[str, Any] = merge([])

    def report(self, index: int, pid: int, snap: dict[str, Any]) -> None:
        previous = self._latest.get(index)
        if previous is not None and previous[0] != pid:
            self._retire(previous[1])
        self._latest[index] = (pid, snap)

    def gone(self, index: int, pid: int | None) -> None:
        """Worker C{index}'s process C{pid} ended."""
        previous = self._latest.get(index)
        if previous is not None and (pid is None or previous[0] == pid):
            del self._latest[index]
            self._retire(previous[1])

    def _retire(self, snap: dict[str, Any]) -> None:
        counters = dict(
            snap,
            open=0,
            nova={},
            ready=[0, 0],
            samples=[s for s in snap.get("samples", ()) if s[1] == "counter"],
        )
        self._retired = merge([self._retired, counters])

    def reporting(self) -> dict[int, dict[str, Any]]:
        """Worker index -> its latest snapshot, for the workers running."""
        return {index: snap for index, (_, snap) in self._latest.items()}

    def snapshot(self, own: dict[str, Any] | None = None) -> dict[str, Any]:
        """The sum: retired workers' counters, running workers' snapshots and C{own}
        (the agent's own: reloads)."""
        parts = [self._retired] + [snap for _, snap in self._latest.values()]
        if own is not None:
            parts.append(own)
        return merge(parts)
