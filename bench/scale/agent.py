# -*- test-case-name: tests.integration.test_scale -*-
"""The agent of a scale check (L{ScaleAgent}): the fake Nova and C{twistd metaproxy} with
many namespace sockets declared (L{start_scale_agent}); waiting until sockets accept
(L{wait_accepting}); one instance's request through a socket (L{normal_request})."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from bench.load.fleet import Fleet
from bench.load.unixhttp import Answer, get
from bench.processes import Process, start_agent, wait_for_socket, write_agent_config
from bench.scale.host import raise_nofile
from bench.stack import DEFAULT_SECRET, new_run_dir, start_nova
from metaproxy.namespace import Namespace, namespace_socket_path

__all__ = ["ScaleAgent", "start_scale_agent", "wait_accepting", "normal_request"]


class ScaleAgent:
    """The fake Nova and C{twistd metaproxy} of one check, in a run directory."""

    def __init__(
        self,
        run: Path,
        nova: Process,
        nova_port: int,
        agent: Process,
        config: Path,
        started: float,
        socket_dir: str,
    ) -> None:
        self.run, self.nova, self.nova_port, self.agent = run, nova, nova_port, agent
        self.config = config
        self.started = started  # time.monotonic() just before the agent was started
        self.shared = str(run / "s" / "metadata_proxy")
        self.socket_dir = socket_dir
        self.namespace_dir = run / "namespaces.d"
        self.control_socket = str(run / "s" / "control.sock")

    @property
    def nova_url(self) -> str:
        return f"http://127.0.0.1:{self.nova_port}"

    def socket_path(self, namespace: Namespace) -> str:
        return namespace_socket_path(self.socket_dir, namespace)

    def stop(self) -> None:
        self.agent.stop()
        self.nova.stop()

    def remove(self) -> None:
        """Remove the run directory and the socket directory."""
        shutil.rmtree(self.run, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def start_scale_agent(
    fleet: Fleet,
    *,
    namespaces: Sequence[Namespace] = (),
    declare: str = "config",
    extra_metaproxy: str = "",
    extra_default: str = "",
    run: Path | None = None,
    socket_dir: str | None = None,
    wait_shared: bool = True,
) -> ScaleAgent:
    """Write the fleet's table, start the fake Nova, then C{twistd metaproxy} with
    C{namespaces} declared in the configuration (C{declare="config"}) or as files in its
    C{namespace_dir} (C{"dir"}). Waits for the shared socket only if C{wait_shared}.

    @param socket_dir: C{namespace_socket_dir}; default C{<run>/ns}.

    The soft C{nofile} limit is raised first for the sockets (the agent inherits it).
    """
    if declare not in ("config", "dir"):
        raise ValueError("declare must be 'config' or 'dir'")
    run = run if run is not None else new_run_dir()
    table = run / "ports.json"
    fleet.write(table)
    nova, nova_port = start_nova(table, run, secret=DEFAULT_SECRET)
    try:
        namespace_dir = run / "namespaces.d"
        namespace_dir.mkdir(parents=True, exist_ok=True)
        if declare == "dir":
            for namespace in namespaces:
                (namespace_dir / namespace.name).touch()
        socket_dir = socket_dir or str(run / "ns")
        config = write_agent_config(
            run / "agent.ini",
            state_path=run / "s",
            nova_port=nova_port,
            secret=DEFAULT_SECRET,
            table=table,
            namespaces=[n.name for n in namespaces] if declare == "config" else (),
            extra_default=extra_default,
            extra_metaproxy=(
                f"namespace_socket_dir = {socket_dir}\n"
                f"namespace_dir = {namespace_dir}\n"
                f"control_socket = {run / 's' / 'control.sock'}\n"
                f"{extra_metaproxy}"
            ),
        )
        raise_nofile(len(namespaces) + 1024)
        started = time.monotonic()
        agent = start_agent([config], run / "agent", wait_socket=None)
        scale = ScaleAgent(run, nova, nova_port, agent, config, started, socket_dir)
        if wait_shared:
            wait_for_socket(scale.shared, 60, agent)
    except BaseException:
        nova.stop()
        raise
    return scale


def wait_accepting(
    paths: Sequence[str], timeout: float, process: Process | None = None
) -> tuple[float, float]:
    """Wait until every one of C{paths} accepts a connection (the kernel accepts it: the
    socket listens).

    The socket files are counted first (a listing per 20 ms, which costs the agent
    nothing), then each is connected to once, and again until all have accepted.

    @return: C{time.monotonic()} when the last file appeared and when the last connection
        was accepted: the start-up is over between the two.
    """
    deadline = time.monotonic() + timeout
    by_directory: dict[str, set[str]] = {}
    for path in paths:
        directory, name = os.path.split(path)
        by_directory.setdefault(directory, set()).add(name)

    def missing() -> int:
        count = 0
        for directory, names in by_directory.items():
            try:
                count += len(names - set(os.listdir(directory)))
            except FileNotFoundError:
                count += len(names)
        return count

    while missing():
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{missing()} of {len(paths)} socket files missing after {timeout} s"
            )
        if process is not None and not process.alive():
            raise RuntimeError(f"the agent exited:\n{process.log()[-3000:]}")
        time.sleep(0.02)
    files_at = time.monotonic()
    waiting = list(paths)
    while waiting:
        still = []
        for path in waiting:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.setblocking(False)
                try:
                    sock.connect(path)
                except OSError:
                    still.append(path)
        waiting = still
        if waiting:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{len(waiting)} of {len(paths)} sockets not accepting "
                    f"after {timeout} s, e.g. {waiting[0]}"
                )
            time.sleep(0.02)
    return files_at, time.monotonic()


def normal_request(path: str, fleet: Fleet, headers: bool = True) -> tuple[Answer, float, bool]:
    """One instance's meta_data.json through C{path}: the answer, its latency and whether
    it is right for that instance."""
    instance = fleet.instances[0]
    extra = [(instance.namespace.kind.header_name, instance.namespace.id)] if headers else []
    start = time.monotonic()
    answer = get(path, "/openstack/latest/meta_data.json", forwarded_for=instance.ip, headers=extra)
    latency = time.monotonic() - start
    right = answer.status == 200 and json.loads(answer.body).get("uuid") == instance.instance_id
    return answer, latency, right
