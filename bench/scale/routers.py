# -*- test-case-name: tests.integration.test_scale -*-
"""C{python -m bench.scale routers}: metaproxy serving many router namespaces itself
(C{router_namespaces = serve}): what each router costs it, how fast it follows the
L3 agent, and what haproxy would cost instead (L{run_routers}).

In order, on one agent and one set of namespaces:

  1. the agent starts with the mode on and no router: its RSS and descriptors;
  2. one router namespace appears (the mode's one-off costs: pyroute2's import, the
     opener's thread), then all the others at once (C{ip -batch}, then the loopback up,
     as the L3 agent's C{ensure_namespace}): how long until every one is listened in,
     and the agent's RSS and descriptors then (over the first's: per router);
  3. the agent restarted with them all there (a node's restart): how long from its start
     until every one is listened in;
  4. haproxy as the L3 agent would run it, in C{haproxies} of the namespaces
     (C{metaproxy haproxy-config}, pointing at the agent's shared socket), idle: each
     daemon's RSS, private memory and threads;
  5. every namespace deleted: how long until every listener is closed, and the
     descriptors back to where they were (nothing keeps a namespace alive).

The namespaces carry a topology tag (L{bench.load.netns.Topology}) and the agent serves
only those (C{router_id_prefix}); they are plain namespaces with their loopback up: the
agent's cost does not depend on the router's ports.
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any

from bench.load.fleet import make_fleet
from bench.load.netns import Topology
from bench.load.netns_host import run_command
from bench.load.nstarget import render_haproxy_config
from bench.load.routerfront import router_mode_config
from bench.processes import start_agent
from bench.scale.agent import ScaleAgent, start_scale_agent
from bench.scale.host import memory, open_fds, raise_nofile, wait_until
from bench.scale.output import MIB, markdown_table

__all__ = ["run_routers", "routers_markdown"]

_SERVING = re.compile(r"Serving (\d+) of (\d+) router namespace\(s\) found")


def _make_namespaces(names: list[str]) -> None:
    """Add the namespaces in one C{ip -batch}, then set each one's loopback up from a
    thread that enters it (one netlink call, no process per namespace)."""
    batch = "".join(f"netns add {name}\n" for name in names)
    run_command(["ip", "-batch", "-"], input=batch.encode(), timeout=600)
    failure: list[BaseException] = []

    def up() -> None:
        from pyroute2 import IPRoute

        from metaproxy.http.netns import set_network_namespace

        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            for name in names:
                fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
                try:
                    set_network_namespace(fd)
                finally:
                    os.close(fd)
                with IPRoute() as ipr:
                    ipr.link("set", index=1, state="up")
        except BaseException as e:
            failure.append(e)
        finally:
            set_network_namespace(home)
            os.close(home)

    thread = threading.Thread(target=up)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _log_count(scale_log: str, text: str) -> int:
    return scale_log.count(text)


def _haproxy_memory(pid: int) -> dict[str, int]:
    """RSS and private memory (smaps_rollup) and threads of one haproxy."""
    figures = {"rss": 0, "private": 0, "threads": 0}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss",):
                figures["rss"] += int(rest.split()[0]) * 1024
            elif key in ("Private_Clean", "Private_Dirty"):
                figures["private"] += int(rest.split()[0]) * 1024
    figures["threads"] = len(os.listdir(f"/proc/{pid}/task"))
    return figures


def run_routers(
    count: int = 1000, *, haproxies: int = 20, workers: int | None = None, keep: bool = False
) -> dict[str, Any]:
    """The check above; its figures (see L{routers_markdown})."""
    topology = Topology()
    names = [f"qrouter-{topology.id(f'r{i}')}" for i in range(count)]
    extra_default = f"metadata_workers = {workers}\n" if workers is not None else ""
    raise_nofile(count * (1 + (workers or 1)) + 1024)
    scale: ScaleAgent | None = None
    result: dict[str, Any] = {"check": "routers", "routers": count, "metadata_workers": workers}
    try:
        scale = start_scale_agent(
            make_fleet(1, 1),
            extra_default=extra_default,
            extra_metaproxy=router_mode_config(topology) + "namespace_rescan_interval = 10\n",
        )
        topology.adopt(scale.agent.pid)
        wait_until(lambda: _SERVING.search(scale.agent.log()), 60, "the agent's first scan")
        time.sleep(1.0)  # settled
        base = memory([scale.agent.pid])
        result["rss_empty_bytes"] = base["rss_bytes"]
        result["fds_empty"] = open_fds([scale.agent.pid])
        result["processes"] = base["processes"]

        # 2. the first router (the mode's one-off costs: pyroute2's import, the opener's
        # thread), then a burst of the others while it runs
        line = "Serving router namespace qrouter-" + topology.tag
        t0 = time.monotonic()
        _make_namespaces(names[:1])
        wait_until(lambda: _log_count(scale.agent.log(), line) >= 1, 60, "the first router")
        result["first_served_seconds"] = time.monotonic() - t0
        time.sleep(1.0)
        first = memory([scale.agent.pid])
        result["rss_first_bytes"] = first["rss_bytes"]
        result["fds_first"] = open_fds([scale.agent.pid])
        t0 = time.monotonic()
        _make_namespaces(names[1:])
        made = time.monotonic()
        result["create_seconds"] = made - t0
        wait_until(lambda: _log_count(scale.agent.log(), line) >= count, 600, "every router")
        result["burst_served_seconds"] = time.monotonic() - t0
        result["burst_after_created_seconds"] = time.monotonic() - made
        time.sleep(1.0)
        after = memory([scale.agent.pid])
        result["rss_served_bytes"] = after["rss_bytes"]
        result["fds_served"] = open_fds([scale.agent.pid])
        others = max(count - 1, 1)
        result["rss_per_router_bytes"] = (after["rss_bytes"] - first["rss_bytes"]) / others
        result["fds_per_router"] = (result["fds_served"] - result["fds_first"]) / others

        # 3. restart with them all there
        scale.agent.stop()
        started = time.monotonic()
        scale.agent = start_agent([scale.config], scale.run / "agent2", wait_socket=None)
        topology.adopt(scale.agent.pid)
        wait_until(
            lambda: (m := _SERVING.search(scale.agent.log())) and int(m.group(2)) == count,
            600,
            "the restarted agent's first scan",
        )
        match = _SERVING.search(scale.agent.log())
        result["restart_serving"] = int(match.group(1))
        result["restart_startup_seconds"] = time.monotonic() - started
        time.sleep(1.0)
        result["rss_restarted_bytes"] = memory([scale.agent.pid])["rss_bytes"]
        result["fds_restarted"] = open_fds([scale.agent.pid])

        # 4. haproxy idle in some of them, as the L3 agent would run it
        samples = []
        for i, name in enumerate(names[:haproxies]):
            pidfile = topology.run_dir / "haproxy" / f"scale{i}.pid"
            text = render_haproxy_config(
                name, agent_config=scale.config, pidfile=pidfile, shared=True
            )
            conf = topology.run_dir / "haproxy" / f"scale{i}.conf"
            conf.write_text(text)
            run_command(["ip", "netns", "exec", name, "haproxy", "-f", str(conf)])
            wait_until(pidfile.exists, 10, "haproxy's pidfile")
            pid = int(pidfile.read_text().split()[0])
            topology.adopt(pid)
            samples.append(pid)
        time.sleep(1.0)
        figures = [_haproxy_memory(pid) for pid in samples]
        if figures:
            result["haproxy_count"] = len(figures)
            result["haproxy_rss_bytes"] = sum(f["rss"] for f in figures) / len(figures)
            result["haproxy_private_bytes"] = sum(f["private"] for f in figures) / len(figures)
            result["haproxy_threads"] = max(f["threads"] for f in figures)
        for pid in samples:
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass

        # 5. every router deleted
        t0 = time.monotonic()
        run_command(
            ["ip", "-batch", "-"],
            input="".join(f"netns delete {n}\n" for n in names).encode(),
            timeout=600,
        )
        gone = "Stopped serving router namespace qrouter-" + topology.tag
        wait_until(
            lambda: _log_count(scale.agent.log(), gone) >= count, 600, "every listener closed"
        )
        result["delete_closed_seconds"] = time.monotonic() - t0
        time.sleep(1.0)
        result["fds_after_delete"] = open_fds([scale.agent.pid])
        result["rss_after_delete_bytes"] = memory([scale.agent.pid])["rss_bytes"]
        if not scale.agent.alive():
            raise RuntimeError(f"the agent died:\n{scale.agent.log()[-3000:]}")
    finally:
        if scale is not None:
            scale.stop()
            if not keep:
                scale.remove()
        topology.cleanup()
    return result


def routers_markdown(result: dict[str, Any]) -> str:
    r = result
    rows = [
        ("router namespaces", f"{r['routers']:,}"),
        ("agent processes", str(r.get("processes"))),
        (
            "agent RSS: no router / one / all served / after deleting them",
            f"{r['rss_empty_bytes'] / MIB:.1f} / {r['rss_first_bytes'] / MIB:.1f} / "
            f"{r['rss_served_bytes'] / MIB:.1f} / {r['rss_after_delete_bytes'] / MIB:.1f} MiB",
        ),
        (
            "agent RSS per router after the first",
            f"{r['rss_per_router_bytes'] / 1024:.1f} KiB",
        ),
        (
            "agent descriptors: no router / one / all served / after deleting them",
            f"{r['fds_empty']} / {r['fds_first']} / {r['fds_served']} / {r['fds_after_delete']}",
        ),
        ("descriptors per router after the first", f"{r['fds_per_router']:.2f}"),
        (
            "the first router listened in, from its namespace made",
            f"{r['first_served_seconds']:.2f} s",
        ),
        (
            f"{r['routers'] - 1:,} more namespaces made at once (ip -batch, loopback up)",
            f"{r['create_seconds']:.2f} s",
        ),
        (
            "every router listened in, from the first of them made",
            f"{r['burst_served_seconds']:.2f} s ({r['burst_after_created_seconds']:.2f} s "
            "after the last was made)",
        ),
        (
            "restart with them all there: start until every router is listened in",
            f"{r['restart_startup_seconds']:.2f} s ({r['restart_serving']:,} served; "
            f"RSS {r['rss_restarted_bytes'] / MIB:.1f} MiB, {r['fds_restarted']} descriptors)",
        ),
        (
            "every namespace deleted: until every listener is closed",
            f"{r['delete_closed_seconds']:.2f} s",
        ),
    ]
    if r.get("haproxy_count"):
        rows.append(
            (
                f"haproxy instead, idle (mean of {r['haproxy_count']})",
                f"1 process and {r['haproxy_threads']} threads per router; RSS "
                f"{r['haproxy_rss_bytes'] / MIB:.1f} MiB, private "
                f"{r['haproxy_private_bytes'] / MIB:.1f} MiB each",
            )
        )
    return markdown_table("Router namespaces served by metaproxy (router_namespaces = serve)", rows)
