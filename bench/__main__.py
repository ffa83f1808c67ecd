"""The bench's command line: C{python -m bench storm ...} and C{python -m bench compare ...}.

    python -m bench storm [--instances 1000] [--routers 50] [--concurrency 200]
                          [--target shared|namespaces|both|haproxy|namespaces-tcp]
                          [--haproxy-socket shared|namespaces] [--keepalive] [--ramp 0]
                          [--workers 2] [--out bench/results] [--nova-delay 0]
                          [--secret S] [--wrong-secret] ...
    python -m bench compare --a metaproxy --b upstream [--c metaproxy-namespaces]
                            [--rounds 2] [--upstream-workers N]
                            [the storm's options but --target]

For each target it writes the fleet's table, starts the fake Nova and C{twistd metaproxy}
with L{bench.processes} (a fresh pair per target, so figures do not carry over), runs the
storm (L{bench.load.storm.run_storm}), prints the Markdown table and writes
C{<out>/<timestamp>-<target>.json}, C{.md}, C{.png} (with matplotlib) and
C{<out>/latest.md}.

C{--target haproxy} puts real haproxy in network namespaces in front of the agent
(L{bench.load.nstarget}, as root with C{ip}, C{iptables} and C{haproxy}): the namespaces are
built after the agent starts and removed after the storm, on Ctrl-C and SIGTERM too.
C{--target namespaces-tcp} builds the same router namespaces without haproxy, and the
agent (C{router_namespaces = serve}) listens in them itself (L{bench.load.routerfront}).

Exit status: 0 when every request was right; 1 otherwise. With C{--wrong-secret} the
agent signs with a secret Nova does not share, so every request must come back as an
error of kind C{status 403} (Nova's 403, relayed): 0 when that is so, 1 otherwise.

C{compare} is L{bench.compare}: the same storm against two agents (C{metaproxy},
C{metaproxy-namespaces}, C{upstream}) in one run, alternating A and B, with ratios.

The pieces live beside it: the options (L{bench.options}), the stack a storm runs
against (L{bench.stack}), the storms on it (L{bench.local_storms}).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence

from bench.compare.cli import add_compare_options, compare_main
from bench.load.plots import MATPLOTLIB_MISSING, matplotlib_available
from bench.local_storms import run_local_storms, write_results
from bench.options import fleet_and_config, storm_options, targets

__all__ = ["main"]


def _storm(args: argparse.Namespace, argv: Sequence[str]) -> int:
    made = fleet_and_config(args, "storm")
    if made is None:
        return 2
    fleet, config = made
    if args.target in ("haproxy", "namespaces-tcp"):
        from bench.load.nstarget import missing_line

        missing = missing_line()
        if missing:
            print(
                f"bench storm: {missing.replace('--target haproxy', f'--target {args.target}')}",
                file=sys.stderr,
            )
            return 2
    agent_secret = args.secret + "-but-wrong" if args.wrong_secret else None
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    print(
        f"boot storm: {fleet.describe()}; {config.concurrency} concurrent boots; "
        f"targets {', '.join(targets(args.target))}; lookups: {args.lookup}",
        file=sys.stderr,
    )
    try:
        results = run_local_storms(
            fleet,
            config,
            targets(args.target),
            secret=args.secret,
            agent_secret=agent_secret,
            nova_delay=args.nova_delay,
            keep=args.keep,
            lookup=args.lookup,
            haproxy_socket=args.haproxy_socket,
        )
    except KeyboardInterrupt:
        print("bench storm: interrupted; what it started is stopped and removed", file=sys.stderr)
        return 130
    command = "python -m bench " + " ".join(argv)
    written = write_results(results, args.out, stamp, command)
    for result in results:
        print(result.to_markdown())
    if not matplotlib_available():
        print(MATPLOTLIB_MISSING, file=sys.stderr)
    print("written: " + ", ".join(str(p) for p in written), file=sys.stderr)

    failed = False
    for result in results:
        if args.wrong_secret:
            if result.good or result.errors != {"status 403": result.requests}:
                print(
                    f"{result.target}: with the wrong secret every request must be an error "
                    f"'status 403'; got {result.good} good and {result.errors}",
                    file=sys.stderr,
                )
                failed = True
        elif result.error_count or result.boots_failed:
            print(
                f"{result.target}: {result.error_count} errors, {result.boots_failed} boots failed",
                file=sys.stderr,
            )
            failed = True
    return 1 if failed else 0


def _compare(args: argparse.Namespace, argv: Sequence[str]) -> int:
    return compare_main(args, argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="metaproxy's benchmark: boot storms."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    storm = commands.add_parser(
        "storm",
        help="run the boot storm against metaproxy",
        description="Boot storm: N instances run cloud-init's metadata sequence against metaproxy.",
    )
    storm_options(storm)
    compare = commands.add_parser(
        "compare",
        help="the same storm against two agents, alternating, with ratios",
        description="The same boot storm against two agents (three with --c) in one run "
        "(one fleet, one fake Nova), rounds alternating A, B, A, B, then the "
        "figures side by side with the ratios B / A (and C / A). Agents: "
        "metaproxy (shared socket), "
        "metaproxy-namespaces (per-namespace sockets), upstream (upstream's "
        "neutron-metadata-agent, installed into its own virtualenv the first "
        "time). Exit status 0 when every metaproxy request was right; "
        "upstream's errors are results, not failures.",
    )
    add_compare_options(compare)
    storm_options(compare, target=False)
    args = parser.parse_args(argv)
    if args.command == "storm":
        return _storm(args, argv)
    return _compare(args, argv)


if __name__ == "__main__":
    sys.exit(main())
