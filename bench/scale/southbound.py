"""What the OVSDB measurements share: a large Southbound fleet loaded into a real server,
and a TCP relay that counts the bytes and can cut the line.

  - L{load_fleet}: C{ports} bound Port_Binding rows over C{networks} Datapath_Binding
    rows and one Chassis, in transactions of C{batch} rows (one transaction of 100,000
    rows is a Raft log entry of tens of MB);
  - L{add_local_chassis}: a second chassis, L{LOCAL_CHASSIS}, with some of the ports
    bound to it, and one metadata localport per network (what a chassis-local copy
    holds);
  - L{churn}: C{count} ports unbound or bound again (the changes an outage misses);
  - L{Relay}: listens on 127.0.0.1, forwards each connection to the server, counts the
    bytes each way per connection; L{Relay.cut} drops every connection and refuses new
    ones until L{Relay.restore}.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol

__all__ = ["load_fleet", "add_local_chassis", "churn", "port_name", "LOCAL_CHASSIS", "Relay"]

LOCAL_CHASSIS = "local-chassis"


def port_name(i: int) -> str:
    return f"port-{i:06d}"


def _mac(i: int) -> str:
    return "fa:16:3e:%02x:%02x:%02x" % (i >> 16 & 255, i >> 8 & 255, i & 255)


def load_fleet(server: Any, ports: int, networks: int, batch: int = 5000) -> dict[str, Any]:
    """Load the fleet through C{server.transact} (an L{bench.fakes.ovnsb.SbServer} or
    L{bench.fakes.ovnsb_cluster.SbCluster}); return C{chassis} (its uuid), C{seconds}."""
    start = time.monotonic()
    ops: list[dict[str, Any]] = [
        {
            "op": "insert",
            "table": "Encap",
            "uuid-name": "encap",
            "row": {"type": "geneve", "ip": "192.0.2.1", "chassis_name": "bench-chassis"},
        },
        {
            "op": "insert",
            "table": "Chassis",
            "row": {
                "name": "bench-chassis",
                "hostname": "bench-chassis",
                "encaps": ["named-uuid", "encap"],
            },
        },
    ]
    for n in range(networks):
        ops.append(
            {
                "op": "insert",
                "table": "Datapath_Binding",
                "row": {
                    "tunnel_key": n + 1,
                    "external_ids": ["map", [["name", f"neutron-net-{n:05d}"]]],
                },
            }
        )
    results = server.transact(ops)
    chassis = results[1]["uuid"][1]
    datapaths = [r["uuid"][1] for r in results[2:]]
    for first in range(0, ports, batch):
        rows = []
        for i in range(first, min(ports, first + batch)):
            network = i % networks
            ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            rows.append(
                {
                    "op": "insert",
                    "table": "Port_Binding",
                    "row": {
                        "logical_port": port_name(i),
                        "datapath": ["uuid", datapaths[network]],
                        "tunnel_key": i // networks + 1,
                        "chassis": ["uuid", chassis],
                        "mac": f"{_mac(i)} {ip}",
                        "type": "",
                        "external_ids": [
                            "map",
                            [
                                ["neutron:device_id", f"vm-{i:06d}"],
                                ["neutron:device_owner", "compute:nova"],
                                ["neutron:project_id", f"project-{i % 97:02d}"],
                            ],
                        ],
                    },
                }
            )
        server.transact(rows)
    # a small transaction last, as a live Southbound always has: ovsdb-server keeps a
    # history of at most 100 transactions holding no more atoms than the database, and
    # a client whose last transaction is the last load batch would find it gone after
    # the first change (and get a full copy)
    server.transact(
        [
            {
                "op": "mutate",
                "table": "Chassis",
                "where": [["_uuid", "==", ["uuid", chassis]]],
                "mutations": [["external_ids", "insert", ["map", [["bench:loaded", "1"]]]]],
            }
        ]
    )
    return {"chassis": chassis, "seconds": time.monotonic() - start}


def add_local_chassis(server: Any, local: int, ports: int) -> dict[str, Any]:
    """Add to a loaded fleet of C{ports} ports one metadata localport per network and a
    second chassis, L{LOCAL_CHASSIS}, with C{local} of the ports (spread over the fleet)
    bound to it; return its uuid (C{chassis}), those ports (C{bound}) and one more port
    left for an arrival measurement (C{spare}, C{spare_index}: bind it with L{churn})."""
    results = server.transact(
        [
            {
                "op": "insert",
                "table": "Encap",
                "uuid-name": "e",
                "row": {"type": "geneve", "ip": "192.0.2.9", "chassis_name": LOCAL_CHASSIS},
            },
            {
                "op": "insert",
                "table": "Chassis",
                "row": {
                    "name": LOCAL_CHASSIS,
                    "hostname": LOCAL_CHASSIS,
                    "encaps": ["named-uuid", "e"],
                },
            },
            {"op": "select", "table": "Datapath_Binding", "where": [], "columns": ["_uuid"]},
        ]
    )
    here = results[1]["uuid"][1]
    datapaths = [row["_uuid"][1] for row in results[2]["rows"]]
    server.transact(
        [
            {
                "op": "insert",
                "table": "Port_Binding",
                "row": {
                    "logical_port": f"meta-{n:05d}",
                    "datapath": ["uuid", dp],
                    "tunnel_key": 32000,
                    "type": "localport",
                    "mac": f"fa:16:3f:00:{n >> 8:02x}:{n & 255:02x} 10.250.{n >> 8}.{n & 255}",
                    "external_ids": ["map", [["neutron:device_owner", "network:distributed"]]],
                },
            }
            for n, dp in enumerate(datapaths)
        ]
    )
    step = max(1, ports // (local + 1))
    chosen = [i * step for i in range(local + 1)]
    server.transact(
        [
            {
                "op": "update",
                "table": "Port_Binding",
                "where": [["logical_port", "==", port_name(i)]],
                "row": {"chassis": ["uuid", here]},
            }
            for i in chosen[:-1]
        ]
    )
    return {
        "spare": port_name(chosen[-1]),
        "spare_index": chosen[-1],
        "chassis": here,
        "bound": [port_name(i) for i in chosen[:-1]],
    }


def churn(
    server: Any, chassis: str, first: int, count: int, bind: bool, transactions: int = 0
) -> None:
    """Unbind (C{bind} False) or bind ports C{first} .. C{first + count - 1}, in
    C{transactions} transactions (0: one per port)."""
    value: Any = ["uuid", chassis] if bind else ["set", []]
    ports = list(range(first, first + count))
    per = max(1, -(-count // transactions)) if transactions > 0 else 1
    for at in range(0, count, per):
        server.transact(
            [
                {
                    "op": "update",
                    "table": "Port_Binding",
                    "where": [["logical_port", "==", port_name(i)]],
                    "row": {"chassis": value},
                }
                for i in ports[at : at + per]
            ]
        )


class _Pipe(Protocol):
    def __init__(self) -> None:
        self.peer: _Pipe | None = None
        self.buffer: list[bytes] = []
        self.counter: list[int] = [0]

    def dataReceived(self, data: bytes) -> None:
        self.counter[0] += len(data)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.buffer.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()


class _Connection:
    """One relayed connection: when it was accepted and the bytes each way."""

    def __init__(self, accepted: float) -> None:
        self.accepted = accepted
        self.to_server = [0]
        self.to_client = [0]
        self.client: _Pipe | None = None
        self.server: _Pipe | None = None


class Relay:
    """A TCP relay from 127.0.0.1:C{port} to C{target_port}."""

    def __init__(self, reactor: Any, target_port: int) -> None:
        self._reactor = reactor
        self._target = target_port
        self._listening: Any = None
        self.port = 0
        self.connections: list[_Connection] = []

    def start(self, port: int = 0) -> int:
        factory = Factory.forProtocol(self._accepted)
        self._listening = self._reactor.listenTCP(port, factory, interface="127.0.0.1")
        self.port = self._listening.getHost().port
        return self.port

    def _accepted(self) -> _Pipe:
        connection = _Connection(time.monotonic())
        self.connections.append(connection)
        client = _Pipe()
        client.counter = connection.to_server
        connection.client = client
        endpoint = TCP4ClientEndpoint(self._reactor, "127.0.0.1", self._target)
        factory = Factory.forProtocol(_Pipe)

        def connected(server: _Pipe) -> None:
            server.counter = connection.to_client
            server.peer, client.peer = client, server
            connection.server = server
            for data in client.buffer:
                server.transport.write(data)
            client.buffer.clear()
            if client.transport is None or not client.transport.connected:
                server.transport.loseConnection()

        def failed(_: Any) -> None:
            if client.transport is not None:
                client.transport.loseConnection()

        endpoint.connect(factory).addCallbacks(connected, failed)
        return client

    def cut(self) -> Any:
        """Drop every relayed connection; refuse new ones. Fires when no longer listening."""
        for connection in self.connections:
            for pipe in (connection.client, connection.server):
                if pipe is not None and pipe.transport is not None:
                    pipe.transport.abortConnection()
        return self._listening.stopListening()

    def restore(self) -> None:
        self.start(self.port)
