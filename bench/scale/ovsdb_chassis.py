"""The chassis agent's own Southbound copy on a large Southbound: its rows, the time to
be ready, its RSS, and the provisioning plan's cost per state change.

    python -m bench.scale.ovsdb_chassis [--ports 100000] [--networks 1000] [--local 50]
        [--code DIR]

The Southbound is the one of L{bench.scale.ovsdb_local} (a one-member cluster, C{--ports}
bound ports over C{--networks} networks, one metadata localport each, C{--local} ports
bound to C{local-chassis}). A local Open_vSwitch database (an C{ovsdb-server} of its
own, no switch) names the chassis and holds the bridge with one interface per local
port (its C{iface-id}). Then, in a process of its own, a L{ChassisAgent} starts and the
figures are taken once it is L{ready<ChassisAgent.ready>}: the Southbound rows it holds,
the seconds from start, the RSS after and at peak, the seconds of one
L{plan_networks} on its copy (what every state change costs the provisioning), and the
seconds from binding one more port here to its row being in a ready copy.

C{--code DIR} runs the agent of the C{metaproxy} package in C{DIR} (for example
C{git archive main metaproxy | tar -x -C DIR}): the same measurement before a change.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.task import deferLater

from bench.options import RESULTS
from bench.scale.child import measure_in_child, ready_then_wait, send_figures
from bench.scale.onreactor import run_once
from bench.scale.output import markdown_table, publish
from bench.scale.sbfixture import cannot_run, fleet_parser, private_cluster
from bench.scale.selfusage import peak_rss_mib, rss_mib
from bench.scale.southbound import LOCAL_CHASSIS, add_local_chassis, churn, load_fleet

__all__ = ["main"]

VSWITCH_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
REPO = Path(__file__).resolve().parents[2]


class LocalOvs:
    """An Open_vSwitch database served by an C{ovsdb-server} of its own (no switch)."""

    def __init__(self, run_dir: Path) -> None:
        self.db = run_dir / "conf.db"
        self.socket = run_dir / "db.sock"
        subprocess.run(["ovsdb-tool", "create", str(self.db), str(VSWITCH_SCHEMA)], check=True)
        self._popen = subprocess.Popen(
            [
                "ovsdb-server",
                str(self.db),
                f"--remote=punix:{self.socket}",
                f"--unixctl={run_dir / 'ovsdb.ctl'}",
                "--no-chdir",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            if self.socket.exists():
                return
            time.sleep(0.05)
        raise RuntimeError("the local ovsdb-server did not start")

    @property
    def remote(self) -> str:
        return f"unix:{self.socket}"

    def fill(self, iface_ids: Sequence[str]) -> None:
        """The Open_vSwitch row naming the chassis, and br-int with one interface per
        C{iface_ids}."""
        ops: list[dict[str, Any]] = [
            {
                "op": "insert",
                "table": "Open_vSwitch",
                "row": {
                    "external_ids": [
                        "map",
                        [["system-id", LOCAL_CHASSIS], ["ovn-bridge", "br-int"]],
                    ],
                    "bridges": ["named-uuid", "br"],
                },
            },
            {
                "op": "insert",
                "table": "Bridge",
                "uuid-name": "br",
                "row": {
                    "name": "br-int",
                    "ports": ["set", [["named-uuid", f"p{i}"] for i in range(len(iface_ids))]],
                },
            },
        ]
        for i, iface_id in enumerate(iface_ids):
            name = f"tap{i:011d}"
            ops += [
                {
                    "op": "insert",
                    "table": "Interface",
                    "uuid-name": f"i{i}",
                    "row": {"name": name, "external_ids": ["map", [["iface-id", iface_id]]]},
                },
                {
                    "op": "insert",
                    "table": "Port",
                    "uuid-name": f"p{i}",
                    "row": {"name": name, "interfaces": ["named-uuid", f"i{i}"]},
                },
            ]
        out = subprocess.run(
            ["ovsdb-client", "transact", self.remote, json.dumps(["Open_vSwitch", *ops])],
            check=True,
            capture_output=True,
            text=True,
        )
        if '"error"' in out.stdout:
            raise RuntimeError(f"filling the local Open_vSwitch failed: {out.stdout[:500]}")

    def stop(self) -> None:
        self._popen.terminate()
        self._popen.wait(10)


def measure(ovs_remote: str, sb_remote: str, spare: str) -> dict[str, Any]:
    """In this process: a chassis agent gets ready; its figures."""
    import metaproxy
    from metaproxy.chassis.agent import ChassisAgent
    from metaproxy.chassis.plan import plan_networks
    from metaproxy.ovsdb.remote import parse_remotes

    out: dict[str, Any] = {"code": str(Path(metaproxy.__file__).parent)}

    async def run(reactor: Any) -> None:
        start = time.monotonic()
        agent = ChassisAgent(
            reactor,
            parse_remotes(ovs_remote),
            parse_remotes(sb_remote),
            sb_timeout=300,
            probe_interval=0,
        )
        agent.start()
        while not agent.ready:
            await deferLater(reactor, 0.005, lambda: None)
        out["seconds"] = time.monotonic() - start
        tables = agent.sb_tables
        out["rows"] = {table: len(rows) for table, rows in tables.items()}
        out["rss_mib"] = rss_mib()
        out["peak_rss_mib"] = peak_rss_mib()
        began, rounds = time.perf_counter(), 20
        for _ in range(rounds):
            plans = plan_networks(tables, LOCAL_CHASSIS)
        out["plan_seconds"] = (time.perf_counter() - began) / rounds
        out["networks_planned"] = len(plans)
        ready_then_wait()  # the parent binds the spare port here
        bound = time.monotonic()
        while not (
            agent.ready
            and any(
                row.get("logical_port") == spare
                and _chassis_uuid(agent.sb_tables) in row.get("chassis", ())
                for row in agent.sb_tables.get("Port_Binding", {}).values()
            )
        ):
            await deferLater(reactor, 0.001, lambda: None)
        out["arrival_seconds"] = time.monotonic() - bound
        await agent.stop()

    run_once(run)
    return out


def _chassis_uuid(tables: Any) -> str | None:
    for uuid, row in tables.get("Chassis", {}).items():
        if row.get("name") == LOCAL_CHASSIS:
            return uuid
    return None


def _child(ovs_remote: str, sb_remote: str, spare: str, code: Path | None, bind: Any) -> Any:
    env = None
    cwd = None
    if code is not None:
        # the package in DIR first (the current directory leads sys.path), the bench here
        cwd = str(code)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return measure_in_child(
        "bench.scale.ovsdb_chassis",
        ["--measure", "--ovs", ovs_remote, "--sb", sb_remote, "--spare", spare],
        on_ready=bind,
        cwd=cwd,
        env=env,
    )


def chassis_markdown(result: dict[str, Any]) -> str:
    r = result["agent"]
    rows = [
        ("Port_Binding rows cloud-wide", f"{result['ports'] + result['networks']:,}"),
        ("bound here / networks", f"{result['bound_here']} / {result['networks']}"),
        ("code", r["code"]),
        ("agent's Southbound rows", f"{sum(r['rows'].values()):,} ({r['rows']})"),
        ("start to ready", f"{r['seconds']:.2f} s"),
        ("RSS after / peak", f"{r['rss_mib']:.0f} / {r['peak_rss_mib']:.0f} MiB"),
        (
            "plan_networks per state change",
            f"{r['plan_seconds'] * 1000:.2f} ms ({r['networks_planned']} networks)",
        ),
        ("a port bound here in the ready copy after", f"{r['arrival_seconds'] * 1000:.0f} ms"),
    ]
    return markdown_table("Chassis agent: its own Southbound copy", rows)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = fleet_parser("python -m bench.scale.ovsdb_chassis")
    parser.add_argument("--local", type=int, default=50)
    parser.add_argument("--code", type=Path, help="the directory holding the metaproxy to run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ovs", help=argparse.SUPPRESS)
    parser.add_argument("--sb", help=argparse.SUPPRESS)
    parser.add_argument("--spare", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        send_figures(measure(args.ovs, args.sb, args.spare))
        return 0
    if cannot_run(
        None if VSWITCH_SCHEMA.exists() else f"no {VSWITCH_SCHEMA} (the openvswitch package)"
    ):
        return 2
    result: dict[str, Any] = {
        "check": "ovsdb-chassis",
        "ports": args.ports,
        "networks": args.networks,
        "bound_here": args.local,
    }
    with private_cluster("mp-ovsdb-chassis-", size=1) as (run_dir, cluster):
        result["load_seconds"] = load_fleet(cluster, args.ports, args.networks)["seconds"]
        prepared = add_local_chassis(cluster, args.local, args.ports)
        (run_dir / "ovs").mkdir()
        ovs = LocalOvs(run_dir / "ovs")
        try:
            ovs.fill(prepared["bound"])

            def bind_spare() -> None:
                churn(cluster, prepared["chassis"], prepared["spare_index"], 1, bind=True)

            result["agent"] = _child(
                ovs.remote, cluster.remotes(), prepared["spare"], args.code, bind_spare
            )
        finally:
            ovs.stop()
    markdown = chassis_markdown(result)
    publish(result, markdown, args.out, parser.prog, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
