"""``metaproxy ctl {add,remove,list} [NAMESPACE ...]``: add, remove or list the
namespaces a running agent serves, over its control socket."""

from __future__ import annotations

import argparse
import socket
import sys

from metaproxy.cli.failures import AgentUnreachable, CommandFailed
from metaproxy.cli.parser import (
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    HelpFormatter,
    namespace_arg,
    seconds_arg,
    settings_from,
)

__all__ = ["add_subcommand", "DEFAULT_CTL_TIMEOUT"]

#: Seconds ``ctl`` waits for the agent's answer.
DEFAULT_CTL_TIMEOUT = 30.0


def add_subcommand(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config: argparse.ArgumentParser,
) -> None:
    ctl = commands.add_parser(
        "ctl",
        parents=[config],
        epilog=EXIT_CODES,
        formatter_class=HelpFormatter,
        help="add, remove or list the namespaces a running agent serves",
        description="Talk to a running agent over its control socket "
        "([metaproxy] control_socket, or --control-socket).",
    )
    ctl.add_argument(
        "--control-socket",
        metavar="PATH",
        help="the agent's control socket (default: from the configuration)",
    )
    ctl.add_argument(
        "--timeout",
        type=seconds_arg,
        default=DEFAULT_CTL_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the agent (default {DEFAULT_CTL_TIMEOUT:g})",
    )
    ctl.add_argument("action", choices=("add", "remove", "list"))
    ctl.add_argument("namespaces", nargs="*", type=namespace_arg, metavar="NAMESPACE")
    ctl.set_defaults(run=_ctl, parser=ctl)


def _ask(path: str, line: str, timeout: float) -> list[str]:
    """Send one command line to the control socket; the reply's lines after ``ok``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        try:
            conn.connect(path)
        except (OSError, ValueError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise AgentUnreachable(
                f"cannot connect to the control socket {path}: {reason}. Is the agent "
                "running, and is this its [metaproxy] control_socket "
                "(see --control-socket, --config-file)?"
            ) from None
        chunks = []
        try:
            conn.sendall(line.encode("ascii"))
            # Read to EOF; no shutdown(SHUT_WR): the agent may still be working on the
            # command when it would see our end-of-file.
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            raise CommandFailed(
                f"no answer from the agent on {path} within {timeout:g} s", EXIT_FAILED
            ) from None
        except OSError as e:
            raise CommandFailed(
                f"lost the connection to the agent on {path}: {e}", EXIT_FAILED
            ) from None
    lines = b"".join(chunks).decode("utf-8", "replace").splitlines()
    if not lines:
        raise CommandFailed(
            f"the agent on {path} closed the connection without an answer", EXIT_FAILED
        )
    status, rest = lines[0], lines[1:]
    if status == "ok":
        return rest
    if status.startswith("error:"):
        raise CommandFailed(
            status[len("error:") :].strip() or "the agent answered an error", EXIT_FAILED
        )
    raise CommandFailed(f"unexpected answer from {path}: {status!r}", EXIT_FAILED)


def _ctl(args: argparse.Namespace) -> int:
    if args.action == "list" and args.namespaces:
        raise CommandFailed("'list' takes no NAMESPACE", EXIT_USAGE)
    if args.action != "list" and not args.namespaces:
        raise CommandFailed(f"'{args.action}' needs at least one NAMESPACE", EXIT_USAGE)
    path = args.control_socket
    if path is None:
        path = settings_from(args).control_socket
        if not path:
            raise CommandFailed(
                "the configuration sets no [metaproxy] control_socket; pass --control-socket PATH",
                EXIT_USAGE,
            )
    if args.action == "list":
        for name in _ask(path, "list\n", args.timeout):
            print(name)
        return EXIT_OK
    status = EXIT_OK
    for namespace in args.namespaces:
        try:
            _ask(path, f"{args.action} {namespace.name}\n", args.timeout)
        except AgentUnreachable:
            raise
        except CommandFailed as e:
            print(f"{PROG} ctl: {args.action} {namespace.name}: {e}", file=sys.stderr)
            status = e.status
    return status
