"""A bench's own Southbound database: the fleet's size on its command line
(L{fleet_parser}), whether it can run here (L{cannot_run}), and a run directory with a
real C{ovsdb-server} on the Southbound schema in it, stopped and removed after
(L{private_cluster}: clustered, as the reconnect needs its history; L{private_server}:
one standalone server).

    with private_cluster("mp-ovsdb-local-", size=1) as (run_dir, cluster):
        load_fleet(cluster, args.ports, args.networks)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.fakes.ovnsb import SbServer, missing
from bench.fakes.ovnsb_cluster import SbCluster

__all__ = ["fleet_parser", "cannot_run", "private_cluster", "private_server"]


def fleet_parser(prog: str, ports: int = 100_000, networks: int = 1000) -> argparse.ArgumentParser:
    """A bench's parser, with the fleet it loads: C{--ports} bound ports over
    C{--networks} networks."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--ports", type=int, default=ports)
    parser.add_argument("--networks", type=int, default=networks)
    return parser


def cannot_run(problem: str | None = None) -> bool:
    """Whether this bench cannot run here: no C{ovsdb-server} or Southbound schema
    (L{missing}), or else C{problem}; if it cannot, say why on stderr."""
    problem = missing() or problem
    if problem:
        print(f"cannot run: {problem}", file=sys.stderr)
        return True
    return False


@contextmanager
def _run_directory(prefix: str) -> Iterator[Path]:
    run_dir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield run_dir
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@contextmanager
def private_cluster(prefix: str, size: int) -> Iterator[tuple[Path, SbCluster]]:
    """A run directory (C{prefix}) and a Southbound cluster of C{size} members in its
    C{sb}; the cluster stopped and the directory removed after."""
    with _run_directory(prefix) as run_dir:
        cluster = SbCluster.start(run_dir / "sb", size=size)
        try:
            yield run_dir, cluster
        finally:
            cluster.stop()


@contextmanager
def private_server(prefix: str) -> Iterator[tuple[Path, SbServer]]:
    """A run directory (C{prefix}) and one standalone Southbound server in its C{sb}; the
    server stopped and the directory removed after."""
    with _run_directory(prefix) as run_dir:
        server = SbServer.start(run_dir / "sb")
        try:
            yield run_dir, server
        finally:
            server.stop()
