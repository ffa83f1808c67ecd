"""The operations site: C{/metrics} and C{/healthz}, served by twisted.web with no
access log (a scrape every few seconds would fill the log with nothing). The agent
listens for it on C{[metaproxy] metrics_listen} (L{metaproxy.agent.ops_listener}).

    GET /metrics   Prometheus text format (L{metaproxy.ops.metrics.render})
    GET /healthz   200 or 503, JSON: {"status": ..., "checks": {name: {ok, detail}}}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Site

from metaproxy.ops.health import health
from metaproxy.ops.metrics import CONTENT_TYPE, render

__all__ = ["OpsResource", "OpsSite"]


class _Metrics(Resource):
    isLeaf = True

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        super().__init__()
        self._snapshot = snapshot

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE.encode("ascii"))
        return render(self._snapshot)


class _Health(Resource):
    isLeaf = True

    def __init__(self, checks: Callable[[], Mapping[str, tuple[bool, str]]]) -> None:
        super().__init__()
        self._checks = checks

    def render_GET(self, request: Any) -> bytes:
        status, body = health(self._checks())
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return body


class OpsResource(Resource):
    """The root: C{/metrics} and C{/healthz}; anything else is 404."""

    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
        checks: Callable[[], Mapping[str, tuple[bool, str]]],
    ) -> None:
        super().__init__()
        self.putChild(b"metrics", _Metrics(snapshot))
        self.putChild(b"healthz", _Health(checks))


class OpsSite(Site):
    """A Site that writes no access log and no factory start/stop lines."""

    noisy = False

    def log(self, request: Any) -> None:
        pass
