"""Run upstream's real ``neutron-metadata-agent`` with its port lookups answered from a table.

Executed by the Python of the upstream virtualenv (L{bench.compare.upstream} builds it), so this
file imports only the standard library and what neutron itself installs; never
metaproxy or the bench (the port table, L{bench.fakes.port_table}, is loaded by its
path)::

    <upstream venv>/bin/python -I bench/compare/upstream_launch.py --table ports.json \\
        --config-file metadata_agent.ini

Exactly one thing of upstream's is replaced: the RPC port lookup
C{neutron.agent.metadata.agent.MetadataPluginAPI.get_ports(self, context, filters)}, which
on a real node is an oslo.messaging C{call} to neutron-server's C{MetadataRpcCallback}
(whose answer is C{plugin.get_ports(context, filters=filters)}). Here it is answered from
metaproxy's JSON table (C{etc/ports.json.sample}) with the same filter semantics as
Neutron's C{get_ports}: every filter key must match (values within one key are
alternatives), C{fixed_ips} matches a port having any of the listed addresses. Everything
else (configuration, logging, the socket server, request parsing, signing, forwarding to
Nova with requests, the answer) is upstream's code, started through the
C{neutron-metadata-agent} console script's own function.

The configuration that C{bench.compare.upstream} writes has C{transport_url = fake://}
(oslo.messaging's in-process driver, so no broker is needed and none is ever dialled) and
C{[AGENT] report_interval = 0} (no state reports).

With C{--rpc} instead of C{--table} nothing is replaced: upstream asks neutron-server
(the bench's fake one, L{bench.fakes.neutronserver}) over the configured C{transport_url}
with its own RPC client, and reports its state there.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from importlib import metadata
from pathlib import Path


def _port_table():
    """L{bench.fakes.port_table}, loaded by its path: this file runs in upstream's
    interpreter, isolated from the repository (C{python -I}), where C{bench} cannot be
    imported; that module needs only the standard library."""
    path = Path(__file__).resolve().parents[1] / "fakes" / "port_table.py"
    spec = importlib.util.spec_from_file_location("metaproxy_bench_port_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_table = _port_table()
load_ports = _table.load_ports
select_ports = _table.select_ports
PortIndex = _table.PortIndex


def install(ports: list[dict]) -> None:
    """Replace upstream's RPC port lookup, and nothing else, with a table lookup."""
    from neutron.agent.metadata import agent

    index = PortIndex(ports)

    def get_ports(self, context, filters):
        return index.select(filters)

    get_ports.__qualname__ = "MetadataPluginAPI.get_ports"
    agent.MetadataPluginAPI.get_ports = get_ports


def upstream_main():
    """The function of the C{neutron-metadata-agent} console script, as installed."""
    (entry,) = metadata.entry_points(group="console_scripts", name="neutron-metadata-agent")
    return entry.load()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    lookups = parser.add_mutually_exclusive_group(required=True)
    lookups.add_argument("--table", help="metaproxy's JSON port table")
    lookups.add_argument(
        "--rpc", action="store_true", help="upstream unpatched: lookups over its transport_url"
    )
    args, agent_args = parser.parse_known_args(argv)
    if args.table:
        install(load_ports(args.table))
    entry = upstream_main()
    sys.argv = ["neutron-metadata-agent", *agent_args]
    sys.exit(entry())


if __name__ == "__main__":
    main()
