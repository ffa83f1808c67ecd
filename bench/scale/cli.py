# -*- test-case-name: tests.integration.test_scale -*-
"""C{python -m bench.scale connections|namespaces|routers ...} (L{main}); C{_hold PATH COUNT} is
the connection generator's own (L{bench.scale.holder.hold_main})."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.options import RESULTS
from bench.scale.connections import connections_markdown, run_connections
from bench.scale.holder import hold_main
from bench.scale.namespaces import namespaces_markdown, run_namespaces
from bench.scale.output import publish
from bench.scale.routers import routers_markdown, run_routers

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_hold"]:  # the connection generator (internal)
        return hold_main(argv[1], int(argv[2]))
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description="Scale checks of metaproxy; figures only."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    conn = commands.add_parser("connections", help="agent memory with many held connections")
    conn.add_argument("--connections", type=int, default=10000)
    conn.add_argument(
        "--hold",
        type=float,
        default=3.0,
        help="seconds to hold them once all are accepted (default %(default)s)",
    )
    conn.add_argument(
        "--request-timeout",
        type=float,
        default=300.0,
        help="the agent's request_timeout for the run (default %(default)s)",
    )
    ns = commands.add_parser(
        "namespaces", help="start-up with many namespace sockets, and changes during a storm"
    )
    ns.add_argument("--namespaces", type=int, default=10000)
    ns.add_argument(
        "--declare",
        choices=("config", "dir"),
        default="config",
        help="[metaproxy] namespaces, or one file each in namespace_dir",
    )
    ns.add_argument("--instances", type=int, default=200, help="boots in the storm")
    ns.add_argument("--routers", type=int, default=20, help="namespaces the storm uses")
    ns.add_argument("--concurrency", type=int, default=50)
    ns.add_argument("--ops", type=int, default=4, help="add/remove pairs during the storm")
    ns.add_argument("--no-storm", action="store_true", help="start-up time only")
    ns.add_argument(
        "--socket-fs",
        metavar="DIR",
        help="make the socket directory under DIR (e.g. /dev/shm, a tmpfs); "
        "default: the run directory under /tmp",
    )
    routers = commands.add_parser(
        "routers",
        help="many router namespaces served by metaproxy itself (router_namespaces = "
        "serve): start-up, memory and descriptors per router, haproxy's cost instead",
    )
    routers.add_argument("--routers", type=int, default=1000)
    routers.add_argument(
        "--haproxies",
        type=int,
        default=20,
        help="namespaces given an idle haproxy to measure (default %(default)s)",
    )
    for sub in (conn, ns, routers):
        sub.add_argument(
            "--workers",
            type=int,
            default=None,
            help="metadata_workers for the agent (default: unset)",
        )
        sub.add_argument("--out", type=Path, default=RESULTS)
        sub.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)
    if args.command == "connections":
        result = run_connections(
            args.connections,
            hold=args.hold,
            request_timeout=args.request_timeout,
            workers=args.workers,
            keep=args.keep,
        )
        markdown = connections_markdown(result)
    elif args.command == "routers":
        result = run_routers(
            args.routers, haproxies=args.haproxies, workers=args.workers, keep=args.keep
        )
        markdown = routers_markdown(result)
    else:
        result = run_namespaces(
            args.namespaces,
            declare=args.declare,
            instances=args.instances,
            routers=args.routers,
            concurrency=args.concurrency,
            ops=args.ops,
            storm=not args.no_storm,
            workers=args.workers,
            socket_fs=args.socket_fs,
            keep=args.keep,
        )
        markdown = namespaces_markdown(result)
    publish(result, markdown, args.out, parser.prog, argv)
    return 0
