"""A real C{ovsdb-server} on the OVN Southbound schema, for the bench and the tests.

    server = SbServer.start(run_dir)               # punix: and ptcp: (and pssl: if given)
    server.transact([{"op": "insert", ...}])       # a blocking OVSDB transaction
    server.load_table(json.load(open("ports.json")))   # the fleet's table as SB rows
    server.restart(); server.stop()

The schema is not installed with Open vSwitch: it comes with Debian's C{ovn-central}
package. L{find_schema} looks in C{$METAPROXY_OVN_SB_SCHEMA},
C{/usr/share/ovn/ovn-sb.ovsschema} and C{~/.cache/metaproxy/ovn} (where C{.ci/run}
unpacks the package with C{apt-get download ovn-central} and C{dpkg -x}, without
installing it or starting OVN's services). L{missing} says, in one line, what is not
there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from metaproxy.ovsdb.framing import JsonSplitter
from metaproxy.resolve.base import ROUTER_INTERFACE_OWNERS

__all__ = [
    "SCHEMA_CACHE",
    "find_schema",
    "missing",
    "SbServer",
    "call",
    "table_to_operations",
    "free_port",
    "program",
]

DATABASE = "OVN_Southbound"
SCHEMA_CACHE = Path.home() / ".cache" / "metaproxy" / "ovn"
_SCHEMA_PATHS = (
    Path("/usr/share/ovn/ovn-sb.ovsschema"),
    SCHEMA_CACHE / "root" / "usr" / "share" / "ovn" / "ovn-sb.ovsschema",
)


def find_schema() -> Path | None:
    """The OVN Southbound schema file, or None."""
    env = os.environ.get("METAPROXY_OVN_SB_SCHEMA")
    for path in ([Path(env)] if env else []) + list(_SCHEMA_PATHS):
        if path.is_file():
            return path
    return None


def program(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )


def missing() -> str | None:
    """One line naming what is missing to run an OVN Southbound server, or None."""
    for name in ("ovsdb-server", "ovsdb-tool"):
        if program(name) is None:
            return f"{name} not found (Debian package openvswitch-common)"
    if find_schema() is None:
        return (
            "OVN Southbound schema not found (ovn-sb.ovsschema from Debian's ovn-central: "
            f"apt-get download ovn-central && dpkg -x ovn-central_*.deb {SCHEMA_CACHE}/root)"
        )
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SbServer:
    """An C{ovsdb-server} process serving a fresh OVN Southbound database in C{run_dir}.

    @ivar unix_path: its C{punix:} socket; C{tcp_port} its C{ptcp:} port on 127.0.0.1;
        C{ssl_port} its C{pssl:} port when started with C{tls}.
    """

    def __init__(self, run_dir: Path, tls: Mapping[str, str] | None = None) -> None:
        self.run_dir = run_dir
        self.db_path = run_dir / "ovnsb.db"
        self.unix_path = str(run_dir / "sb.sock")
        self.tcp_port = free_port()
        self.ssl_port = free_port() if tls else 0
        self._tls = dict(tls or {})
        self._popen: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, run_dir: Path, tls: Mapping[str, str] | None = None) -> SbServer:
        """Create the database and start the server.

        @param tls: C{private_key}, C{certificate}, C{ca_cert} paths: also listen on
            C{pssl:}.
        @raise RuntimeError: L{missing} is not None, or the server did not start.
        """
        problem = missing()
        if problem:
            raise RuntimeError(problem)
        run_dir.mkdir(parents=True, exist_ok=True)
        server = cls(run_dir, tls)
        subprocess.run(
            [program("ovsdb-tool"), "create", str(server.db_path), str(find_schema())],
            check=True,
            capture_output=True,
        )
        server._spawn()
        return server

    @property
    def pid(self) -> int:
        return self._popen.pid if self._popen is not None else 0

    def remote(self, kind: str) -> str:
        """The connection string of C{unix}, C{tcp} or C{ssl}."""
        if kind == "unix":
            return f"unix:{self.unix_path}"
        return f"{kind}:127.0.0.1:{self.tcp_port if kind == 'tcp' else self.ssl_port}"

    def _spawn(self) -> None:
        args = [
            program("ovsdb-server"),
            str(self.db_path),
            "--no-chdir",
            f"--remote=punix:{self.unix_path}",
            f"--remote=ptcp:{self.tcp_port}:127.0.0.1",
            f"--remote=db:{DATABASE},SB_Global,connections",
            f"--unixctl={self.run_dir / 'ovsdb-server.ctl'}",
            f"--log-file={self.run_dir / 'ovsdb-server.log'}",
            "-vconsole:off",
        ]
        if self._tls:
            args += [
                f"--remote=pssl:{self.ssl_port}:127.0.0.1",
                f"--private-key={self._tls['private_key']}",
                f"--certificate={self._tls['certificate']}",
                f"--ca-cert={self._tls['ca_cert']}",
            ]
        self._popen = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                raise RuntimeError(
                    f"ovsdb-server exited with {self._popen.returncode}: {self.log()[-2000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.tcp_port), 0.5):
                    pass
                if os.path.exists(self.unix_path):
                    return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"ovsdb-server did not listen within 15 s: {self.log()[-2000:]}")

    def log(self) -> str:
        try:
            return (self.run_dir / "ovsdb-server.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        popen, self._popen = self._popen, None
        if popen is not None and popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()

    def restart(self) -> None:
        """Stop and start again on the same database and addresses."""
        self.stop()
        self._spawn()

    def transact(self, operations: Iterable[Mapping[str, Any]], timeout: float = 60.0) -> list[Any]:
        """Run one transaction over the Unix socket; return its results.

        @raise RuntimeError: the server reported an error for an operation.
        """
        results = call(self.unix_path, "transact", [DATABASE, *operations], timeout)
        errors = [r for r in results if isinstance(r, dict) and "error" in r]
        if errors:
            raise RuntimeError(f"transact failed: {errors}")
        return results

    def add_listener(self, inactivity_probe_ms: int) -> int:
        """Listen on one more TCP port, configured as deployments do it: a C{Connection}
        row of C{SB_Global} with its C{inactivity_probe} (the server probes silent
        clients every 5 s on a command-line remote); return the port once it listens."""
        port = free_port()
        self.transact(
            [
                {
                    "op": "insert",
                    "table": "Connection",
                    "uuid-name": "listener",
                    "row": {
                        "target": f"ptcp:{port}:127.0.0.1",
                        "inactivity_probe": inactivity_probe_ms,
                    },
                },
                {
                    "op": "insert",
                    "table": "SB_Global",
                    "row": {"connections": ["named-uuid", "listener"]},
                },
            ]
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.5):
                    return port
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"ovsdb-server did not listen on {port} within 15 s")

    def load_table(self, table: Mapping[str, Any], chassis: str = "bench-chassis") -> int:
        """Insert a metaproxy port table (L{metaproxy.resolve.table}'s format) as
        Southbound rows; return how many Port_Binding rows were inserted."""
        operations = table_to_operations(table, chassis)
        self.transact(operations)
        return sum(1 for op in operations if op["table"] == "Port_Binding")


def call(unix_path: str, method: str, params: list[Any], timeout: float = 60.0) -> Any:
    """One JSON-RPC request to the server at C{unix_path}; its result.

    @raise RuntimeError: the server answered with an error, or closed the connection.
    """
    request = {"method": method, "params": params, "id": 1}
    splitter = JsonSplitter()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(unix_path)
        s.sendall(json.dumps(request).encode())
        while True:
            data = s.recv(1 << 16)
            if not data:
                raise RuntimeError(f"ovsdb-server closed the connection mid-{method}")
            for raw in splitter.feed(data):
                message = json.loads(raw)
                if message.get("id") != 1:
                    continue
                if message.get("error") is not None:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                return message["result"]


def _map(pairs: Mapping[str, str]) -> list[Any]:
    return ["map", sorted(pairs.items())]


def table_to_operations(
    table: Mapping[str, Any], chassis: str = "bench-chassis"
) -> list[dict[str, Any]]:
    """The Southbound rows a port table describes, as C{insert} operations.

    One Chassis (with its Encap) binds every port that is not a router interface; a
    Datapath_Binding per network (C{external_ids:name = neutron-<network>}); a
    Port_Binding per port (C{mac = "MAC IP..."}, the C{neutron:*} external ids); and a
    router interface Port_Binding (type C{patch}, unbound) per entry of the table's
    C{routers} map, as Neutron would have created it.
    """
    ops: list[dict[str, Any]] = [
        {
            "op": "insert",
            "table": "Encap",
            "uuid-name": "encap",
            "row": {"type": "geneve", "ip": "192.0.2.1", "chassis_name": chassis},
        },
        {
            "op": "insert",
            "table": "Chassis",
            "uuid-name": "chassis",
            "row": {"name": chassis, "hostname": chassis, "encaps": ["named-uuid", "encap"]},
        },
    ]
    ports = list(table.get("ports", []))
    for router, networks in table.get("routers", {}).items():
        for i, network in enumerate(networks):
            ports.append(
                {
                    "id": f"rif-{router}-{i}",
                    "network_id": network,
                    "mac_address": "fa:16:3e:ff:ff:%02x" % (i % 256),
                    "fixed_ips": [],
                    "device_id": router,
                    "project_id": "",
                    "device_owner": ROUTER_INTERFACE_OWNERS[0],
                }
            )
    datapaths: dict[str, str] = {}
    keys: dict[str, int] = {}
    for port in ports:
        network = port["network_id"]
        if network not in datapaths:
            datapaths[network] = f"dp{len(datapaths)}"
            ops.append(
                {
                    "op": "insert",
                    "table": "Datapath_Binding",
                    "uuid-name": datapaths[network],
                    "row": {
                        "tunnel_key": len(datapaths),
                        "external_ids": _map({"name": f"neutron-{network}"}),
                    },
                }
            )
        keys[network] = keys.get(network, 0) + 1
        owner = port.get("device_owner", "")
        router_port = owner in ROUTER_INTERFACE_OWNERS
        external = {
            "neutron:device_id": port.get("device_id", ""),
            "neutron:project_id": port.get("project_id", ""),
            "neutron:device_owner": owner,
        }
        row: dict[str, Any] = {
            "logical_port": port.get("id") or f"port-{len(keys)}-{keys[network]}",
            "datapath": ["named-uuid", datapaths[network]],
            "tunnel_key": keys[network],
            "mac": " ".join([port["mac_address"], *port.get("fixed_ips", [])]),
            "external_ids": _map(external),
        }
        if router_port:
            row["type"] = "patch"
        else:
            row["chassis"] = ["named-uuid", "chassis"]
        ops.append({"op": "insert", "table": "Port_Binding", "row": row})
    return ops
