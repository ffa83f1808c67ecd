"""The fake cloud's command line, C{python -m bench.fakes.neutron --table ports.json}
(L{main}), and starting it as a process for a storm or a test (L{start_process})."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.fakes.neutron.cloud import FakeCloud, QuietSite, cloud_resource

__all__ = ["main", "start_process"]

#: The directory holding the bench package, where the process runs.
_SOURCE_ROOT = Path(__file__).resolve().parents[3]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fakes.neutron",
        description=("A fake Keystone v3 and Neutron API answering from a port table."),
    )
    parser.add_argument("--table", required=True, help="port table (ports.json)")
    parser.add_argument(
        "--listen",
        default="tcp:0:interface=127.0.0.1",
        help="Twisted server endpoint (default %(default)s)",
    )
    parser.add_argument("--username", default="metaproxy")
    parser.add_argument(
        "--password-file", help="file holding the password (default: the password is fake-password)"
    )
    parser.add_argument("--project", default="service")
    parser.add_argument("--token-lifetime", type=float, default=3600.0)
    return parser.parse_args(argv)


async def _serve(reactor: Any, args: argparse.Namespace) -> None:
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import serverFromString

    password = "fake-password"
    if args.password_file:
        password = Path(args.password_file).read_text().strip()
    cloud = FakeCloud.from_table(
        args.table,
        reactor,
        username=args.username,
        password=password,
        project=args.project,
        token_lifetime=args.token_lifetime,
    )
    site = QuietSite(cloud_resource(cloud))
    site.noisy = False
    port = await serverFromString(reactor, args.listen).listen(site)
    address = port.getHost()
    cloud.base_url = f"http://{address.host}:{address.port}"
    print(f"fakeneutron listening on {cloud.base_url}", flush=True)
    await Deferred()  # until SIGTERM stops the reactor


def main(argv: Sequence[str] | None = None) -> None:
    """C{python -m bench.fakes.neutron --table PATH [--listen ENDPOINT] [--username U]
    [--password-file PATH] [--project P] [--token-lifetime SECONDS]}: prints
    C{fakeneutron listening on <url>} (Keystone at C{<url>/identity/v3}) and serves until
    SIGTERM."""
    from twisted.internet.task import react  # imports the global reactor

    args = _parse_args(argv)
    react(_serve, (args,))


def start_process(
    table: str | Path, run_dir: Path, *, password: str, timeout: float = 20.0
) -> tuple[Any, str]:
    """Start C{python -m bench.fakes.neutron} on a free loopback port; return the
    L{bench.processes.Process} and its base URL."""
    import subprocess

    from bench.processes import Process, _wait_for_line

    run_dir.mkdir(parents=True, exist_ok=True)
    secret_file = run_dir / "fakeneutron.password"
    secret_file.write_text(password)
    log_path = run_dir / "fakeneutron.log"
    args = [
        sys.executable,
        "-m",
        "bench.fakes.neutron",
        "--table",
        str(table),
        "--password-file",
        str(secret_file),
    ]
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(_SOURCE_ROOT),
        )
    process = Process(popen, log_path, "fake Neutron API")
    try:
        line = _wait_for_line(process, "fakeneutron listening on", timeout)
    except BaseException:
        process.stop()
        raise
    return process, line.rsplit(" ", 1)[1].strip()
