"""Worker processes: C{metadata_workers = N} (N >= 2) runs N of them, sharing every socket.

The agent's own process binds every socket and supervises the workers with a
L{WorkerPool} (L{metaproxy.agent.workers.pool}); each worker (C{python -m
metaproxy.agent.workers}, L{metaproxy.agent.workers.worker}) serves them with its own
L{metaproxy.agent.proxy.Proxy}; the sockets reach it over its channel
(L{metaproxy.agent.workers.channel}), a socketpair that carries one line per socket
added or removed.
"""

from metaproxy.agent.workers.channel import (
    CHANNEL_FD,
    FIRST_SOCKET_FD,
    SHARED,
    Channel,
    ChannelProtocol,
    ProtocolError,
    parse_command,
    parse_name,
    socket_name,
)
from metaproxy.agent.workers.pool import (
    KILL_AFTER,
    RESTART_FIRST,
    RESTART_MAX,
    STABLE_AFTER,
    WorkerPool,
)
from metaproxy.agent.workers.worker import (
    DRAIN_SECONDS,
    METRICS_INTERVAL,
    ConnectionTracker,
    WorkerService,
    main,
)
from metaproxy.http.listeners import AdoptedUNIXPort

__all__ = [
    "SHARED",
    "CHANNEL_FD",
    "FIRST_SOCKET_FD",
    "DRAIN_SECONDS",
    "METRICS_INTERVAL",
    "KILL_AFTER",
    "RESTART_FIRST",
    "RESTART_MAX",
    "STABLE_AFTER",
    "ProtocolError",
    "socket_name",
    "parse_name",
    "parse_command",
    "AdoptedUNIXPort",
    "Channel",
    "ChannelProtocol",
    "WorkerPool",
    "ConnectionTracker",
    "WorkerService",
    "main",
]
