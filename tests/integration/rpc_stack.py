"""metaproxy looking up over RPC: a RabbitMQ, the fake neutron-server on it, the fake Nova
and `twistd metaproxy` with only `transport_url` pointing at the bus (lookups default to
`rpc` then, as on an operator's node). Shared by the RPC integration tests."""

from __future__ import annotations

import json
import shutil

from bench.fakes.neutronserver import FakeNeutronServer
from bench.fakes.port_table import load_ports
from bench.fakes.rabbitmq import RabbitMQ
from bench.processes import start_agent, start_fakenova, write_agent_config
from tests.integration.conftest import SECRET, TABLE, short_tmp


class RpcStack:
    """The stack on C{broker}, or on a broker of its own (stopped with the stack) when
    C{broker} is None.

    @param extra_default: lines added to C{[DEFAULT]} after C{transport_url} and C{host}.
    @param extra_sections: whole sections added to the agent's file.
    """

    def __init__(
        self,
        broker: RabbitMQ | None = None,
        *,
        namespaces: tuple[str, ...] = (),
        extra_default: str = "",
        extra_sections: str = "",
    ) -> None:
        self.root = short_tmp()
        self._own_broker = broker is None
        self.broker = broker if broker is not None else RabbitMQ.start(self.root / "rabbit")
        table = self.root / "ports.json"
        table.write_text(json.dumps(TABLE))
        self.neutron = FakeNeutronServer(self.broker.transport_url, load_ports(str(table)))
        self.neutron.start()
        self.nova, nova_port = start_fakenova(table, SECRET, self.root / "nova")
        self.state = self.root / "s"
        config = write_agent_config(
            self.root / "agent.ini",
            state_path=self.state,
            nova_port=nova_port,
            secret=SECRET,
            table=self.root / "no-table-needed.json",
            namespaces=namespaces,
            extra_default=(
                f"transport_url = {self.broker.transport_url}\nhost = agent-host-1\n"
                + extra_default
            ),
            extra_sections=extra_sections,
        )
        self.agent = start_agent([config], self.root / "agent", wait_socket=self.shared)

    @property
    def shared(self) -> str:
        return str(self.state / "metadata_proxy")

    def stderr(self) -> str:
        return (self.root / "agent" / "metaproxy.stderr").read_text(errors="replace")

    def stop(self) -> None:
        self.agent.stop()
        self.nova.stop()
        self.neutron.stop()
        if self._own_broker:
            self.broker.close()
        shutil.rmtree(self.root, ignore_errors=True)
