"""The counters of the request policy, the connection bounds and the Nova endpoints, as
metrics (L{metaproxy.ops.metrics.Metrics.add_source}): read when Prometheus scrapes, so the
request path only increments plain integers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from metaproxy.nova.breaker import CLOSED, HALF_OPEN, OPEN
from metaproxy.ops.metrics import Sample

__all__ = ["protection_samples"]


def protection_samples(
    policy: Any, limits: Any, namespace_refused: Callable[[], int], nova: Any
) -> Callable[[], Iterable[Sample]]:
    """A metrics source over C{policy} (L{metaproxy.guard.policy.RequestPolicy}), C{limits}
    (L{metaproxy.http.server.Limits}: the process-wide connection bound), the refusals of the
    per-namespace bounds (summed by the caller) and C{nova}
    (L{metaproxy.nova.endpoints.NovaEndpoints})."""

    def samples() -> list[Sample]:
        counters = policy.counters
        out = [
            Sample(
                "metaproxy_rate_limited_total",
                "counter",
                "Requests answered 429 by [metadata_rate_limiting].",
                (),
                counters.rate_limited,
            ),
            Sample(
                "metaproxy_guest_forwarded_for_total",
                "counter",
                "Requests that carried the guest's own X-Forwarded-For (seen), and those "
                "answered 403 for it (refused, guest_forwarded_for = enforce).",
                (("action", "seen"),),
                counters.xff_seen,
            ),
            Sample(
                "metaproxy_guest_forwarded_for_total",
                "counter",
                "",
                (("action", "refused"),),
                counters.xff_refused,
            ),
            Sample(
                "metaproxy_connections_refused_total",
                "counter",
                "Connections answered 503 and closed because a bound was full.",
                (("bound", "max_connections"),),
                limits.connections.refused,
            ),
            Sample(
                "metaproxy_connections_refused_total",
                "counter",
                "",
                (("bound", "max_connections_per_namespace"),),
                namespace_refused(),
            ),
            Sample(
                "metaproxy_nova_failovers_total",
                "counter",
                "GET/HEAD requests sent again to the next Nova endpoint.",
                (),
                nova.failovers,
            ),
            Sample(
                "metaproxy_nova_refused_total",
                "counter",
                "Requests answered 503 at once: every endpoint's breaker open "
                "(breakers_open) or the endpoint's queue full (queue_full).",
                (("reason", "breakers_open"),),
                nova.refused,
            ),
            Sample(
                "metaproxy_nova_refused_total",
                "counter",
                "",
                (("reason", "queue_full"),),
                sum(e.client.rejected for e in nova.endpoints),
            ),
        ]
        for endpoint in nova.endpoints:
            for state in (CLOSED, HALF_OPEN, OPEN):
                out.append(
                    Sample(
                        "metaproxy_nova_endpoint_state",
                        "gauge",
                        "1 for each Nova endpoint's circuit breaker state (closed: in use).",
                        (("endpoint", endpoint.url), ("state", state)),
                        1 if endpoint.state == state else 0,
                    )
                )
        return out

    return samples
