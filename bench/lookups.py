"""Where the agent under a storm looks instances up: the C{--lookup} choices of
C{python -m bench storm} and C{compare}.

Each choice is a function C{start(table, run_dir) -> RunningLookup}: it starts whatever
serves lookups from the fleet's port table (nothing for the table itself; a fake
Neutron API, a real C{ovsdb-server}, a RabbitMQ with a fake neutron-server for the
production backends), and says which configuration lines point metaproxy at it.

C{rpc}: a private RabbitMQ (L{bench.fakes.rabbitmq}) and C{python -m bench.fakes.neutronserver}
on the fleet's table; metaproxy gets only C{transport_url} (so C{lookup_backend}
defaults to C{rpc}, as on an operator's node) and C{[cache] enabled = true,
expiration_time = 10} (the expiry Neutron's admin guide recommends). C{compare} points
upstream's agent at the same bus (C{transport_url}), unpatched.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import attrs

__all__ = ["RunningLookup", "LOOKUPS", "start_lookup"]


@attrs.define
class RunningLookup:
    """A started lookup service and the agent configuration that uses it.

    @ivar name: the C{--lookup} choice.
    @ivar extra_default: lines for the agent's C{[DEFAULT]} section.
    @ivar extra_metaproxy: lines for its C{[metaproxy]} section (C{lookup_backend = ...}).
    @ivar extra_sections: whole sections appended to the agent's file (C{[ovn]}, ...).
    @ivar pids: processes serving the lookups (reported beside the agent's).
    @ivar description: one line for the report ("table", "fake Neutron API + Keystone").
    @ivar ready_line: text the agent logs once its lookups can be answered; the storm
        waits for it (a backend that first synchronises answers 503 until then).
    @ivar transport_url: the RPC bus, for lookups over neutron-server's RPC (upstream's
        agent in C{compare} uses it too); None otherwise.
    """

    name: str
    description: str
    extra_default: str = ""
    extra_metaproxy: str = ""
    extra_sections: str = ""
    pids: list[int] = attrs.field(factory=list)
    stop: Callable[[], None] = lambda: None
    ready_line: str = ""
    transport_url: str | None = None


def _table(table: Path, run_dir: Path) -> RunningLookup:
    # write_agent_config already points lookup_table at the fleet's table.
    return RunningLookup("table", "static table file (lookup_backend = table)")


#: The fake Keystone's password for the bench's agent (a fake cloud: not a secret).
FAKE_NEUTRON_PASSWORD = "bench-keystone-password"


def _neutron_api(table: Path, run_dir: Path) -> RunningLookup:
    from bench.fakes.neutron.cli import start_process

    process, url = start_process(table, run_dir, password=FAKE_NEUTRON_PASSWORD)
    return RunningLookup(
        "neutron-api",
        "fake Keystone + Neutron API (lookup_backend = neutron_api, [cache] enabled, 60 s)",
        extra_metaproxy="lookup_backend = neutron_api\n",
        extra_sections=(
            "[neutron]\n"
            "auth_type = password\n"
            f"auth_url = {url}/identity/v3\n"
            "username = metaproxy\n"
            f"password = {FAKE_NEUTRON_PASSWORD}\n"
            "user_domain_name = Default\n"
            "project_name = service\n"
            "project_domain_name = Default\n"
            "\n[cache]\n"
            "enabled = true\n"
            "expiration_time = 60\n"
        ),
        pids=[process.pid],
        stop=process.stop,
    )


def _ovn(table: Path, run_dir: Path) -> RunningLookup:
    """A real ovsdb-server on the OVN Southbound schema, loaded with the fleet's table
    (L{bench.fakes.ovnsb}); the agent replicates it over the server's Unix socket."""
    from bench.fakes.ovnsb import SbServer, missing

    problem = missing()
    if problem:
        raise RuntimeError(f"--lookup ovn: {problem}")
    server = SbServer.start(run_dir / "sb")
    try:
        rows = server.load_table(json.loads(table.read_text()))
    except BaseException:
        server.stop()
        raise
    return RunningLookup(
        "ovn",
        f"OVN Southbound in a real ovsdb-server ({rows} Port_Binding rows, lookup_backend = ovn)",
        extra_metaproxy="lookup_backend = ovn\n",
        extra_sections=f"[ovn]\novn_sb_connection = {server.remote('unix')}\n",
        pids=[server.pid],
        stop=server.stop,
        ready_line="OVN Southbound synchronised",
    )


def _rpc(table: Path, run_dir: Path) -> RunningLookup:
    from bench.fakes.rabbitmq import RabbitMQ
    from bench.processes import Process, _wait_for_line

    broker = RabbitMQ.start(run_dir / "rabbit")
    log_path = run_dir / "fakeneutronserver.log"
    try:
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.fakes.neutronserver",
                    "--transport-url",
                    broker.transport_url,
                    "--table",
                    str(table),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(Path(__file__).resolve().parent.parent),
            )
        server = Process(popen, log_path, "fake neutron-server")
        _wait_for_line(server, "fakeneutronserver ready", 60)
    except BaseException:
        broker.close()
        raise

    def stop() -> None:
        server.stop()
        broker.close()

    assert broker.popen is not None
    return RunningLookup(
        "rpc",
        "neutron-server RPC: fake neutron-server (oslo.messaging) on a private "
        "RabbitMQ; lookup_backend unset (rpc by default), [cache] expiration_time = 10",
        extra_default=f"transport_url = {broker.transport_url}\n",
        extra_sections="[cache]\nenabled = true\nexpiration_time = 10\n",
        pids=[server.pid, broker.popen.pid],
        stop=stop,
        transport_url=broker.transport_url,
    )


#: C{--lookup} choice -> C{start(table, run_dir)}.
LOOKUPS: dict[str, Callable[[Path, Path], RunningLookup]] = {
    "table": _table,
    "neutron-api": _neutron_api,
    "ovn": _ovn,
    "rpc": _rpc,
}


def start_lookup(name: str, table: Path, run_dir: Path) -> RunningLookup:
    """Start the lookup service called C{name} (a key of L{LOOKUPS}) on C{table}."""
    try:
        start = LOOKUPS[name]
    except KeyError:
        raise ValueError(f"unknown lookup {name!r}; one of {', '.join(LOOKUPS)}") from None
    run_dir.mkdir(parents=True, exist_ok=True)
    return start(table, run_dir)
