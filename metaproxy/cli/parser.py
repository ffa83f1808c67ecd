"""The ``metaproxy`` command line: the top-level parser, the options every subcommand
shares, the value types, and the exit statuses every subcommand keeps to.

Each subcommand's module adds its own parser (L{SubcommandAdder}); L{build_parser}
puts them under the top-level one in the order given, which is the order ``--help``
lists them in.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Callable, Iterable

from metaproxy.config import Settings, default_settings, load_settings
from metaproxy.namespace import InvalidNamespace, Namespace

__all__ = [
    "PROG",
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_CODES",
    "HelpFormatter",
    "SubcommandAdder",
    "build_parser",
    "namespace_arg",
    "rate_arg",
    "port_arg",
    "seconds_arg",
    "settings_from",
]

PROG = "metaproxy"

#: Success.
EXIT_OK = 0
#: The agent or a dependency cannot be reached, answered an error, or is unhealthy.
EXIT_FAILED = 1
#: Bad arguments, or a configuration that cannot be loaded or lacks what is needed.
EXIT_USAGE = 2

#: The exit statuses, as --help and docs/operations.md show them.
EXIT_CODES = f"""\
exit status (the same in every command):
  {EXIT_OK}  success (ctl: done; check-config: configuration OK; health: healthy)
  {EXIT_FAILED}  the agent or what it depends on cannot be reached, does not answer in
     time, answered an error, or is unhealthy (health); may pass by itself
  {EXIT_USAGE}  the command cannot run as given: bad arguments, or a configuration that
     cannot be loaded or lacks what the command needs (check-config: the
     configuration is refused); fix the command line or the files"""

#: Adds one subcommand to the subparsers, with the shared configuration options as a
#: parent parser; sets C{run} (a function of the parsed arguments returning the exit
#: status) as a default.
SubcommandAdder = Callable[
    ["argparse._SubParsersAction[argparse.ArgumentParser]", argparse.ArgumentParser], None
]


class HelpFormatter(argparse.HelpFormatter):
    """Wraps the descriptions, keeps the exit status table's lines as they are."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text is EXIT_CODES:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def namespace_arg(value: str) -> Namespace:
    try:
        return Namespace.parse(value)
    except InvalidNamespace as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def rate_arg(value: str) -> tuple[int, int]:
    """``N/SECONDS`` → (N, SECONDS), both >= 1."""
    count, sep, seconds = value.partition("/")
    try:
        if not sep:
            raise ValueError
        n, window = int(count), int(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not N/SECONDS (e.g. 10/10: more than 10 requests in 10 s → 429)"
        ) from None
    if n < 1 or window < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: both N and SECONDS must be >= 1")
    return n, window


def port_arg(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a TCP port (1-65535)")
    return port


def seconds_arg(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return seconds


def _version() -> str:
    """The installed distribution's version, as pip and the package index know it."""
    try:
        return importlib.metadata.version("metaproxy")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (the metaproxy package is not installed: pip install it)"


def _config_options() -> argparse.ArgumentParser:
    """--config-file and --config-dir, the parent parser of every subcommand."""
    config = argparse.ArgumentParser(add_help=False)
    group = config.add_argument_group("configuration")
    group.add_argument(
        "--config-file",
        dest="config_files",
        action="append",
        default=[],
        metavar="FILE",
        help="a configuration file (repeatable, later files win), as for the agent",
    )
    group.add_argument(
        "--config-dir",
        dest="config_dirs",
        action="append",
        default=[],
        metavar="DIR",
        help="a directory of *.conf files read after the files (repeatable)",
    )
    return config


def build_parser(subcommands: Iterable[SubcommandAdder]) -> argparse.ArgumentParser:
    """The ``metaproxy`` parser with ``subcommands`` added in order."""
    config = _config_options()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="metaproxy: the Neutron metadata agent replacement's command-line tools.",
        epilog=EXIT_CODES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {_version()}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in subcommands:
        add(commands, config)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings from --config-file/--config-dir; with neither, the defaults.

    With no file, load_settings' checks would only fail on things these commands do
    not use (the default lookup table file, say), so the defaults are taken as they are.
    """
    if not args.config_files and not args.config_dirs:
        return default_settings()
    return load_settings(list(args.config_files), list(args.config_dirs))
