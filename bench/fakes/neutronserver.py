"""A fake neutron-server on a real message bus: oslo.messaging RPC servers answering the
two calls a metadata agent makes, from a port table, recording every call.

    python -m bench.fakes.neutronserver --transport-url rabbit://guest:guest@127.0.0.1:5672/ \\
        --table ports.json [--record calls.jsonl] [--delay 0]

or, in a test, C{FakeNeutronServer(url, load_ports("ports.json")).start()}.

  - Topic C{q-plugin}, version 1.0, namespace None: C{get_ports(context, filters)},
    answered as neutron-server's C{MetadataRpcCallback} answers it (the ports matching
    every filter key, L{bench.compare.upstream_launch.PortIndex}). The table is metaproxy's JSON
    format; its C{routers} map becomes router interface ports
    (L{bench.compare.upstream_launch.load_ports}), and ports come back in Neutron's shape
    (C{fixed_ips} as C{[{'subnet_id', 'ip_address'}]}, C{project_id} and C{tenant_id}).
  - Topic C{q-reports-plugin}, version 1.4: C{report_state(context, agent_state, time)},
    answered with C{"alive"}.

Both listen on the exchange C{neutron}, as neutron-server does (neutron's default
C{control_exchange}; L{metaproxy.neutron.bus.messaging_conf} builds the transport), so
metaproxy and upstream's unpatched agent reach it alike. The servers use oslo.messaging's
C{threading} executor (no eventlet). Every call is
recorded (L{Call}: method, context, arguments, whether it was a call or a cast as far as
the server can tell: a cast has no reply queue) in C{calls} and, with C{--record}, as a
JSON line in that file. C{delay} (settable while running) makes C{get_ports} wait before
answering, to play a slow neutron-server.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

import attrs

from bench.fakes.port_table import PortIndex, load_ports

__all__ = ["Call", "FakeNeutronServer", "main"]


@attrs.frozen
class Call:
    """One RPC the fake received."""

    topic: str
    method: str
    context: dict[str, Any]
    kwargs: dict[str, Any]
    #: C{True} for a call (the sender waits for the answer), C{False} for a cast.
    call: bool
    at: float

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), sort_keys=True)


def _neutron_shape(port: dict[str, Any]) -> dict[str, Any]:
    port = dict(port)
    port["fixed_ips"] = [
        {"subnet_id": f"subnet-{port['network_id']}", **ip} for ip in port["fixed_ips"]
    ]
    return port


class FakeNeutronServer:
    """See the module docstring.

    @param transport_url: the bus (e.g. L{bench.fakes.rabbitmq.RabbitMQ.transport_url}).
    @param ports: ports as L{bench.compare.upstream_launch.load_ports} returns them.
    @param record: an open text file that gets one JSON line per call, or None.
    """

    def __init__(
        self,
        transport_url: str,
        ports: list[dict[str, Any]],
        *,
        host: str = "fake-neutron-server",
        delay: float = 0.0,
        record: Any = None,
    ) -> None:
        self.transport_url = transport_url
        self.index = PortIndex(ports)
        self.host = host
        self.delay = delay
        self._record = record
        self._lock = threading.Lock()
        self.calls: list[Call] = []
        self._transport: Any = None
        self._servers: list[Any] = []

    # -- what the agent sees -----------------------------------------------------------

    def _note(self, topic: str, method: str, context: Any, kwargs: dict[str, Any]) -> None:
        call = Call(
            topic,
            method,
            dict(context or {}),
            kwargs,
            bool(getattr(_dispatching, "is_call", False)),
            time.time(),
        )
        with self._lock:
            self.calls.append(call)
            if self._record is not None:
                self._record.write(call.to_json() + "\n")
                self._record.flush()

    def get_ports(self, context: Any, filters: dict[str, Any]) -> list[dict[str, Any]]:
        self._note("q-plugin", "get_ports", context, {"filters": filters})
        if self.delay:
            time.sleep(self.delay)
        return [_neutron_shape(p) for p in self.index.select(filters)]

    def report_state(self, context: Any, **kwargs: Any) -> str:
        self._note("q-reports-plugin", "report_state", context, kwargs)
        return "alive"

    # -- recorded calls ----------------------------------------------------------------

    def calls_of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def clear(self, method: str | None = None) -> None:
        """Forget the recorded calls (of C{method} only, if given)."""
        with self._lock:
            self.calls[:] = [c for c in self.calls if method is not None and c.method != method]

    # -- running -------------------------------------------------------------------------

    def start(self) -> FakeNeutronServer:
        from metaproxy.neutron.bus import import_messaging, messaging_conf

        oslo_messaging = import_messaging()  # without eventlet's import warnings

        self._transport = oslo_messaging.get_rpc_transport(messaging_conf(), url=self.transport_url)
        server = self

        class Metadata:
            target = oslo_messaging.Target(version="1.0")

            def get_ports(self, context: Any, filters: dict[str, Any]) -> Any:
                return server.get_ports(context, filters)

        class Reports:
            target = oslo_messaging.Target(version="1.4")

            def report_state(self, context: Any, **kwargs: Any) -> Any:
                return server.report_state(context, **kwargs)

        for topic, endpoint in (("q-plugin", Metadata()), ("q-reports-plugin", Reports())):
            rpc_server = oslo_messaging.get_rpc_server(
                self._transport,
                oslo_messaging.Target(topic=topic, server=self.host),
                [endpoint],
                # no executor argument (deprecated): without eventlet's monkey-patching,
                # oslo.messaging runs the threading executor
                serializer=oslo_messaging.NoOpSerializer(),
                server_cls=_server_class(),
            )
            rpc_server.start()
            self._servers.append(rpc_server)
        return self

    def stop(self) -> None:
        servers, self._servers = self._servers, []
        for rpc_server in servers:
            rpc_server.stop()
        for rpc_server in servers:
            rpc_server.wait()
        if self._transport is not None:
            self._transport.cleanup()
            self._transport = None


#: Per dispatching thread: C{is_call}, whether the message being handled expects a reply.
_dispatching = threading.local()


def _server_class() -> Any:
    """oslo.messaging's RPC server, noting per message whether it is a call: a call
    carries a reply queue, a cast none (the endpoint itself cannot tell)."""
    from oslo_messaging.rpc.server import RPCServer

    class RecordingRPCServer(RPCServer):
        def _process_incoming(self, incoming: Any) -> Any:
            _dispatching.is_call = bool(getattr(incoming[0], "reply_q", None))
            try:
                return super()._process_incoming(incoming)
            finally:
                _dispatching.is_call = False

    return RecordingRPCServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fakes.neutronserver", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--transport-url", required=True)
    parser.add_argument("--table", required=True, help="metaproxy's JSON port table")
    parser.add_argument("--record", help="append one JSON line per call to this file")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds get_ports waits before answering"
    )
    args = parser.parse_args(argv)
    record = open(args.record, "a") if args.record else None
    server = FakeNeutronServer(
        args.transport_url, load_ports(args.table), delay=args.delay, record=record
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    server.start()
    print(f"fakeneutronserver ready: {len(server.index.ports)} ports", flush=True)
    while not stopping.wait(0.5):
        pass
    server.stop()
    print(f"fakeneutronserver stopped after {len(server.calls)} calls", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
