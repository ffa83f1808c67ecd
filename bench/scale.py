"""Scale checks: many held connections, many namespace sockets. Figures, no verdicts.

    python -m bench.scale connections [--connections 10000] [--hold 3]
    python -m bench.scale namespaces [--namespaces 10000] [--declare config|dir]
                                     [--instances 200] [--routers 20] [--ops 4]

C{connections}: the real agent (C{twistd metaproxy}) and the fake Nova, then a generator
process opens C{--connections} connections to the shared socket, sends each the first
line and a header of a request (never its end) and holds them all. The agent's C{VmRSS}
and C{VmHWM} are read from C{/proc/<pid>/status} before, while they are held, and after
they are let go, and a normal request is made while they are held (it must still be
answered). The agent's C{request_timeout} is raised for the run (C{--request-timeout},
default 300 s) so that the held connections are not answered 408 while they are measured.

C{namespaces}: the agent is started with C{--namespaces} per-namespace sockets declared
in C{[metaproxy] namespaces} (C{--declare config}) or as files in C{namespace_dir}
(C{--declare dir}); the start-up time is from starting the process until every one of
those sockets accepts a connection. Then a boot storm runs through the per-namespace
sockets of C{--instances} instances over C{--routers} of them while one more namespace is
added and removed C{--ops} times with C{metaproxy ctl}, and a probe asks one instance's
metadata every 20 ms. Reported: the storm's errors (must be 0), each C{ctl} command's
time, how soon the added socket answered, and the probe's latency near the changes
against the rest of the run (the "latency step").

Both write C{<out>/<stamp>-scale-<check>.json} and C{.md} and print the table.

File descriptors: the agent needs one per socket and one per connection, so C{nofile}
must be above C{sockets + connections + ~100}. This command raises its own soft limit to
what it needs (at most the hard limit) before starting the agent, which inherits it, and
the generator raises its own. Under systemd, set C{LimitNOFILE=} in the unit to the same
(e.g. C{LimitNOFILE=65536}): the default soft limit of 1024 stops an agent at about 1,000
connections plus sockets.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.load.fleet import Fleet, make_fleet
from bench.load.procstat import PeakRSS, rss_bytes, tree_pids, tree_rss_bytes
from bench.load.storm import StormConfig, run_storm
from bench.load.unixhttp import Answer, get
from bench.options import RESULTS
from bench.processes import Process, start_agent, wait_for_socket, write_agent_config
from bench.stack import DEFAULT_SECRET, new_run_dir, start_nova
from metaproxy.namespace import Namespace, NamespaceKind, namespace_socket_path

__all__ = [
    "raise_nofile",
    "open_fds",
    "ConnectionHolder",
    "hold_connections",
    "start_scale_agent",
    "wait_accepting",
    "ctl",
    "nofile_limit",
    "run_connections",
    "run_namespaces",
    "scale_namespaces",
    "main",
]

#: What each held connection has sent: a request line and one header, no blank line.
PARTIAL_REQUEST = b"GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\n"
MIB = 1024 * 1024


# ---- file descriptors and /proc ----------------------------------------------------------


def raise_nofile(needed: int) -> int:
    """Raise this process's soft C{RLIMIT_NOFILE} to at least C{needed} if the hard limit
    allows (children inherit it); return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


def open_fds(pids: Iterable[int]) -> int:
    """Open file descriptors of C{pids} and their descendants."""
    total = 0
    for pid in tree_pids(pids):
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except (FileNotFoundError, PermissionError):
            pass
    return total


def nofile_limit(pid: int) -> int | None:
    """The soft C{nofile} limit of process C{pid} (C{/proc/<pid>/limits}), if readable."""
    try:
        with open(f"/proc/{pid}/limits") as limits:
            for line in limits:
                if line.startswith("Max open files"):
                    soft = line.split()[3]
                    return None if soft == "unlimited" else int(soft)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _memory(pids: Sequence[int]) -> dict[str, int]:
    tree = tree_pids(pids)
    return {
        "rss_bytes": tree_rss_bytes(pids),
        "hwm_bytes": max((rss_bytes(p, peak=True) for p in tree), default=0),
        "processes": len(tree),
    }


def _wait_until(condition: Any, timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll C{condition()} until true; return the seconds it took.

    @raise RuntimeError: not true after C{timeout} seconds.
    """
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{what}: not done after {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start


# ---- the generator of held connections ----------------------------------------------------


def _hold_main(path: str, count: int) -> int:
    """The generator process: open C{count} connections to C{path}, send each
    L{PARTIAL_REQUEST}, print C{held <count> <seconds> <retries>}, hold them until
    stdin closes, then close them."""
    limit = raise_nofile(count + 64)
    if limit < count + 16:
        print(
            f"error: RLIMIT_NOFILE is {limit}; {count} connections need more "
            "(raise the hard limit)",
            flush=True,
        )
        return 1
    sockets = []
    retries = 0
    start = time.monotonic()
    while len(sockets) < count:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except BlockingIOError:  # the listen queue is full: let the agent catch up
            sock.close()
            retries += 1
            time.sleep(0.002)
            continue
        except OSError as e:
            sock.close()
            print(f"error: connection {len(sockets) + 1}: {e}", flush=True)
            return 1
        sock.send(PARTIAL_REQUEST)
        sockets.append(sock)
    print(f"held {len(sockets)} {time.monotonic() - start:.3f} {retries}", flush=True)
    sys.stdin.read()  # until the parent lets go
    for sock in sockets:
        sock.close()
    return 0


class ConnectionHolder:
    """A generator process holding C{count} partial-request connections to C{path}.

    C{with hold_connections(path, 10000) as held:} returns once all are open (the agent
    may not have accepted them all yet); leaving the block closes them.

    @ivar open_seconds: how long opening them took; C{retries}: connects that found the
        listen queue full and were tried again.
    """

    def __init__(self, path: str, count: int, timeout: float = 300.0) -> None:
        self.count = count
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.scale", "_hold", path, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
        assert self._process.stdout is not None
        line = _readline(self._process, timeout)
        if not line.startswith("held "):
            self.close()
            raise RuntimeError(f"the connection generator failed: {line.strip()}")
        _, held, seconds, retries = line.split()
        self.open_seconds = float(seconds)
        self.retries = int(retries)

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                assert self._process.stdin is not None
                self._process.stdin.close()
                self._process.wait(30)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> ConnectionHolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _readline(process: subprocess.Popen, timeout: float) -> str:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not lines:
        process.kill()
        raise RuntimeError(f"the connection generator said nothing in {timeout} s")
    return lines[0] or f"exited with {process.wait()}"


def hold_connections(path: str, count: int, timeout: float = 300.0) -> ConnectionHolder:
    return ConnectionHolder(path, count, timeout)


# ---- the agent -----------------------------------------------------------------------------


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


def _normal_request(path: str, fleet: Fleet, headers: bool = True) -> tuple[Answer, float, bool]:
    """One instance's meta_data.json through C{path}: the answer, its latency and whether
    it is right for that instance."""
    instance = fleet.instances[0]
    extra = [(instance.namespace.kind.header_name, instance.namespace.id)] if headers else []
    start = time.monotonic()
    answer = get(path, "/openstack/latest/meta_data.json", forwarded_for=instance.ip, headers=extra)
    latency = time.monotonic() - start
    right = answer.status == 200 and json.loads(answer.body).get("uuid") == instance.instance_id
    return answer, latency, right


# ---- connections -----------------------------------------------------------------------------


def run_connections(
    connections: int = 10000,
    *,
    hold: float = 3.0,
    request_timeout: float = 300.0,
    workers: int | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    """Peak memory of the agent holding C{connections} partial requests on the shared
    socket, and whether a normal request is still answered meanwhile."""
    fleet = make_fleet(10, 2)
    extra_default = f"metadata_workers = {workers}\n" if workers is not None else ""
    raise_nofile(connections + 1024)
    scale = start_scale_agent(
        fleet, extra_metaproxy=f"request_timeout = {request_timeout}\n", extra_default=extra_default
    )
    pids = [scale.agent.pid]
    agent_nofile = nofile_limit(scale.agent.pid)
    try:
        time.sleep(0.5)
        _, idle_latency, idle_right = _normal_request(scale.shared, fleet)
        before = _memory(pids)
        fds_before = open_fds(pids)
        with PeakRSS(pids) as peak, hold_connections(scale.shared, connections) as held:
            accepted = _wait_until(
                lambda: open_fds(pids) >= fds_before + connections,
                120,
                "the agent accepting every connection",
            )
            time.sleep(hold)
            held_memory = _memory(pids)
            answer, latency, right = _normal_request(scale.shared, fleet)
            if not scale.agent.alive():
                raise RuntimeError(f"the agent died:\n{scale.agent.log()[-3000:]}")
        released = _wait_until(
            lambda: open_fds(pids) <= fds_before + 5,
            120,
            "the agent closing the released connections",
        )
        after = _memory(pids)
        log_408 = scale.agent.log().count("answered 408")
    finally:
        scale.stop()
        if not keep:
            scale.remove()
    per_connection = (held_memory["rss_bytes"] - before["rss_bytes"]) / connections
    return {
        "check": "connections",
        "connections": connections,
        "request_timeout": request_timeout,
        "metadata_workers": workers,
        "agent_nofile": agent_nofile,
        "agent_processes": held_memory["processes"],
        "rss_idle_bytes": before["rss_bytes"],
        "rss_held_bytes": held_memory["rss_bytes"],
        "hwm_bytes": max(held_memory["hwm_bytes"], after["hwm_bytes"]),
        "peak_rss_sampled_bytes": peak.peak_bytes,
        "rss_after_release_bytes": after["rss_bytes"],
        "bytes_per_connection": per_connection,
        "open_seconds": held.open_seconds,
        "listen_queue_full_retries": held.retries,
        "all_accepted_seconds": accepted,
        "released_seconds": released,
        "normal_request_idle": {"seconds": idle_latency, "right": idle_right},
        "normal_request_held": {"status": answer.status, "seconds": latency, "right": right},
        "answered_408": log_408,
        "target_rss_mib": 100,
    }


def connections_markdown(r: dict[str, Any]) -> str:
    mib = lambda b: f"{b / MIB:.1f} MiB"  # noqa: E731
    held = r["normal_request_held"]
    rows = [
        (
            "held connections",
            f"{r['connections']:,} on the shared socket, each with a partial "
            f"request ({len(PARTIAL_REQUEST)} bytes)",
        ),
        (
            "agent processes",
            str(r["agent_processes"])
            + (
                f" (metadata_workers = {r['metadata_workers']})"
                if r["metadata_workers"] is not None
                else " (metadata_workers unset)"
            )
            + f"; its nofile limit {r['agent_nofile']}",
        ),
        ("RSS idle", mib(r["rss_idle_bytes"])),
        ("RSS holding them", mib(r["rss_held_bytes"]) + f" (target < {r['target_rss_mib']} MiB)"),
        ("peak (VmHWM)", mib(r["hwm_bytes"])),
        ("per connection", f"{r['bytes_per_connection'] / 1024:.2f} KiB"),
        ("RSS after they closed", mib(r["rss_after_release_bytes"])),
        (
            "opening them",
            f"{r['open_seconds']:.2f} s ({r['listen_queue_full_retries']} "
            "retries on a full listen queue); all accepted after "
            f"{r['all_accepted_seconds']:.2f} s",
        ),
        (
            "normal request meanwhile",
            f"status {held['status']}, "
            f"{'right' if held['right'] else 'WRONG'} instance, "
            f"{held['seconds'] * 1000:.1f} ms (idle: "
            f"{r['normal_request_idle']['seconds'] * 1000:.1f} ms)",
        ),
        ("closed after release", f"{r['released_seconds']:.2f} s"),
        ("answered 408 (should be 0)", str(r["answered_408"])),
    ]
    return _table(f"Scale: {r['connections']:,} held connections", rows)


# ---- namespaces -------------------------------------------------------------------------------


def scale_namespaces(fleet: Fleet, count: int, seed: int = 0) -> list[Namespace]:
    """The fleet's namespaces followed by made-up router namespaces, C{count} in all."""
    namespaces = list(fleet.namespaces)
    rng = uuid.UUID(int=seed)
    while len(namespaces) < count:
        namespaces.append(
            Namespace(NamespaceKind.ROUTER, str(uuid.uuid5(rng, str(len(namespaces)))))
        )
    return namespaces[: max(count, len(fleet.namespaces))]


def _filesystem(path: str) -> str:
    """The type of the file system C{path} (or its nearest existing parent) is on."""
    best, kind = "", "?"
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                point = fields[1]
                if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(
                    best
                ):
                    best, kind = point, fields[2]
    except OSError:
        pass
    return kind


def ctl(scale: ScaleAgent, action: str, namespace: Namespace) -> tuple[float, str]:
    """Run C{metaproxy ctl <action> <namespace>} against C{scale}'s agent: its wall time
    and an error (empty when it succeeded)."""
    start = time.monotonic()
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("metaproxy")),
            "ctl",
            "--control-socket",
            scale.control_socket,
            action,
            namespace.name,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = time.monotonic() - start
    if done.returncode != 0:
        return seconds, f"exit {done.returncode}: {done.stderr.strip()}"
    return seconds, ""


class _Probe(threading.Thread):
    """One request every C{interval} seconds through C{path}; keeps (time, latency, ok)."""

    def __init__(self, path: str, fleet: Fleet, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self._path, self._fleet, self._interval = path, fleet, interval
        self.samples: list[tuple[float, float, bool]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            at = time.monotonic()
            try:
                _, latency, right = _normal_request(self._path, self._fleet, headers=True)
            except OSError:
                latency, right = time.monotonic() - at, False
            self.samples.append((at, latency, right))
            self._halt.wait(self._interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def _changes(
    scale: ScaleAgent,
    fleet: Fleet,
    namespace: Namespace,
    ops: int,
    gap: float,
    events: list[dict[str, Any]],
    done: threading.Event,
) -> None:
    """Add and remove C{namespace} C{ops} times, C{gap} seconds apart, recording each."""
    path = scale.socket_path(namespace)
    try:
        for _ in range(ops):
            done.wait(gap)
            at = time.monotonic()
            seconds, error = ctl(scale, "add", namespace)
            served = None
            if not error:
                try:
                    # a namespace the table does not know: a 404 says it is served
                    answer = get(path, "/openstack", forwarded_for="10.99.0.1")
                    served = answer.status
                except OSError as e:
                    error = f"added socket not answering: {e}"
            events.append(
                {"action": "add", "at": at, "seconds": seconds, "answered": served, "error": error}
            )
            done.wait(gap)
            at = time.monotonic()
            seconds, error = ctl(scale, "remove", namespace)
            if not error and os.path.exists(path):
                error = "socket file still there after remove"
            events.append({"action": "remove", "at": at, "seconds": seconds, "error": error})
    except Exception as e:  # reported, not raised from the thread
        events.append({"action": "error", "at": time.monotonic(), "error": repr(e)})


def _percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def run_namespaces(
    count: int = 10000,
    *,
    declare: str = "config",
    instances: int = 200,
    routers: int = 20,
    concurrency: int = 50,
    ops: int = 4,
    gap: float = 1.5,
    storm: bool = True,
    workers: int | None = None,
    socket_fs: str | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    """Start-up time with C{count} declared namespace sockets; then a storm on some of
    them while one more namespace is added and removed.

    @param socket_fs: a directory (e.g. C{/dev/shm}, a tmpfs) to make the socket
        directory in; default: in the run directory under C{/tmp}.
    """
    fleet = make_fleet(instances, routers)
    namespaces = scale_namespaces(fleet, count)
    extra_default = f"metadata_workers = {workers}\n" if workers is not None else ""
    socket_dir = None
    if socket_fs:
        socket_dir = tempfile.mkdtemp(prefix="mps-", dir=socket_fs)
    scale = start_scale_agent(
        fleet,
        namespaces=namespaces,
        declare=declare,
        extra_default=extra_default,
        socket_dir=socket_dir,
        wait_shared=False,
    )
    result: dict[str, Any] = {
        "check": "namespaces",
        "namespaces": len(namespaces),
        "declare": declare,
        "metadata_workers": workers,
        "socket_dir": scale.socket_dir,
        "socket_filesystem": _filesystem(scale.socket_dir),
        "target_startup_seconds": 3.0,
    }
    try:
        _, shared_at = wait_accepting([scale.shared], 120, scale.agent)
        paths = [scale.socket_path(n) for n in namespaces]
        files_at, accepting_at = wait_accepting(paths, 300, scale.agent)
        result["shared_socket_seconds"] = shared_at - scale.started
        result["socket_files_seconds"] = files_at - scale.started
        result["startup_seconds"] = accepting_at - scale.started
        result["rss_after_start_bytes"] = _memory([scale.agent.pid])["rss_bytes"]
        result["open_fds"] = open_fds([scale.agent.pid])
        if storm:
            result.update(
                _storm_with_changes(scale, fleet, instances, routers, concurrency, ops, gap)
            )
        result["rss_end_bytes"] = _memory([scale.agent.pid])["rss_bytes"]
        if not scale.agent.alive():
            raise RuntimeError(f"the agent died:\n{scale.agent.log()[-3000:]}")
    finally:
        scale.stop()
        if not keep:
            scale.remove()
    return result


def _storm_with_changes(
    scale: ScaleAgent,
    fleet: Fleet,
    instances: int,
    routers: int,
    concurrency: int,
    ops: int,
    gap: float,
) -> dict[str, Any]:
    extra = Namespace(NamespaceKind.ROUTER, "scale-added")
    config = StormConfig(
        instances=instances,
        routers=routers,
        concurrency=concurrency,
        workers=2,
        target="namespaces",
        shared_socket=scale.shared,
        namespace_socket_dir=scale.socket_dir,
        nova_url=scale.nova_url,
    )
    probe = _Probe(scale.socket_path(fleet.instances[0].namespace), fleet)
    events: list[dict[str, Any]] = []
    done = threading.Event()
    changer = threading.Thread(
        target=_changes, args=(scale, fleet, extra, ops, gap, events, done), daemon=True
    )
    probe.start()
    changer.start()
    storm_result = run_storm(config, fleet, [scale.agent.pid], nova_pids=[scale.nova.pid])
    # the changes are paced by gap, not by the storm: let them finish, probe included
    changer.join(ops * 2 * (gap + 60))
    done.set()
    probe.stop()
    near, far = [], []
    for at, latency, _ in probe.samples:
        if any(e["at"] - 0.1 <= at <= e["at"] + e.get("seconds", 0) + 0.5 for e in events):
            near.append(latency)
        else:
            far.append(latency)
    return {
        "storm": {
            "instances": instances,
            "routers": routers,
            "concurrency": concurrency,
            "requests": storm_result.requests,
            "good": storm_result.good,
            "errors": dict(storm_result.errors),
            "duration": storm_result.duration,
            "latency_p50": _percentile(storm_result.latencies, 50),
            "latency_p99": _percentile(storm_result.latencies, 99),
            "agent_cpu_seconds": storm_result.agent.get("cpu_seconds"),
        },
        "changes": [{k: v for k, v in e.items() if k != "at"} for e in events],
        "change_errors": [e["error"] for e in events if e.get("error")],
        "probe": {
            "requests": len(probe.samples),
            "wrong": sum(1 for _, _, ok in probe.samples if not ok),
            "near_changes": {
                "n": len(near),
                "p50": _percentile(near, 50),
                "p99": _percentile(near, 99),
                "max": max(near, default=float("nan")),
            },
            "elsewhere": {
                "n": len(far),
                "p50": _percentile(far, 50),
                "p99": _percentile(far, 99),
                "max": max(far, default=float("nan")),
            },
        },
    }


def namespaces_markdown(r: dict[str, Any]) -> str:
    ms = lambda s: f"{s * 1000:.1f} ms"  # noqa: E731
    rows = [
        (
            "namespace sockets",
            f"{r['namespaces']:,}, declared in "
            + (
                "[metaproxy] namespaces"
                if r["declare"] == "config"
                else "namespace_dir (one file each)"
            )
            + f"; in {r['socket_dir']} ({r['socket_filesystem']})",
        ),
        ("start-up until the shared socket accepts", f"{r['shared_socket_seconds']:.2f} s"),
        ("start-up until every socket file exists", f"{r['socket_files_seconds']:.2f} s"),
        (
            "start-up until every socket accepts",
            f"{r['startup_seconds']:.2f} s "
            f"(target < {r['target_startup_seconds']:.0f} s; "
            "checked by connecting to each once they "
            "all exist)",
        ),
        (
            "RSS after start-up",
            f"{r['rss_after_start_bytes'] / MIB:.1f} MiB, {r['open_fds']:,} open descriptors",
        ),
    ]
    storm = r.get("storm")
    if storm:
        probe = r["probe"]
        adds = [c for c in r["changes"] if c["action"] == "add"]
        removes = [c for c in r["changes"] if c["action"] == "remove"]
        rows += [
            (
                "storm meanwhile",
                f"{storm['instances']} boots over {storm['routers']} of the "
                f"namespaces, {storm['requests']:,} requests, "
                f"{sum(storm['errors'].values())} errors "
                f"{storm['errors'] or ''}; p50 {ms(storm['latency_p50'])}, "
                f"p99 {ms(storm['latency_p99'])}",
            ),
            ("ctl add (command's wall time)", ", ".join(f"{c['seconds']:.2f} s" for c in adds)),
            ("ctl remove", ", ".join(f"{c['seconds']:.2f} s" for c in removes)),
            ("added socket answered", ", ".join(str(c.get("answered")) for c in adds)),
            ("change errors", "; ".join(r["change_errors"]) or "0"),
            (
                "probe near a change",
                f"{probe['near_changes']['n']} requests, p50 "
                f"{ms(probe['near_changes']['p50'])}, p99 "
                f"{ms(probe['near_changes']['p99'])}, max "
                f"{ms(probe['near_changes']['max'])}",
            ),
            (
                "probe elsewhere",
                f"{probe['elsewhere']['n']} requests, p50 "
                f"{ms(probe['elsewhere']['p50'])}, p99 "
                f"{ms(probe['elsewhere']['p99'])}, max "
                f"{ms(probe['elsewhere']['max'])}; "
                f"{probe['wrong']} wrong or failed",
            ),
        ]
    return _table(f"Scale: {r['namespaces']:,} namespace sockets", rows)


# ---- output and command line -------------------------------------------------------------------


def _table(title: str, rows: Sequence[tuple[str, str]]) -> str:
    lines = [f"### {title}", "", "| figure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + "\n"


def _write(result: dict[str, Any], markdown: str, out: Path, command: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = out / f"{stamp}-scale-{result['check']}"
    json_path, md_path = Path(f"{base}.json"), Path(f"{base}.md")
    json_path.write_text(
        json.dumps(
            {"format": "metaproxy-bench-scale/1", "command": command, **result},
            indent=1,
            default=str,
        )
        + "\n"
    )
    md_path.write_text(f"`{command}`\n\n{markdown}")
    return [json_path, md_path]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_hold"]:  # the connection generator (internal)
        return _hold_main(argv[1], int(argv[2]))
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
    for sub in (conn, ns):
        sub.add_argument(
            "--workers",
            type=int,
            default=None,
            help="metadata_workers for the agent (default: unset)",
        )
        sub.add_argument("--out", type=Path, default=RESULTS)
        sub.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)
    command = "python -m bench.scale " + " ".join(argv)
    if args.command == "connections":
        result = run_connections(
            args.connections,
            hold=args.hold,
            request_timeout=args.request_timeout,
            workers=args.workers,
            keep=args.keep,
        )
        markdown = connections_markdown(result)
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
    print(markdown)
    written = _write(result, markdown, args.out, command)
    print("written: " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
