# -*- test-case-name: tests.bench.fakes.test_fakenova -*-
"""What the fake Nova received, exactly as on the wire: L{RecordedRequest}, and the
site (L{QuietSite}) whose channel keeps each request's header lines in their wire case
and order."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

__all__ = ["RecordedRequest", "RecordingRequest", "QuietSite"]


@attrs.frozen
class RecordedRequest:
    """One request as the fake received it, and how it answered.

    @ivar uri: the request-target exactly as on the wire (path and query, not decoded).
    @ivar headers: C{(name, value)} in wire order, names in their wire case.
    """

    method: bytes
    uri: bytes
    version: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    status: int
    outcome: str

    def header_values(self, name: bytes) -> list[bytes]:
        """All values of header C{name} (case-insensitive), in order."""
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    def as_json(self) -> dict[str, Any]:
        """JSON-ready form: bytes become latin-1 strings (a lossless mapping)."""
        return {
            "method": self.method.decode("latin-1"),
            "uri": self.uri.decode("latin-1"),
            "version": self.version.decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in self.headers],
            "body": self.body.decode("latin-1"),
            "status": self.status,
            "outcome": self.outcome,
        }


class RecordingRequest(Request):
    """A request that also keeps its header lines as received: name case and order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raw_headers: list[tuple[bytes, bytes]] = []


class RecordingChannel(HTTPChannel):
    def headerReceived(self, line: bytes) -> bool:
        ok = super().headerReceived(line)
        if ok and self.requests:
            raw = getattr(self.requests[-1], "raw_headers", None)
            if raw is not None:
                name, _, value = line.partition(b":")
                raw.append((name, value.strip(b" \t")))
        return ok


class QuietSite(Site):
    """A L{Site} with no access log, speaking plain HTTP/1.1 on a recording channel."""

    def log(self, request: Request) -> None:
        pass

    def protocol(self) -> HTTPChannel:  # type: ignore[override]
        # HTTPFactory.buildProtocol calls self.protocol(); a plain channel (no HTTP/2
        # negotiation wrapper) lets the channel record raw header lines.
        return RecordingChannel()
