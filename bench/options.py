"""The storm's command-line options, shared by C{python -m bench storm} and C{compare}:
the fleet, the load and the run (L{storm_options}), and the fleet and storm
configuration they describe (L{fleet_and_config})."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.load.fleet import Fleet, make_fleet
from bench.load.storm import StormConfig
from bench.lookups import LOOKUPS
from bench.stack import DEFAULT_SECRET

__all__ = ["RESULTS", "storm_options", "fleet_and_config", "targets"]

#: Where results go by default: C{bench/results} (gitignored).
RESULTS = Path(__file__).resolve().parent / "results"


def targets(target: str) -> list[str]:
    """The targets C{--target} names, in the order they run (C{both}: namespaces, then
    shared)."""
    return ["namespaces", "shared"] if target == "both" else [target]


def storm_options(parser: argparse.ArgumentParser, *, target: bool = True) -> None:
    fleet = parser.add_argument_group("fleet")
    fleet.add_argument("--instances", type=int, default=1000, help="boots (default %(default)s)")
    fleet.add_argument("--routers", type=int, default=50, help="routers (default %(default)s)")
    fleet.add_argument("--networks-per-router", type=int, default=1)
    fleet.add_argument(
        "--dhcp-networks", type=int, default=0, help="DHCP (qdhcp-) namespaces besides the routers"
    )
    fleet.add_argument(
        "--ovn-networks", type=int, default=0, help="OVN (ovnmeta-) namespaces besides the routers"
    )
    fleet.add_argument("--seed", type=int, default=0, help="fleet generator seed")
    load = parser.add_argument_group("load")
    load.add_argument(
        "--concurrency",
        type=int,
        default=200,
        help="boots in progress at once (default %(default)s)",
    )
    if target:
        load.add_argument(
            "--target",
            choices=["shared", "namespaces", "both", "haproxy", "namespaces-tcp"],
            default="both",
            help="the shared socket, per-namespace sockets, both in turn, "
            "haproxy in network namespaces in front of the agent, or the agent "
            "listening in the router namespaces itself (namespaces-tcp: "
            "router_namespaces = serve, no haproxy); for the last two the "
            "instances connect from their own namespaces (root, ip, iptables, "
            "haproxy)",
        )
        load.add_argument(
            "--haproxy-socket",
            choices=["shared", "namespaces"],
            default="shared",
            help="with --target haproxy: haproxy forwards to the agent's shared "
            "socket (as Neutron's haproxy does; default) or to each "
            "namespace's own socket",
        )
    load.add_argument(
        "--keepalive",
        action="store_true",
        help="reuse a boot's connection (default: one connection per request, "
        "as haproxy's http-server-close)",
    )
    load.add_argument(
        "--ramp",
        type=float,
        default=0.0,
        help="seconds over which boots start (default 0: all at once)",
    )
    load.add_argument(
        "--workers", type=int, default=2, help="generator processes (default %(default)s)"
    )
    load.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        help="seconds per request (default %(default)s)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--out", type=Path, default=RESULTS, help="results directory (default bench/results)"
    )
    run.add_argument(
        "--nova-delay",
        type=float,
        default=0.0,
        help="the fake Nova waits this long before each answer",
    )
    run.add_argument(
        "--lookup",
        choices=sorted(LOOKUPS),
        default="table",
        help="where the agent looks instances up (default %(default)s)",
    )
    run.add_argument("--secret", default=DEFAULT_SECRET, help="metadata_proxy_shared_secret")
    run.add_argument(
        "--wrong-secret",
        action="store_true",
        help="give the agent a secret Nova does not share: every request must "
        "be reported as an error 'status 403'",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    run.add_argument("--keep", action="store_true", help="keep the run directories (logs)")


def fleet_and_config(args: argparse.Namespace, command: str) -> tuple[Fleet, StormConfig] | None:
    """The fleet and storm configuration the storm options describe, or C{None} (after
    saying why on stderr) when they are not valid. Shared by C{storm} and C{compare}."""
    if args.nova_delay < 0:
        print("--nova-delay must not be negative", file=sys.stderr)
        return None
    try:
        fleet = make_fleet(
            args.instances,
            args.routers,
            networks_per_router=args.networks_per_router,
            dhcp_networks=args.dhcp_networks,
            ovn_networks=args.ovn_networks,
            seed=args.seed,
        )
        config = StormConfig(
            instances=args.instances,
            routers=args.routers,
            concurrency=args.concurrency,
            ramp=args.ramp,
            keepalive=args.keepalive,
            workers=args.workers,
            request_timeout=args.request_timeout,
            progress=not args.no_progress,
        )
    except ValueError as e:
        print(f"bench {command}: {e}", file=sys.stderr)
        return None
    return fleet, config
