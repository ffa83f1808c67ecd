"""The ``metaproxy`` command's entry point: parse, run the subcommand, turn its
failure into one message and an exit status."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from metaproxy.cli import check_config, ctl, haproxy_config, health
from metaproxy.cli.failures import CommandFailed
from metaproxy.cli.parser import EXIT_USAGE, PROG, build_parser
from metaproxy.config import ConfigError

__all__ = ["main"]

#: The subcommands, in the order --help lists them.
SUBCOMMANDS = (
    haproxy_config.add_subcommand,
    ctl.add_subcommand,
    check_config.add_subcommand,
    health.add_subcommand,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``metaproxy`` command; return the exit status."""
    parser = build_parser(SUBCOMMANDS)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage errors (2) and --help (0)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    where = f"{PROG} {args.command}"
    try:
        return args.run(args)
    except ConfigError as e:
        print(f"{where}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CommandFailed as e:
        print(f"{where}: error: {e}", file=sys.stderr)
        return e.status
