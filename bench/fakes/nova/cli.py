# -*- test-case-name: tests.bench.fakes.test_fakenova,tests.integration.test_fakenova_process -*-
"""The fake Nova's command line: C{python -m bench.fakes.nova --table ports.json
--secret S} (L{main}).

With C{--processes N} the first process binds the socket and starts the others
(L{bench.fakes.nova.pool}); each serves the same table and shares the counters and the
configuration (L{bench.fakes.nova.stats.SharedBoard}).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred

from bench.fakes.nova.api import make_site
from bench.fakes.nova.instances import load_table
from bench.fakes.nova.service_time import ServiceTime, concurrency_share
from bench.fakes.nova.stats import SharedBoard
from bench.fakes.nova.tls import tls_options

__all__ = ["main"]


def _describe(address: Any, scheme: str) -> str:
    host = getattr(address, "host", None)
    if host is None:
        return f"unix:{getattr(address, 'name', address)}"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{address.port}"


def _service_time_arg(spec: str) -> ServiceTime:
    try:
        return ServiceTime.parse(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fakes.nova", description="A fake Nova metadata API."
    )
    parser.add_argument("--table", required=True, help="lookup table (ports.json format)")
    secret = parser.add_mutually_exclusive_group(required=True)
    secret.add_argument("--secret", help="metadata_proxy_shared_secret")
    secret.add_argument(
        "--secret-file", help="file holding the secret (one trailing newline ignored)"
    )
    parser.add_argument(
        "--listen",
        default="tcp:8775:interface=127.0.0.1",
        help="server endpoint string (default %(default)s; tcp:0 picks a free port)",
    )
    parser.add_argument("--tls-cert", help="serve TLS with this certificate (PEM, chain allowed)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    parser.add_argument("--tls-client-ca", help="require client certificates issued by this CA")
    service = parser.add_mutually_exclusive_group()
    service.add_argument(
        "--delay", type=float, default=0.0, help="seconds before each answer (fixed)"
    )
    service.add_argument(
        "--delay-dist",
        type=_service_time_arg,
        metavar="SPEC",
        help="service time drawn for each request, in seconds: fixed:S, uniform:A:B, "
        "exp:MEAN (exponential) or lognormal:MEDIAN:SIGMA",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="seed for the service time draws (process I of --processes uses SEED+I; "
        "default: seeded from the system)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        metavar="N",
        help="Nova's workers: at most N requests in their service time at once, the others "
        "wait in FIFO order; 0 (default) is no limit. With --processes P, each process "
        "takes its share of N (N >= P)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="serve from N processes sharing the listening socket (default 1)",
    )
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--max-recorded",
        type=int,
        default=1000,
        help="requests kept (per process) for /_fakenova/requests",
    )
    parser.add_argument(
        "--log-level",
        default="warn",
        choices=["debug", "info", "warn", "error", "critical"],
        help="log to stderr from this level (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    if not (math.isfinite(args.delay) and args.delay >= 0):
        parser.error("--delay must not be negative")
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    if args.concurrency < 0:
        parser.error("--concurrency must not be negative")
    try:
        concurrency_share(args.concurrency, args.processes, 0)
    except ValueError as e:
        parser.error(f"--concurrency: {e}")
    if args.worker_index is not None and not 1 <= args.worker_index < args.processes:
        parser.error("--worker-index is for the processes --processes starts")
    args.service_time = args.delay_dist or ServiceTime.fixed(args.delay)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def _read_secret(args: argparse.Namespace) -> str:
    if args.secret is not None:
        return str(args.secret)
    with open(args.secret_file, encoding="utf-8") as f:
        value = f.read()
    return value[:-1] if value.endswith("\n") else value


def _site_from_args(
    reactor: Any, args: argparse.Namespace, board: SharedBoard, index: int
) -> tuple[Any, str]:
    """The factory to listen with (TLS-wrapped if asked) and its URL scheme."""
    site, _ = make_site(
        load_table(args.table),
        _read_secret(args),
        reactor,
        service_time=args.service_time,
        concurrency=args.concurrency,
        seed=args.seed,
        max_recorded=args.max_recorded,
        board=board,
        index=index,
    )
    if args.tls_cert is None:
        return site, "http"
    from twisted.protocols.tls import TLSMemoryBIOFactory

    options = tls_options(args.tls_cert, args.tls_key, args.tls_client_ca)
    return TLSMemoryBIOFactory(options, False, site), "https"


async def _serve(reactor: Any, args: argparse.Namespace) -> None:
    from twisted.internet.endpoints import serverFromString

    board = SharedBoard.create(args.processes, shared=args.processes > 1)
    factory, scheme = _site_from_args(reactor, args, board, 0)
    port = await serverFromString(reactor, args.listen).listen(factory)
    # Serve until the reactor stops (SIGTERM, SIGINT): react then exits with 0.
    running: Deferred[None] = Deferred()
    if args.processes > 1:
        from bench.fakes.nova.pool import WorkerPool

        pool = WorkerPool(reactor, args.argv, args.processes - 1, port.fileno(), board.fd)
        reactor.addSystemEventTrigger("before", "shutdown", pool.stop)
        await pool.start()
        running = pool.failed  # fails (exit status 1) if a worker exits on its own
    print(f"fakenova listening on {_describe(port.getHost(), scheme)}", flush=True)
    await running


async def _serve_worker(reactor: Any, args: argparse.Namespace) -> None:
    """A child of L{_serve}: serve the parent's socket until the parent closes our stdin."""
    from bench.fakes.nova.pool import BOARD_FD, LISTEN_FD, READY, watch_parent

    board = SharedBoard.attach(BOARD_FD)
    if board.processes != args.processes:
        raise RuntimeError(f"the board is for {board.processes} processes, not {args.processes}")
    factory, _ = _site_from_args(reactor, args, board, args.worker_index)
    listening = socket.socket(fileno=LISTEN_FD)
    family = listening.family
    port = reactor.adoptStreamPort(LISTEN_FD, family, factory)  # adopts a duplicate
    listening.close()
    if family == socket.AF_UNIX:
        # The socket file is the parent's: a worker must not unlink it when it stops.
        from twisted.internet.tcp import Port

        port.connectionLost = lambda reason: Port.connectionLost(port, reason)
    parent_gone = watch_parent(reactor, 0)
    try:
        os.write(1, READY)
    except BrokenPipeError:
        return  # the parent is gone already
    await parent_gone


def main(argv: Sequence[str] | None = None) -> None:
    """C{python -m bench.fakes.nova --table PATH (--secret S | --secret-file PATH)
    [--listen tcp:8775:interface=127.0.0.1] [--tls-cert PEM --tls-key PEM
    [--tls-client-ca PEM]] [--delay SECONDS | --delay-dist SPEC] [--seed N]
    [--concurrency N] [--processes N] [--max-recorded N] [--log-level warn]}.

    Prints C{fakenova listening on <url>} once listening (with all its processes),
    serves until SIGTERM, then exits with 0 (after its worker processes).
    """
    from twisted.internet.task import react  # imports the global reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    args = _parse_args(argv)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(args.log_level))
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])],
        redirectStandardIO=False,
    )
    if args.worker_index is not None:
        # Ctrl-C reaches the whole process group: the parent stops its workers itself.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        react(_serve_worker, (args,))
    react(_serve, (args,))
