# -*- test-case-name: tests.bench.load.test_storm,tests.integration.test_storm_run -*-
"""The boot-storm load generator: many instances running cloud-init's metadata sequence.

    fleet = make_fleet(1000, 50)
    config = StormConfig(instances=1000, routers=50, concurrency=200,
                         target="shared", shared_socket="/tmp/x/metadata_proxy")
    result = run_storm(config, fleet, agent_pids=[agent.pid])   # a report.StormResult

Each boot replays L{bench.load.cloudinit.boot_sequence} for one instance of the fleet
(about 28 requests), one connection per request as haproxy's C{option http-server-close}
makes them (or, with C{keepalive}, one connection per boot reused while the agent keeps
it open). Boots start all at once or spread linearly over C{ramp} seconds; at most
C{concurrency} run at a time. The work is split over C{workers} processes
(C{multiprocessing}, spawn; L{bench.load.storm_worker}), each running an asyncio loop over
its share of the boots and of the concurrency, and streaming compact per-request records
(arrays) and its own CPU time to the parent, which prints a progress line to stderr once
a second and builds the result.

Requests go to a target (L{bench.load.targets}): Neutron's shared socket, one socket per
namespace, or real haproxy in network namespaces (L{bench.load.nstarget}).

Every answer is checked against the instance it belongs to
(L{bench.load.checks.check_answer}) and counted under one of
L{bench.load.checks.KINDS}: C{ok}, or an error. A status cloud-init does not accept ends
the boot (its C{BootFailed}), as does an error without an answer (refused, timeout, bad
HTTP): v1 does not retry, where cloud-init would retry (503 with Retry-After, timeouts)
and haproxy would retry a refused connection (C{retries 3}). A wrong answer cloud-init
would accept (another instance's uuid, wrong user data) is an error and the boot goes on.
"""

from __future__ import annotations

import collections
import datetime
import json
import multiprocessing
import os
import queue as queue_module
import sys
import time
import urllib.request
from array import array
from collections.abc import Sequence
from typing import Any

import attrs

from bench.load.checks import BOOT_CLEAN, BOOT_FAILED, OK, framing_name, kind_name
from bench.load.fleet import Fleet
from bench.load.procstat import PeakRSS, host_cpu_times, tree_cpu_seconds
from bench.load.report import HOST_SATURATED, SATURATED, StormResult
from bench.load.storm_worker import WorkerSpec, cpu_seconds, worker_main
from bench.load.targets import NamespaceSockets, SharedSocket, Target

__all__ = ["TARGET_KINDS", "StormConfig", "run_storm", "nova_stats"]

# ---- configuration

#: C{haproxy} (L{bench.load.nstarget}) and C{namespaces-tcp} (L{bench.load.routerfront})
#: need a built topology: it is given to L{run_storm}.
TARGET_KINDS = ("shared", "namespaces", "haproxy", "namespaces-tcp")


@attrs.frozen
class StormConfig:
    """How to run a storm.

    @ivar instances: boots to run: the first C{instances} instances of the fleet.
    @ivar routers: the fleet's router count (checked against the fleet).
    @ivar concurrency: most boots in progress at once, over all workers.
    @ivar ramp: seconds over which boot starts are spread evenly (0: all at once).
    @ivar keepalive: reuse a boot's connection while the agent keeps it open.
    @ivar target: C{shared} or C{namespaces}: which socket(s) of L{shared_socket} and
        L{namespace_socket_dir}; ignored when L{run_storm} is given a target, which
        C{haproxy} needs (L{bench.load.nstarget.start_haproxy_front}).
    @ivar workers: generator processes.
    @ivar request_timeout: seconds for one request, connecting included.
    @ivar nova_url: the fake Nova's base URL (C{http://127.0.0.1:PORT}) for its counters.
    @ivar progress: print a progress line to stderr once a second.
    @ivar label: what is measured, for the report (C{metaproxy}, ...).
    """

    instances: int
    routers: int
    concurrency: int = 200
    ramp: float = 0.0
    keepalive: bool = False
    target: str = "shared"
    shared_socket: str | None = None
    namespace_socket_dir: str | None = None
    workers: int = 2
    request_timeout: float = 30.0
    nova_url: str | None = None
    progress: bool = False
    label: str = "metaproxy"

    def __attrs_post_init__(self) -> None:
        if self.instances < 1 or self.concurrency < 1 or self.workers < 1:
            raise ValueError("instances, concurrency and workers must be at least 1")
        if self.ramp < 0 or self.request_timeout <= 0:
            raise ValueError("ramp must be >= 0 and request_timeout > 0")
        if self.target not in TARGET_KINDS:
            raise ValueError(f"target must be one of {', '.join(TARGET_KINDS)}")

    def make_target(self) -> Target:
        if self.target == "shared":
            if not self.shared_socket:
                raise ValueError("target 'shared' needs shared_socket")
            return SharedSocket(self.shared_socket)
        if self.target == "haproxy":
            raise ValueError(
                "target 'haproxy' needs its namespaces built: pass "
                "bench.load.nstarget.start_haproxy_front(...).target to run_storm"
            )
        if self.target == "namespaces-tcp":
            raise ValueError(
                "target 'namespaces-tcp' needs its namespaces built: pass "
                "bench.load.routerfront.start_router_front(...).target to run_storm"
            )
        if not self.namespace_socket_dir:
            raise ValueError("target 'namespaces' needs namespace_socket_dir")
        return NamespaceSockets(self.namespace_socket_dir)


# ---- the parent: start workers, collect, measure, build the result


def nova_stats(nova_url: str, timeout: float = 10.0) -> dict[str, Any]:
    """The fake Nova's C{/_fakenova/stats}."""
    request = urllib.request.Request(
        nova_url.rstrip("/") + "/_fakenova/stats", headers={"X-Fakenova-Control": "1"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def _stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    def diff(key: str) -> dict[str, int]:
        a, b = before.get(key) or {}, after.get(key) or {}
        return {
            k: b.get(k, 0) - a.get(k, 0)
            for k in sorted(set(a) | set(b))
            if b.get(k, 0) - a.get(k, 0)
        }

    return {
        "total": after.get("total", 0) - before.get("total", 0),
        "by_status": diff("by_status"),
        "by_outcome": diff("by_outcome"),
    }


class _Collector:
    """The parent's side: merges the workers' batches."""

    def __init__(self, boots: int, workers: int) -> None:
        self.boots = boots
        self.r_boot, self.r_latency = array("i"), array("d")
        self.r_status, self.r_kind, self.r_flags = array("h"), array("b"), array("b")
        self.b_boot, self.b_start, self.b_end = array("i"), array("d"), array("d")
        self.b_requests, self.b_outcome = array("i"), array("b")
        self.b_kind, self.b_status = array("b"), array("h")
        self.connections = 0
        self.worker_cpu = [0.0] * workers
        self.errors = 0

    def add(self, worker: int, payload: tuple) -> None:
        (
            r_boot,
            r_latency,
            r_status,
            r_kind,
            r_flags,
            b_boot,
            b_start,
            b_end,
            b_requests,
            b_outcome,
            b_kind,
            b_status,
            connections,
            cpu,
        ) = payload
        self.r_boot += r_boot
        self.r_latency += r_latency
        self.r_status += r_status
        self.r_kind += r_kind
        self.r_flags += r_flags
        self.b_boot += b_boot
        self.b_start += b_start
        self.b_end += b_end
        self.b_requests += b_requests
        self.b_outcome += b_outcome
        self.b_kind += b_kind
        self.b_status += b_status
        self.connections += connections
        self.worker_cpu[worker] = cpu
        self.errors += sum(1 for k in r_kind if k != OK)

    def progress(self, label: str, elapsed: float, last: tuple[float, int]) -> str:
        done = len(self.r_kind)
        span = elapsed - last[0]
        rate = (done - last[1]) / span if span > 0 else 0.0
        busy = ", ".join(f"{cpu / elapsed:.0%}" if elapsed > 0 else "-" for cpu in self.worker_cpu)
        return (
            f"[storm {label}] {elapsed:6.1f} s  {done:,} requests  {rate:,.0f}/s  "
            f"boots {len(self.b_boot):,}/{self.boots:,}  errors {self.errors:,}  "
            f"generator CPU {busy}"
        )


def run_storm(
    config: StormConfig,
    fleet: Fleet,
    agent_pids: Sequence[int],
    *,
    target: Target | None = None,
    nova_pids: Sequence[int] = (),
    proxy_pids: Sequence[int] = (),
    label: str | None = None,
) -> StormResult:
    """Run one storm and measure it.

    @param agent_pids: the agent's processes (their descendants are found and included)
        for CPU time and peak RSS; may be empty (no agent figures).
    @param target: where requests go; default C{config.make_target()}. Any L{Target}
        works, e.g. an upstream agent's socket: C{SharedSocket(path)}.
    @param nova_pids: the fake Nova's processes, for its CPU time.
    @param proxy_pids: the namespace proxies in front of the agent (haproxy, one per
        namespace), for their CPU time and RSS: with the agent's, the node's cost.
    @raise ValueError: the config does not match the fleet.
    @raise RuntimeError: a generator process failed.
    """
    if config.instances > len(fleet.instances):
        raise ValueError(f"the fleet has {len(fleet.instances)} instances, not {config.instances}")
    if config.routers != fleet.routers:
        raise ValueError(f"the fleet has {fleet.routers} routers, not {config.routers}")
    target = target if target is not None else config.make_target()
    label = label or config.label
    instances = fleet.instances[: config.instances]
    workers = min(config.workers, len(instances))
    concurrency = min(config.concurrency, len(instances))
    boots = list(enumerate(instances))
    specs = []
    for w in range(workers):
        share = concurrency // workers + (1 if w < concurrency % workers else 0)
        specs.append(
            WorkerSpec(
                index=w,
                target=target,
                boots=tuple(boots[w::workers]),
                total_boots=len(boots),
                concurrency=max(1, share),
                ramp=config.ramp,
                keepalive=config.keepalive,
                request_timeout=config.request_timeout,
            )
        )

    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    go = context.Event()
    t0 = context.Value("d", 0.0, lock=False)
    processes = [
        context.Process(
            target=worker_main,
            args=(spec, out, go, t0),
            name=f"storm-worker-{spec.index}",
            daemon=True,
        )
        for spec in specs
    ]
    for process in processes:
        process.start()
    collector = _Collector(len(boots), workers)
    sampler: PeakRSS | None = None
    proxy_sampler: PeakRSS | None = None
    try:
        _wait_ready(out, processes)
        nova_before = nova_stats(config.nova_url) if config.nova_url else None
        agent_cpu0 = tree_cpu_seconds(agent_pids) if agent_pids else None
        nova_cpu0 = tree_cpu_seconds(nova_pids) if nova_pids else None
        proxy_cpu0 = tree_cpu_seconds(proxy_pids) if proxy_pids else None
        proxy_sampler = PeakRSS(proxy_pids, interval=0.5).start() if proxy_pids else None
        host0 = host_cpu_times()
        collector_cpu0 = cpu_seconds()
        sampler = PeakRSS(agent_pids).start() if agent_pids else None
        started = datetime.datetime.now(datetime.UTC)
        t0.value = time.monotonic() + 0.02
        go.set()
        worker_cpu = _collect(
            out, processes, collector, config.progress, f"{label} {target.name}", t0.value
        )
        wall = time.monotonic() - t0.value
        peak = sampler.stop() if sampler is not None else None
        agent_cpu = tree_cpu_seconds(agent_pids) - agent_cpu0 if agent_cpu0 is not None else None
        nova_cpu = tree_cpu_seconds(nova_pids) - nova_cpu0 if nova_cpu0 is not None else None
        proxy_cpu = tree_cpu_seconds(proxy_pids) - proxy_cpu0 if proxy_cpu0 is not None else None
        proxy_peak = proxy_sampler.stop() if proxy_sampler is not None else None
        host1 = host_cpu_times()
        collector_cpu = cpu_seconds() - collector_cpu0
        nova_after = nova_stats(config.nova_url) if config.nova_url else None
    finally:
        if sampler is not None:
            sampler.stop()
        if proxy_sampler is not None:
            proxy_sampler.stop()
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)
        out.close()

    return _result(
        config,
        fleet,
        target,
        label,
        collector,
        started,
        wall,
        worker_cpu,
        collector_cpu,
        agent_pids,
        agent_cpu,
        sampler,
        peak,
        nova_before,
        nova_after,
        nova_cpu,
        host0,
        host1,
        workers,
        concurrency,
        _proxies(proxy_pids, proxy_cpu, proxy_peak, proxy_sampler),
    )


def _proxies(
    pids: Sequence[int], cpu: float | None, peak: int | None, sampler: PeakRSS | None
) -> dict[str, Any] | None:
    """The proxies' figures for the result, or None without proxies."""
    if not pids:
        return None
    return {
        "name": "haproxy",
        "count": len(pids),
        "processes": sampler.max_processes if sampler is not None else len(pids),
        "cpu_seconds": None if cpu is None else round(cpu, 3),
        "peak_rss_bytes": peak,
    }


def _wait_ready(out: Any, processes: list, timeout: float = 120.0) -> None:
    ready = 0
    deadline = time.monotonic() + timeout
    while ready < len(processes):
        try:
            kind, index, detail = out.get(timeout=0.2)
        except queue_module.Empty:
            _check_alive(processes)
            if time.monotonic() > deadline:
                raise RuntimeError(f"generator processes not ready after {timeout} s") from None
            continue
        if kind == "error":
            raise RuntimeError(f"generator process {index} failed:\n{detail}")
        ready += kind == "ready"


def _check_alive(processes: list) -> None:
    for process in processes:
        if process.exitcode not in (None, 0):
            raise RuntimeError(f"generator process {process.name} exited with {process.exitcode}")


def _collect(
    out: Any, processes: list, collector: _Collector, progress: bool, label: str, t0: float
) -> list[float]:
    done: dict[int, float] = {}
    next_line = t0 + 1.0
    last = (0.0, 0)
    while len(done) < len(processes):
        try:
            kind, index, detail = out.get(timeout=0.2)
        except queue_module.Empty:
            kind = ""
            _check_alive([p for i, p in enumerate(processes) if i not in done])
        if kind == "batch":
            collector.add(index, detail)
        elif kind == "done":
            done[index] = detail
        elif kind == "error":
            raise RuntimeError(f"generator process {index} failed:\n{detail}")
        now = time.monotonic()
        if progress and now >= next_line:
            elapsed = now - t0
            print(collector.progress(label, elapsed, last), file=sys.stderr, flush=True)
            last = (elapsed, len(collector.r_kind))
            next_line += 1.0
    return [done[i] for i in range(len(processes))]


def _result(
    config: StormConfig,
    fleet: Fleet,
    target: Target,
    label: str,
    c: _Collector,
    started: datetime.datetime,
    wall: float,
    worker_cpu: list[float],
    collector_cpu: float,
    agent_pids: Sequence[int],
    agent_cpu: float | None,
    sampler: PeakRSS | None,
    peak: int | None,
    nova_before: dict | None,
    nova_after: dict | None,
    nova_cpu: float | None,
    host0: tuple[float, float],
    host1: tuple[float, float],
    workers: int,
    concurrency: int,
    proxies: dict[str, Any] | None = None,
) -> StormResult:
    errors: collections.Counter[str] = collections.Counter()
    for kind, status in zip(c.r_kind, c.r_status, strict=False):
        if kind != OK:
            errors[kind_name(kind, status)] += 1
    nonstandard = collections.Counter(framing_name(flags) for flags in c.r_flags if flags)
    boot_failures: collections.Counter[str] = collections.Counter()
    boot_times, lengths = [], [0] * c.boots
    completed = clean = 0
    for boot, start, end, requests, outcome, kind, status in zip(
        c.b_boot, c.b_start, c.b_end, c.b_requests, c.b_outcome, c.b_kind, c.b_status, strict=False
    ):
        lengths[boot] = requests
        if outcome == BOOT_FAILED:
            boot_failures[kind_name(kind, status)] += 1
        else:
            completed += 1
            clean += outcome == BOOT_CLEAN
            boot_times.append(round(end - start, 6))
    duration = max(c.b_end) if len(c.b_end) else wall
    busy = [cpu / duration if duration > 0 else 0.0 for cpu in worker_cpu]
    host_busy = (host1[0] - host0[0]) / (host1[1] - host0[1]) if host1[1] > host0[1] else 0.0
    notes = []
    if max(busy, default=0) >= SATURATED:
        notes.append(
            f"the generator was saturated (a worker used {max(busy):.0%} of a core): "
            "the figures are a floor, not the agent's limit; add --workers or cores"
        )
    if host_busy >= HOST_SATURATED:
        notes.append(
            f"the host's CPUs were {host_busy:.0%} busy: the agent, the fake Nova and "
            "the generator shared them, so the figures are a floor for a node whose "
            "CPUs serve the agent alone"
        )
    if sum(boot_failures.values()):
        notes.append(
            "v1 does not retry: a boot ends at its first failure, where cloud-init "
            "would retry (503 with Retry-After, timeouts) and haproxy would retry "
            "a refused connection"
        )
    settings = {
        "instances": config.instances,
        "routers": fleet.routers,
        "fleet": fleet.describe()
        if config.instances == len(fleet.instances)
        else f"{config.instances} of {fleet.describe()}",
        "namespaces": len({i.namespace for i in fleet.instances[: config.instances]}),
        "seed": fleet.seed,
        "concurrency": concurrency,
        "ramp": config.ramp,
        "keepalive": config.keepalive,
        "workers": workers,
        "request_timeout": config.request_timeout,
        "target_description": target.describe(),
    }
    nova = None
    if nova_before is not None and nova_after is not None:
        nova = _stats_delta(nova_before, nova_after)
        nova["cpu_seconds"] = nova_cpu
    elif nova_cpu is not None:
        nova = {"cpu_seconds": nova_cpu}
    return StormResult(
        label=label,
        target=target.name,
        settings=settings,
        started=started.isoformat(timespec="seconds"),
        duration=round(duration, 6),
        requests=len(c.r_kind),
        good=sum(1 for k in c.r_kind if k == OK),
        connections=c.connections,
        errors=dict(errors),
        nonstandard=dict(nonstandard),
        boots=len(c.b_boot),
        boots_completed=completed,
        boots_clean=clean,
        boot_failures=dict(boot_failures),
        latencies=[round(v, 6) for v in c.r_latency if v >= 0],
        boot_times=boot_times,
        boot_lengths=lengths,
        generator={
            "workers": workers,
            "cpu_seconds": [round(v, 3) for v in worker_cpu],
            "busy": [round(v, 3) for v in busy],
            "collector_cpu_seconds": round(collector_cpu, 3),
        },
        agent={
            "pids": list(agent_pids),
            "processes": sampler.max_processes if sampler is not None else 0,
            "cpu_seconds": None if agent_cpu is None else round(agent_cpu, 3),
            "peak_rss_bytes": peak,
            "peak_hwm_bytes": sampler.peak_hwm_bytes if sampler is not None else None,
        },
        nova=nova,
        proxies=proxies,
        host={"cpus": os.cpu_count(), "busy": round(host_busy, 3)},
        notes=notes,
    )
