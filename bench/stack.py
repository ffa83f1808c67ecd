"""The system under test, started for a storm: a fake Nova, the lookup service and C{twistd
metaproxy} in front of them, in a short run directory under /tmp.

L{start_stack} starts the whole of it (L{Stack}); L{start_nova} and L{start_metaproxy}
are the pieces, for C{bench compare}, C{bench.scale} and the tests. L{sigterm_interrupts}
turns SIGTERM into C{KeyboardInterrupt} so that whatever was started is stopped and
removed on SIGTERM as on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from bench.load.fleet import Fleet
from bench.lookups import RunningLookup, start_lookup
from bench.processes import (
    Process,
    start_agent,
    start_fakenova,
    wait_for_log,
    wait_for_socket,
    write_agent_config,
)
from metaproxy.namespace import namespace_socket_path

__all__ = [
    "DEFAULT_SECRET",
    "AGENT_CONFIG",
    "Stack",
    "new_run_dir",
    "start_nova",
    "start_metaproxy",
    "start_stack",
    "sigterm_interrupts",
]

DEFAULT_SECRET = "bench-shared-secret"
AGENT_CONFIG = "agent.ini"


class Stack:
    """A fake Nova and an agent in front of it, in a short run directory under /tmp."""

    def __init__(
        self,
        run_dir: Path,
        nova: Process,
        nova_port: int,
        agent: Process | None,
        shared_socket: str,
        namespace_socket_dir: str,
        lookup: RunningLookup | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.lookup = lookup
        self.nova = nova
        self.nova_port = nova_port
        self.agent = agent
        self.shared_socket = shared_socket
        self.namespace_socket_dir = namespace_socket_dir

    @property
    def nova_url(self) -> str:
        return f"http://127.0.0.1:{self.nova_port}"

    @property
    def agent_config(self) -> Path:
        """The agent's configuration file (L{start_metaproxy} writes it)."""
        return self.run_dir / AGENT_CONFIG

    @property
    def pids(self) -> list[int]:
        """Every process of the stack: the agent, the fake Nova, the lookup service."""
        return [p.pid for p in (self.agent, self.nova) if p is not None] + (
            list(self.lookup.pids) if self.lookup is not None else []
        )

    def stop(self) -> None:
        for process in (self.agent, self.nova):
            if process is not None:
                process.stop()
        if self.lookup is not None:
            self.lookup.stop()


def new_run_dir() -> Path:
    """A fresh run directory. Short, under /tmp: a socket path must stay within 97 bytes
    (C{qrouter-<uuid>.sock} alone is 50)."""
    return Path(tempfile.mkdtemp(prefix="mpb-", dir="/tmp"))


def start_nova(
    table: Path, run: Path, *, secret: str = DEFAULT_SECRET, nova_delay: float = 0.0
) -> tuple[Process, int]:
    """The fake Nova on C{table} (its log in C{<run>/nova}); returns it and its port.

    @param nova_delay: its C{--delay} (seconds before each answer).
    """
    extra = ["--max-recorded", "100"]
    if nova_delay:
        extra += ["--delay", str(nova_delay)]
    return start_fakenova(table, secret, run / "nova", extra_args=extra)


def start_metaproxy(
    fleet: Fleet,
    table: Path,
    run: Path,
    *,
    nova_port: int,
    secret: str,
    extra_metaproxy: str = "",
    extra_default: str = "",
    lookup: RunningLookup | None = None,
) -> tuple[Process, str, str]:
    """C{twistd metaproxy} on C{table} serving the shared socket and one socket per
    namespace of the fleet, everything under C{run}; waits for all its sockets.

    @param lookup: the started lookup service it uses (L{bench.lookups}); default: the
        table itself.

    @return: the process, the shared socket's path, the per-namespace socket directory.
    """
    state, ns_dir = run / "s", run / "ns"
    config = write_agent_config(
        run / AGENT_CONFIG,
        state_path=state,
        nova_port=nova_port,
        secret=secret,
        table=table,
        namespaces=fleet.namespace_names(),
        extra_default=extra_default + (lookup.extra_default if lookup else ""),
        extra_metaproxy=(
            f"namespace_socket_dir = {ns_dir}\n{extra_metaproxy}"
            + (lookup.extra_metaproxy if lookup else "")
        ),
        extra_sections=lookup.extra_sections if lookup else "",
    )
    shared = str(state / "metadata_proxy")
    agent = start_agent([config], run / "agent", wait_socket=shared)
    try:
        for namespace in fleet.namespaces:
            wait_for_socket(namespace_socket_path(str(ns_dir), namespace), 30, agent)
        if lookup is not None and lookup.ready_line:
            wait_for_log(agent, lookup.ready_line, 60)
    except BaseException:
        agent.stop()
        raise
    return agent, shared, str(ns_dir)


def start_stack(
    fleet: Fleet,
    *,
    secret: str = DEFAULT_SECRET,
    agent_secret: str | None = None,
    nova_delay: float = 0.0,
    run_dir: Path | None = None,
    extra_metaproxy: str = "",
    extra_default: str = "",
    lookup: str = "table",
) -> Stack:
    """Write the fleet's table, start the fake Nova, the lookup service and C{twistd
    metaproxy} serving the shared socket and one socket per namespace of the fleet; wait
    for all sockets.

    @param agent_secret: the agent's secret, if not Nova's (C{--wrong-secret}).
    @param nova_delay: the fake Nova's C{--delay} (seconds before each answer).
    @param lookup: a key of L{bench.lookups.LOOKUPS}: where the agent looks instances up.
    """
    run = run_dir if run_dir is not None else new_run_dir()
    table = run / "ports.json"
    fleet.write(table)
    nova, nova_port = start_nova(table, run, secret=secret, nova_delay=nova_delay)
    running = None
    try:
        running = start_lookup(lookup, table, run / "lookup")
        agent, shared, ns_dir = start_metaproxy(
            fleet,
            table,
            run,
            nova_port=nova_port,
            secret=agent_secret if agent_secret is not None else secret,
            extra_metaproxy=extra_metaproxy,
            extra_default=extra_default,
            lookup=running,
        )
    except BaseException:
        nova.stop()
        if running is not None:
            running.stop()
        raise
    return Stack(run, nova, nova_port, agent, shared, ns_dir, running)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While inside, SIGTERM raises KeyboardInterrupt as Ctrl-C does, so the clean-up
    (namespaces, haproxy, agent) runs; Python's default would end the process without
    it. Only in the main thread (where signals can be handled)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
