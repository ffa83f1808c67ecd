"""The operations listener: the ops site (C{/metrics} and C{/healthz},
L{metaproxy.ops.web}) on every C{[metaproxy] metrics_listen} entry.

Loopback TCP and/or a Unix socket, never the metadata sockets: instances reach the agent
only through the namespace proxies, which forward to those.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, UNIXServerEndpoint
from twisted.logger import Logger
from twisted.web.server import Site

from metaproxy.config import parse_listen
from metaproxy.http.listeners import ListenError, prepare_socket_path

__all__ = ["OpsListener"]

log = Logger("metaproxy.opsweb")


class OpsListener(Service):
    """Listens on every C{metrics_listen} entry while running.

    A port that cannot be bound is logged and the others are still served: the agent
    serves instances whatever happens to its metrics.
    """

    def __init__(self, reactor: Any, entries: tuple[str, ...], site: Site) -> None:
        self._reactor = reactor
        self._entries = entries
        self._site = site
        self.ports: list[Any] = []

    def _endpoint(self, entry: str) -> Any:
        kind, where, port = parse_listen(entry)
        if kind == "unix":
            prepare_socket_path(where)
            return UNIXServerEndpoint(self._reactor, where, mode=0o660, wantPID=False)
        if ":" in where:
            return TCP6ServerEndpoint(self._reactor, port, interface=where)
        return TCP4ServerEndpoint(self._reactor, port, interface=where)

    def startService(self) -> None:
        super().startService()
        for entry in self._entries:
            try:
                d = self._endpoint(entry).listen(self._site)
            except (ListenError, ValueError, OSError) as e:
                log.error(
                    "Cannot serve metrics and health on {entry}: {error}; the agent "
                    "serves instances without it",
                    entry=entry,
                    error=str(e),
                )
                continue
            d.addCallbacks(self.ports.append, self._cannot, errbackArgs=(entry,))

    def _cannot(self, failure: Any, entry: str) -> None:
        log.error(
            "Cannot serve metrics and health on {entry}: {error}; fix [metaproxy] "
            "metrics_listen (another process on that port?)",
            entry=entry,
            error=str(failure.value),
        )

    def stopService(self) -> Any:
        super().stopService()
        ports, self.ports = self.ports, []
        stops = []
        for port in ports:
            stops.append(maybeDeferred(port.stopListening))
            host = port.getHost()
            name = getattr(host, "name", None)
            if isinstance(name, (str, bytes)) and name:
                try:
                    os.unlink(name)
                except OSError:
                    pass
        return DeferredList(stops, consumeErrors=True)
