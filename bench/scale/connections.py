# -*- test-case-name: tests.integration.test_scale -*-
"""C{python -m bench.scale connections}: the agent's memory while it holds many
partial-request connections, and whether it still answers a normal request meanwhile
(L{run_connections})."""

from __future__ import annotations

import time
from typing import Any

from bench.load.fleet import make_fleet
from bench.load.procstat import PeakRSS
from bench.scale.agent import normal_request, start_scale_agent
from bench.scale.holder import PARTIAL_REQUEST, hold_connections
from bench.scale.host import memory, nofile_limit, open_fds, raise_nofile, wait_until
from bench.scale.output import MIB, markdown_table

__all__ = ["run_connections", "connections_markdown"]


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
        _, idle_latency, idle_right = normal_request(scale.shared, fleet)
        before = memory(pids)
        fds_before = open_fds(pids)
        with PeakRSS(pids) as peak, hold_connections(scale.shared, connections) as held:
            accepted = wait_until(
                lambda: open_fds(pids) >= fds_before + connections,
                120,
                "the agent accepting every connection",
            )
            time.sleep(hold)
            held_memory = memory(pids)
            answer, latency, right = normal_request(scale.shared, fleet)
            if not scale.agent.alive():
                raise RuntimeError(f"the agent died:\n{scale.agent.log()[-3000:]}")
        released = wait_until(
            lambda: open_fds(pids) <= fds_before + 5,
            120,
            "the agent closing the released connections",
        )
        after = memory(pids)
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
    return markdown_table(f"Scale: {r['connections']:,} held connections", rows)
