"""``metaproxy health``: ask a running agent's ``/healthz`` (on ``[metaproxy]
metrics_listen``); exit 0 when healthy, 1 when not or when the agent cannot be asked
(for the init system)."""

from __future__ import annotations

import argparse
import socket

from metaproxy.cli.failures import AgentUnreachable, CommandFailed
from metaproxy.cli.parser import (
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    HelpFormatter,
    seconds_arg,
    settings_from,
)

__all__ = ["add_subcommand"]


def add_subcommand(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config: argparse.ArgumentParser,
) -> None:
    health = commands.add_parser(
        "health",
        parents=[config],
        epilog=EXIT_CODES,
        formatter_class=HelpFormatter,
        help="ask a running agent whether it is healthy (exit 0) or not (exit 1)",
        description="GET /healthz from the agent's [metaproxy] metrics_listen (its first "
        "entry, or --listen) and print the answer; exit 0 when healthy, 1 otherwise.",
    )
    health.add_argument(
        "--listen",
        metavar="ENTRY",
        help="HOST:PORT, PORT or unix:PATH (default: the configuration's "
        "first [metaproxy] metrics_listen entry)",
    )
    health.add_argument(
        "--timeout",
        type=seconds_arg,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for the answer (default 5)",
    )
    health.set_defaults(run=_health)


def _health(args: argparse.Namespace) -> int:
    import http.client

    from metaproxy.config import parse_listen

    entry = args.listen
    if entry is None:
        entries = settings_from(args).metrics_listen
        if not entries:
            raise CommandFailed(
                "the configuration sets no [metaproxy] metrics_listen, so the "
                "agent serves no /healthz; set it, or pass --listen",
                EXIT_USAGE,
            )
        entry = entries[0]
    try:
        kind, where, port = parse_listen(entry)
    except ValueError as e:
        raise CommandFailed(f"--listen {entry!r}: {e}", EXIT_USAGE) from None

    class _UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(args.timeout)
            self.sock.connect(where)

    if kind == "unix":
        conn: http.client.HTTPConnection = _UnixConnection("localhost", timeout=args.timeout)
    else:
        conn = http.client.HTTPConnection(where, int(port), timeout=args.timeout)
    try:
        conn.request("GET", "/healthz")
        answer = conn.getresponse()
        body = answer.read().decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException) as e:
        raise AgentUnreachable(f"cannot ask the agent's /healthz on {entry}: {e}") from None
    finally:
        conn.close()
    print(body)
    return EXIT_OK if answer.status == 200 else EXIT_FAILED
