# -*- test-case-name: tests.integration.test_scale -*-
"""C{python -m bench.scale namespaces}: the agent's start-up with many namespace sockets,
then a storm on some of them while one more namespace is added and removed with
C{metaproxy ctl}, a probe measuring the latency near the changes (L{run_namespaces})."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.load.fleet import Fleet, make_fleet
from bench.load.storm import StormConfig, run_storm
from bench.load.unixhttp import get
from bench.scale.agent import ScaleAgent, normal_request, start_scale_agent, wait_accepting
from bench.scale.host import memory, open_fds
from bench.scale.output import MIB, markdown_table
from metaproxy.namespace import Namespace, NamespaceKind

__all__ = ["scale_namespaces", "ctl", "run_namespaces", "namespaces_markdown"]


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
                _, latency, right = normal_request(self._path, self._fleet, headers=True)
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
        result["rss_after_start_bytes"] = memory([scale.agent.pid])["rss_bytes"]
        result["open_fds"] = open_fds([scale.agent.pid])
        if storm:
            result.update(
                _storm_with_changes(scale, fleet, instances, routers, concurrency, ops, gap)
            )
        result["rss_end_bytes"] = memory([scale.agent.pid])["rss_bytes"]
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
    return markdown_table(f"Scale: {r['namespaces']:,} namespace sockets", rows)
