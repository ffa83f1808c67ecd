# -*- test-case-name: tests.integration.test_compare,tests.bench.load.test_nstarget -*-
"""C{python -m bench compare}'s own options (L{add_compare_options}) and the command
(L{compare_main}), its storm options parsed by L{bench.__main__}."""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence

from bench.compare.agents import AGENTS, HAPROXY_SUFFIX
from bench.compare.run import run_compare
from bench.load.plots import MATPLOTLIB_MISSING, matplotlib_available
from bench.options import fleet_and_config
from bench.stack import sigterm_interrupts

__all__ = ["add_compare_options", "compare_main"]


def add_compare_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("comparison")
    group.add_argument(
        "--a",
        default="metaproxy",
        choices=sorted(AGENTS),
        help="agent A, the reference of the ratios (default %(default)s)",
    )
    group.add_argument(
        "--b", default="upstream", choices=sorted(AGENTS), help="agent B (default %(default)s)"
    )
    group.add_argument(
        "--c",
        default=None,
        choices=sorted(AGENTS),
        help="a third agent, compared with A as B is (default: none)",
    )
    group.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="storms per agent, alternating A, B, A, B (default %(default)s)",
    )
    group.add_argument(
        "--upstream-workers",
        type=int,
        default=None,
        metavar="N",
        help="upstream's metadata_workers (default: upstream's own default, CPUs // 2)",
    )


def compare_main(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """C{python -m bench compare}, with the arguments parsed by L{bench.__main__}."""
    if args.rounds < 1:
        print("--rounds must be at least 1", file=sys.stderr)
        return 2
    made = fleet_and_config(args, "compare")
    if made is None:
        return 2
    fleet, config = made
    in_namespaces = [
        name
        for name in (args.a, args.b, args.c)
        if name and (name.endswith(HAPROXY_SUFFIX) or name == "metaproxy-routers")
    ]
    if in_namespaces:
        from bench.load.nstarget import missing_line

        missing = missing_line()
        if missing:
            print(
                "bench compare: "
                + missing.replace(
                    "--target haproxy",
                    "a -haproxy agent"
                    if any(n.endswith(HAPROXY_SUFFIX) for n in in_namespaces)
                    else "the metaproxy-routers agent",
                ),
                file=sys.stderr,
            )
            return 2
    secret = args.secret
    agent_secret = secret + "-but-wrong" if args.wrong_secret else None
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    command = "python -m bench " + " ".join(argv)
    third = f" and {args.c} (C)" if args.c else ""
    print(
        f"compare: {args.a} (A), {args.b} (B){third}; {fleet.describe()}; "
        f"{config.concurrency} concurrent boots; {args.rounds} storm"
        f"{'s' if args.rounds > 1 else ''} per agent, alternating",
        file=sys.stderr,
    )
    try:
        with sigterm_interrupts():  # SIGTERM cleans up as Ctrl-C does (namespaces too)
            comparison = run_compare(
                fleet,
                config,
                args.a,
                args.b,
                args.c,
                rounds=args.rounds,
                secret=secret,
                agent_secret=agent_secret,
                nova_delay=args.nova_delay,
                upstream_workers=args.upstream_workers,
                keep=args.keep,
                command=command,
                lookup=args.lookup,
            )
    except KeyboardInterrupt:
        print("bench compare: interrupted; what it started is stopped and removed", file=sys.stderr)
        return 130
    written = comparison.write(args.out, stamp)
    print(comparison.to_markdown(stamp))
    if not matplotlib_available():
        print(MATPLOTLIB_MISSING, file=sys.stderr)
    print("written: " + ", ".join(str(p) for p in written), file=sys.stderr)
    failures = comparison.metaproxy_failures(args.wrong_secret)
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0
