"""C{parse_listen}: what one C{[metaproxy] metrics_listen} entry means.

It stays in config because it parses an option's value: the load-time check
(L{metaproxy.config.checks}) uses it so that a bad entry is a L{ConfigError} naming the
file and the line, and the metrics server (L{metaproxy.ops.web}) and C{metaproxy health
--listen} (L{metaproxy.cli}) use the same function, so they accept exactly what the check
accepts. Moving it down into L{metaproxy.ops.web} would make config import the metrics
server; it has no better home than the option it reads.
"""

from __future__ import annotations

import ipaddress
import os

from metaproxy.namespace import MAX_SOCKET_PATH_BYTES

__all__ = ["parse_listen"]


def parse_listen(entry: str) -> tuple[str, str, int | str]:
    """C{("tcp", host, port)} or C{("unix", path, 0)} for one C{metrics_listen} entry.

    @raise ValueError: the entry is neither (the message says why).
    """
    if entry.startswith("unix:"):
        path = entry[5:]
        if not path.startswith("/"):
            raise ValueError("a Unix socket path must be absolute")
        if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
            raise ValueError(f"a Unix socket path must be at most {MAX_SOCKET_PATH_BYTES} bytes")
        return ("unix", path, 0)
    host, sep, port = entry.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", entry
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{host!r} is not an IP address (write 127.0.0.1, ::1 in "
            "brackets, or another local address)"
        ) from None
    return ("tcp", host, int(port))
