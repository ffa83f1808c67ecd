"""`make demo`: the agent end to end on the embedded default.

Starts the bundled fake Nova and `twistd metaproxy` on the demo table
(`etc/ports.json.sample`), asks for each instance's metadata through Neutron's shared
socket (with the namespace header, as haproxy sets it) and through the namespace's own
socket, adds a namespace at run time with `metaproxy ctl`, and prints what came back.
Exits non-zero if any answer is not the instance it should be.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.load.unixhttp import get
from bench.processes import start_agent, start_fakenova, write_agent_config
from metaproxy.namespace import Namespace, NamespaceKind, namespace_socket_path
from metaproxy.resolve.table import load_table

ROOT = Path(__file__).resolve().parent.parent
SECRET = "demo-shared-secret"


def namespaces_for(table) -> list[tuple[object, Namespace]]:
    """Each instance port with the namespace its metadata requests come from: a router
    attached to its network, or else the network's own (DHCP or OVN) namespace."""
    routers: dict[str, str] = {}
    for router_id, networks in table.routers.items():
        for network in networks:
            routers.setdefault(network, router_id)
    result = []
    for port in table.ports:
        if not port.device_owner.startswith("compute:") or not port.device_id:
            continue
        if port.network_id in routers:
            result.append((port, Namespace(NamespaceKind.ROUTER, routers[port.network_id])))
        else:  # no router: the network's own namespace (shown here as an OVN one)
            result.append((port, Namespace(NamespaceKind.OVN, port.network_id)))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(ROOT / "etc" / "ports.json.sample"))
    parser.add_argument("--keep", action="store_true", help="leave the run directory")
    parser.add_argument("--no-storm", action="store_true", help="skip the short boot storm")
    args = parser.parse_args(argv)

    run = Path(tempfile.mkdtemp(prefix="metaproxy-demo-", dir="/tmp"))
    table = load_table(args.table)
    pairs = namespaces_for(table)
    # one namespace is left out of the configuration and added at run time instead
    declared = sorted({ns.name for _, ns in pairs})
    late = declared.pop()
    print(f"metaproxy demo: run directory {run}")
    nova, nova_port = start_fakenova(args.table, SECRET, run / "nova")
    print(f"  fake Nova metadata API on 127.0.0.1:{nova_port} (checks signatures as Nova does)")
    state = run / "state"
    config = write_agent_config(
        run / "metadata_agent.ini",
        state_path=state,
        nova_port=nova_port,
        secret=SECRET,
        table=Path(args.table).resolve(),
        namespaces=declared,
    )
    agent = None
    failures = 0
    try:
        agent = start_agent([config], run / "agent", wait_socket=str(state / "metadata_proxy"))
        print(f"  twistd metaproxy --config-file {config}")
        print(
            f"  shared socket {state / 'metadata_proxy'}; per-namespace sockets in "
            f"{state / 'metaproxy' / 'ns'}\n"
        )
        ctl = subprocess.run(
            [
                sys.executable,
                "-m",
                "metaproxy.cli",
                "ctl",
                "--control-socket",
                str(state / "metaproxy" / "control.sock"),
                "add",
                late,
            ],
            capture_output=True,
            text=True,
        )
        print(
            f"  metaproxy ctl add {late[:20]}...: "
            f"{'ok' if ctl.returncode == 0 else ctl.stderr.strip()}\n"
        )
        failures += ctl.returncode != 0
        rows = []
        for port, namespace in pairs:
            ip = port.fixed_ips[0]
            header = [(namespace.kind.header_name, namespace.id)]
            for via, path, headers in (
                ("shared", str(state / "metadata_proxy"), header),
                (
                    "own socket",
                    namespace_socket_path(str(state / "metaproxy" / "ns"), namespace),
                    [],
                ),
            ):
                answer = get(
                    path, "/openstack/latest/meta_data.json", forwarded_for=ip, headers=headers
                )
                got = json.loads(answer.body)["uuid"] if answer.status == 200 else "-"
                ok = got == port.device_id
                failures += not ok
                user_data = get(
                    path, "/openstack/latest/user_data", forwarded_for=ip, headers=headers
                ).status
                rows.append(
                    (
                        namespace.name[:22] + "...",
                        via,
                        ip,
                        answer.status,
                        got,
                        user_data,
                        "ok" if ok else f"WRONG (want {port.device_id})",
                    )
                )
        unknown = get(
            str(state / "metadata_proxy"),
            "/openstack",
            forwarded_for="10.99.99.99",
            headers=[(pairs[0][1].kind.header_name, pairs[0][1].id)],
        )
        rows.append(
            (
                "(unknown address)",
                "shared",
                "10.99.99.99",
                unknown.status,
                "-",
                "-",
                "ok" if unknown.status == 404 else "WRONG",
            )
        )
        failures += unknown.status != 404
        widths = [max(len(str(r[i])) for r in rows + [HEADER]) for i in range(len(HEADER))]
        for row in [HEADER] + rows:
            print("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)))
        stats = json.loads(get_stats(nova_port))
        print(
            f"\n  fake Nova received {stats['total']} requests: {json.dumps(stats['by_outcome'])}"
        )
    finally:
        if agent is not None:
            agent.stop()
        nova.stop()
    if not failures and not args.no_storm:
        from bench.local_storms import short_storm

        print(
            "\nA short boot storm: 50 instances run cloud-init's ~28 requests each, 20 at a "
            "time,\nthrough the per-namespace sockets and then the shared socket "
            "(make bench runs 1,000):\n"
        )
        print(short_storm(50))
    if failures or args.keep:
        print(f"\nlogs and configuration kept in {run}")
    else:
        shutil.rmtree(run, ignore_errors=True)
    print("demo OK" if not failures else f"demo FAILED ({failures} wrong answers)")
    return 1 if failures else 0


HEADER = ("namespace", "via", "address", "status", "instance", "user_data", "check")


def get_stats(port: int) -> str:
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/_fakenova/stats", headers={"X-Fakenova-Control": "1"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return answer.read().decode()


if __name__ == "__main__":
    sys.exit(main())
