"""metaproxy's OVSDB client against the C{ovs} library's IDL, on the same large
Southbound database: memory, initial synchronisation, CPU per update.

    python -m bench.scale.ovsdb_clients [--ports 100000] [--networks 1000]
                                        [--transactions 2000] [--rows-per 5]
                                        [--clients metaproxy,index,ovs-pypi,ovs-debian]

One standalone Southbound C{ovsdb-server} is loaded with C{--ports} bound Port_Binding
rows; the clients connect to a listener configured in its C{Connection} table with
C{--inactivity-probe} (a client that cannot answer the server's probe in time, busy
with a large update, is disconnected and starts over). Each client runs in a process of
its own (this module's C{_child}), monitors the OVN backend's columns with its
conditions (L{metaproxy.resolve.ovn.SB_COLUMNS}, L{SB_CONDITIONS}) over TCP, and
reports:

  - RSS after its imports, after the synchronisation and at its peak (C{VmHWM});
  - the initial synchronisation: seconds from connecting to the copy being complete,
    and its CPU seconds;
  - CPU per row update: after the synchronisation this process makes
    C{--transactions} transactions of C{--rows-per} Port_Binding rows each (their
    C{external_ids} rewritten with one value changed), then a marker; the client's CPU
    seconds from its synchronisation to the marker, divided by the rows updated.

The clients: C{metaproxy} (L{OvsdbMonitor} and its row store, no index),
C{index} (the OVN backend: the monitor and the lookup index, what the agent runs),
C{ovs-pypi} (C{ovs.db.idl.Idl} from the C{ovs} package on PyPI as pip installs it: its
JSON parser in Python unless the C extension was built), C{ovs-debian} (the same IDL
from Debian's C{python3-openvswitch}, with the C JSON parser, when installed: the
package's directory is put first on the child's C{sys.path}). A client that is not
installed is reported as such.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.options import RESULTS
from bench.scale.output import MIB, markdown_table, publish
from bench.scale.selfusage import cpu_seconds

__all__ = ["main"]

DEBIAN_OVS = Path("/usr/lib/python3/dist-packages/ovs")
MARKER = "bench-done"


def _rss() -> dict[str, int]:
    status = Path("/proc/self/status").read_text()
    values = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def _say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "cpu": cpu_seconds(), "at": time.monotonic(), **fields}))
    sys.stdout.flush()


# the children


def _child_metaproxy(remote: str, with_index: bool) -> None:
    from twisted.internet import reactor

    from metaproxy.ovsdb.monitor import OvsdbMonitor
    from metaproxy.ovsdb.remote import parse_remotes
    from metaproxy.resolve.ovn import DATABASE, SB_COLUMNS, SB_CONDITIONS, OvnBackend

    _say("imported", **_rss())
    state = {"rows": 0, "notifications": 0}

    monitors: list[Any] = []

    def done() -> None:
        _say(
            "done",
            updates=state["rows"],
            notifications=state["notifications"],
            connections=monitors[0].syncs,
            **_rss(),
        )
        reactor.stop()

    def factory(**callbacks: Any) -> OvsdbMonitor:
        on_sync, on_changes = callbacks["on_sync"], callbacks["on_changes"]

        def synced(store: Any) -> None:
            on_sync(store)
            _say("synced", rows=len(store.tables["Port_Binding"]), **_rss())

        def changed(changes: Any) -> None:
            on_changes(changes)
            state["notifications"] += 1
            state["rows"] += sum(1 for c in changes if c.table == "Port_Binding")
            if any(
                c.table == "Chassis" and (c.new or {}).get("hostname") == MARKER for c in changes
            ):
                done()

        callbacks.update(on_sync=synced, on_changes=changed)
        monitor = OvsdbMonitor(
            reactor,
            parse_remotes(remote),
            DATABASE,
            SB_COLUMNS,
            conditions=SB_CONDITIONS,
            timeout=600,
            probe_interval=0,
            **callbacks,
        )
        monitors.append(monitor)
        return monitor

    if with_index:
        client: Any = OvnBackend(reactor, (), monitor_factory=factory)
    else:
        client = factory(on_sync=lambda store: None, on_changes=lambda changes: None)
    _say("connecting")
    client.start()
    reactor.run()


def _child_ovs(remote: str, schema: str) -> None:
    import ovs.db.idl
    import ovs.json
    import ovs.poller

    from metaproxy.resolve.ovn import SB_COLUMNS, SB_CONDITIONS

    _say("imported", parser=ovs.json.PARSER, module=ovs.__file__, **_rss())
    helper = ovs.db.idl.SchemaHelper(location=schema)
    for table, columns in SB_COLUMNS.items():
        helper.register_columns(table, columns)
    _say("connecting")
    idl = ovs.db.idl.Idl(remote, helper, leader_only=False)
    for table, condition in SB_CONDITIONS.items():
        idl.cond_change(table, condition)
    synced = False
    seqno = idl.change_seqno
    sessions, connections = None, 0
    while True:
        idl.run()
        session = idl._session  # its seqno changes at each connect and disconnect
        if session.is_connected() and session.get_seqno() != sessions:
            sessions = session.get_seqno()
            connections += 1
        if idl.change_seqno != seqno:
            seqno = idl.change_seqno
            if not synced and idl.has_ever_connected():
                synced = True
                _say("synced", rows=len(idl.tables["Port_Binding"].rows), **_rss())
            elif synced and any(
                row.hostname == MARKER for row in idl.tables["Chassis"].rows.values()
            ):
                _say("done", connections=connections, **_rss())
                return
        poller = ovs.poller.Poller()
        idl.wait(poller)
        poller.block()


def child_main(argv: Sequence[str]) -> int:
    kind, remote = argv[0], argv[1]
    if kind in ("metaproxy", "index"):
        _child_metaproxy(remote, with_index=kind == "index")
    else:
        _child_ovs(remote, argv[2])
    return 0


# the parent


def _start_child(kind: str, remote: str, schema: str, run_dir: Path) -> subprocess.Popen[str] | str:
    env = dict(os.environ)
    if kind == "ovs-debian":
        if not any(DEBIAN_OVS.glob("_json*.so")):
            return "Debian's python3-openvswitch (with the C JSON parser) is not installed"
        shim = run_dir / "debian-ovs"
        shim.mkdir(exist_ok=True)
        link = shim / "ovs"
        if not link.exists():
            link.symlink_to(DEBIAN_OVS)
        env["PYTHONPATH"] = os.pathsep.join([str(shim), env.get("PYTHONPATH", "")])
    if kind.startswith("ovs"):
        probe = subprocess.run(
            [sys.executable, "-c", "import ovs.db.idl"], env=env, capture_output=True
        )
        if probe.returncode != 0:
            return "the ovs package is not installed (pip install ovs)"
    args = [sys.executable, "-m", "bench.scale.ovsdb_clients", "_child", kind, remote, schema]
    env["PYTHONWARNINGS"] = "ignore"
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )


def _read_event(child: subprocess.Popen[str], want: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    assert child.stdout is not None
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            raise RuntimeError(f"the client exited ({child.poll()}) before {want}")
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == want:
            return event
    raise RuntimeError(f"no {want} within {timeout} s")


def measure_client(
    kind: str,
    server: Any,
    remote: str,
    run_dir: Path,
    transactions: int,
    rows_per: int,
    ports: int,
) -> dict[str, Any]:
    from bench.fakes.ovnsb import find_schema
    from bench.scale.southbound import port_name

    marker = {
        "op": "update",
        "table": "Chassis",
        "where": [["name", "==", "bench-chassis"]],
        "row": {"hostname": "bench-chassis"},
    }
    server.transact([marker])  # not the marker yet (the last client left it)
    child = _start_child(kind, remote, str(find_schema()), run_dir)
    if isinstance(child, str):
        return {"client": kind, "skipped": child}
    try:
        imported = _read_event(child, "imported", 60)
        connecting = _read_event(child, "connecting", 60)
        synced = _read_event(child, "synced", 3600)
        start = time.monotonic()
        n = 0
        for t in range(transactions):
            ops = []
            for _ in range(rows_per):
                i = n * 7919 % ports
                external = [
                    ["bench:n", f"{kind}-{t}"],
                    ["neutron:device_id", f"vm-{i:06d}"],
                    ["neutron:device_owner", "compute:nova"],
                    ["neutron:project_id", f"project-{i % 97:02d}"],
                ]
                ops.append(
                    {
                        "op": "update",
                        "table": "Port_Binding",
                        "where": [["logical_port", "==", port_name(i)]],
                        "row": {"external_ids": ["map", external]},
                    }
                )
                n += 1
            server.transact(ops)
        server.transact([{**marker, "row": {"hostname": MARKER}}])
        generated = time.monotonic() - start
        done = _read_event(child, "done", 3600)
        child.wait(60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    updates = transactions * rows_per
    return {
        "client": kind,
        "parser": imported.get("parser", ""),
        "rss_imported": imported["VmRSS"],
        "rss_synced": synced["VmRSS"],
        "rss_peak": done["VmHWM"],
        "rows": synced["rows"],
        "connections": done.get("connections"),
        "sync_seconds": synced["at"] - connecting["at"],
        "sync_cpu_seconds": synced["cpu"] - connecting["cpu"],
        "updates": updates,
        "updates_seen": done.get("updates"),
        "notifications": done.get("notifications"),
        "update_cpu_seconds": done["cpu"] - synced["cpu"],
        "cpu_us_per_update": (done["cpu"] - synced["cpu"]) / updates * 1e6,
        "generator_seconds": generated,
    }


def clients_markdown(result: dict[str, Any]) -> str:
    rows = [
        ("Port_Binding rows (bound) / networks", f"{result['ports']:,} / {result['networks']:,}"),
        ("the server's inactivity probe", f"{result['inactivity_probe_ms']:,} ms"),
        (
            "updates after the sync",
            f"{result['transactions']:,} transactions x {result['rows_per']} rows",
        ),
    ]
    for r in result["clients"]:
        name = r["client"]
        if "skipped" in r:
            rows.append((name, f"not measured: {r['skipped']}"))
            continue
        parser = f", JSON parser {r['parser']}" if r.get("parser") else ""
        if r.get("connections", 1) != 1:
            parser += f", {r['connections']} connections (disconnected by the server)"
        rows.append(
            (
                name,
                f"RSS {r['rss_imported'] / MIB:.0f} MiB imported, {r['rss_synced'] / MIB:.0f} MiB "
                f"synced, {r['rss_peak'] / MIB:.0f} MiB peak; sync {r['sync_seconds']:.1f} s "
                f"(CPU {r['sync_cpu_seconds']:.1f} s); {r['cpu_us_per_update']:.0f} us CPU per "
                f"row update{parser}",
            )
        )
    return markdown_table("OVSDB clients on one Southbound database", rows)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_child"]:
        return child_main(argv[1:])
    # not imported by the children, whose RSS after their imports is measured
    from bench.scale.sbfixture import cannot_run, fleet_parser, private_server
    from bench.scale.southbound import load_fleet

    parser = fleet_parser("python -m bench.scale.ovsdb_clients")
    parser.add_argument("--transactions", type=int, default=2000)
    parser.add_argument("--rows-per", type=int, default=5)
    parser.add_argument("--clients", default="metaproxy,index,ovs-pypi,ovs-debian")
    parser.add_argument(
        "--inactivity-probe",
        type=int,
        default=180_000,
        help="the server's probe of silent clients, ms (default %(default)s; ovsdb-server's "
        "own default, 5000, disconnects a client busy for longer)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if cannot_run():
        return 2
    result: dict[str, Any] = {
        "check": "ovsdb-clients",
        "ports": args.ports,
        "networks": args.networks,
        "transactions": args.transactions,
        "rows_per": args.rows_per,
        "inactivity_probe_ms": args.inactivity_probe,
        "clients": [],
    }
    with private_server("mp-ovsdb-clients-") as (run_dir, server):
        result["load_seconds"] = load_fleet(server, args.ports, args.networks)["seconds"]
        remote = f"tcp:127.0.0.1:{server.add_listener(args.inactivity_probe)}"
        for kind in args.clients.split(","):
            measured = measure_client(
                kind, server, remote, run_dir, args.transactions, args.rows_per, args.ports
            )
            result["clients"].append(measured)
            print(json.dumps(measured), file=sys.stderr)
    markdown = clients_markdown(result)
    publish(result, markdown, args.out, parser.prog, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
