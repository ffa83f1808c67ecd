"""The ``metaproxy`` command: haproxy configuration, the control client, config checks.

``metaproxy haproxy-config NAMESPACE``
    print the haproxy configuration for one namespace proxy, forwarding to that
    namespace's own socket (or, with ``--shared``, to Neutron's shared socket).
``metaproxy ctl {add,remove,list} [NAMESPACE ...]``
    add, remove or list the namespaces a running agent serves, over its control socket.
``metaproxy check-config``
    load the configuration and print the values that matter, or what is wrong with it.
``metaproxy health``
    ask a running agent's ``/healthz`` (on ``[metaproxy] metrics_listen``); exit 0 when
    healthy, 1 when not or when the agent cannot be asked (for the init system).
``metaproxy --version``
    print the installed package's version.

``python -m metaproxy`` is the same command.

Every subcommand exits with the same status for the same situation (L{EXIT_CODES}, in
``--help`` and the README): 0 success; 1 the agent (or what it depends on) cannot be
reached, does not answer, answers an error or is unhealthy, which may pass by itself;
2 the command cannot run as given: bad arguments, or a configuration that cannot be
loaded or lacks what the command needs (``check-config`` included), which only the
operator can fix. User errors print one message, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import socket
import sys
from collections.abc import Sequence

from metaproxy.config import ConfigError, Settings, default_settings, load_settings
from metaproxy.namespace import InvalidNamespace, Namespace, namespace_socket_path
from metaproxy.neutron.haproxy import (
    InvalidUserOrGroup,
    RateLimit,
    render_haproxy_config,
    resolve_group,
    resolve_user,
)

__all__ = ["main"]

PROG = "metaproxy"

#: Seconds ``ctl`` waits for the agent's answer.
DEFAULT_CTL_TIMEOUT = 30.0

#: Success.
EXIT_OK = 0
#: The agent or a dependency cannot be reached, answered an error, or is unhealthy.
EXIT_FAILED = 1
#: Bad arguments, or a configuration that cannot be loaded or lacks what is needed.
EXIT_USAGE = 2

#: The exit statuses, as --help and the README show them.
EXIT_CODES = f"""\
exit status (the same in every command):
  {EXIT_OK}  success (ctl: done; check-config: configuration OK; health: healthy)
  {EXIT_FAILED}  the agent or what it depends on cannot be reached, does not answer in
     time, answered an error, or is unhealthy (health); may pass by itself
  {EXIT_USAGE}  the command cannot run as given: bad arguments, or a configuration that
     cannot be loaded or lacks what the command needs (check-config: the
     configuration is refused); fix the command line or the files"""


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps the descriptions, keeps the exit status table's lines as they are."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text is EXIT_CODES:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class _Failure(Exception):
    """A user error: print the message, exit with ``status``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Unreachable(_Failure):
    """The agent cannot be connected to: no use going on with the next namespace."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_FAILED)


def _namespace(value: str) -> Namespace:
    try:
        return Namespace.parse(value)
    except InvalidNamespace as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _rate(value: str) -> tuple[int, int]:
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


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a TCP port (1-65535)")
    return port


def _timeout(value: str) -> float:
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


def _build_parser() -> argparse.ArgumentParser:
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

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="metaproxy: the Neutron metadata agent replacement's command-line tools.",
        epilog=EXIT_CODES,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {_version()}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    hc = commands.add_parser(
        "haproxy-config",
        parents=[config],
        epilog=EXIT_CODES,
        formatter_class=_HelpFormatter,
        help="print the haproxy configuration for a namespace proxy",
        description="Print the haproxy configuration for the proxy in NAMESPACE, rendered "
        "as Neutron renders it, forwarding to that namespace's own metaproxy socket "
        "(or to the shared socket with --shared).",
    )
    hc.add_argument(
        "namespace",
        type=_namespace,
        metavar="NAMESPACE",
        help="qrouter-<router id>, qdhcp-<network id> or ovnmeta-<network id>",
    )
    where = hc.add_mutually_exclusive_group()
    where.add_argument(
        "--shared", action="store_true", help="forward to the shared socket (metadata_proxy_socket)"
    )
    where.add_argument(
        "--socket",
        metavar="PATH",
        help="forward to this socket (default: <namespace_socket_dir>/NAMESPACE.sock)",
    )
    hc.add_argument(
        "--ipv6-interface",
        metavar="IF",
        help="also bind [fe80::a9fe:a9fe]:80 on IF (qdhcp- and ovnmeta- namespaces)",
    )
    hc.add_argument(
        "--bind-v6-any",
        action="store_true",
        help="router namespaces: bind :::PORT (v4 and v6) instead of 0.0.0.0:PORT",
    )
    hc.add_argument(
        "--metadata-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="router namespaces: the port to bind (default 9697)",
    )
    hc.add_argument(
        "--pidfile",
        metavar="P",
        help="haproxy's pidfile (default: <state_path>/external/pids/<id>.pid.haproxy)",
    )
    hc.add_argument(
        "--user",
        metavar="U",
        help="user haproxy runs as, name or uid (default: metadata_proxy_user, "
        "else the effective user)",
    )
    hc.add_argument(
        "--group",
        metavar="G",
        help="group haproxy runs as, name or gid (default: metadata_proxy_group, "
        "else the effective group)",
    )
    rl = hc.add_argument_group("rate limiting (off unless --rate-limit-base or --rate-limit-burst)")
    rl.add_argument(
        "--rate-limit-base",
        type=_rate,
        metavar="N/SECONDS",
        help="answer 429 past N requests per source in SECONDS (default 10/10)",
    )
    rl.add_argument(
        "--rate-limit-burst",
        type=_rate,
        metavar="N/SECONDS",
        help="a second, usually shorter, window (default 10/10)",
    )
    rl.add_argument(
        "--rate-limit-ip-version",
        type=int,
        choices=(4, 6),
        metavar="4|6",
        help="the address family the limit tables hold (default 4)",
    )
    hc.set_defaults(run=_haproxy_config)

    ctl = commands.add_parser(
        "ctl",
        parents=[config],
        epilog=EXIT_CODES,
        formatter_class=_HelpFormatter,
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
        type=_timeout,
        default=DEFAULT_CTL_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the agent (default {DEFAULT_CTL_TIMEOUT:g})",
    )
    ctl.add_argument("action", choices=("add", "remove", "list"))
    ctl.add_argument("namespaces", nargs="*", type=_namespace, metavar="NAMESPACE")
    ctl.set_defaults(run=_ctl, parser=ctl)

    check = commands.add_parser(
        "check-config",
        parents=[config],
        epilog=EXIT_CODES,
        formatter_class=_HelpFormatter,
        help="load the configuration and print the values that matter",
        description="Load the configuration as the agent would; print 'configuration OK' "
        "and the key resolved values, or what is wrong.",
    )
    check.set_defaults(run=_check_config)

    health = commands.add_parser(
        "health",
        parents=[config],
        epilog=EXIT_CODES,
        formatter_class=_HelpFormatter,
        help="ask a running agent whether it is healthy (exit 0) or not (exit 1)",
        description="GET /healthz from the agent's [metaproxy] metrics_listen (its first "
        "entry, or --listen) and print the answer; exit 0 when healthy, 1 otherwise.",
    )
    health.add_argument(
        "--listen",
        metavar="ENTRY",
        help="HOST:PORT, PORT or unix:PATH (default: the configuration's "
        "first [metaproxy] metrics_listen entry)",
    )
    health.add_argument(
        "--timeout",
        type=_timeout,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for the answer (default 5)",
    )
    health.set_defaults(run=_health)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    """The settings from --config-file/--config-dir; with neither, the defaults.

    With no file, load_settings' checks would only fail on things these commands do
    not use (the default lookup table file, say), so the defaults are taken as they are.
    """
    if not args.config_files and not args.config_dirs:
        return default_settings()
    return load_settings(list(args.config_files), list(args.config_dirs))


# -- haproxy-config -----------------------------------------------------------------


def _rate_limit(args: argparse.Namespace) -> RateLimit | None:
    if args.rate_limit_base is None and args.rate_limit_burst is None:
        if args.rate_limit_ip_version is not None:
            raise _Failure(
                "--rate-limit-ip-version needs --rate-limit-base or --rate-limit-burst",
                EXIT_USAGE,
            )
        return None
    base = args.rate_limit_base or (10, 10)
    burst = args.rate_limit_burst or (10, 10)
    return RateLimit(
        ip_versions=(args.rate_limit_ip_version or 4,),
        base_query_rate_limit=base[0],
        base_window_duration=base[1],
        burst_query_rate_limit=burst[0],
        burst_window_duration=burst[1],
    )


def _haproxy_config(args: argparse.Namespace) -> int:
    namespace: Namespace = args.namespace
    settings = _settings(args)
    if args.socket is not None:
        socket_path = args.socket
    elif args.shared:
        socket_path = settings.metadata_proxy_socket
    else:
        socket_path = namespace_socket_path(settings.namespace_socket_dir, namespace)
    pidfile = args.pidfile or os.path.join(
        settings.state_path, "external", "pids", f"{namespace.id}.pid.haproxy"
    )
    try:
        user = resolve_user(args.user if args.user is not None else settings.metadata_proxy_user)
        group = resolve_group(
            args.group if args.group is not None else settings.metadata_proxy_group
        )
    except InvalidUserOrGroup as e:
        raise _Failure(str(e), EXIT_USAGE) from None
    options: dict[str, object] = {}
    if args.metadata_port is not None:
        options["metadata_port"] = args.metadata_port
    try:
        text = render_haproxy_config(
            namespace,
            socket_path=socket_path,
            user=user,
            group=group,
            pidfile=pidfile,
            debug=bool(settings.debug),
            ipv6_interface=args.ipv6_interface,
            bind_v6_any=args.bind_v6_any,
            rate_limit=_rate_limit(args),
            **options,
        )
    except ValueError as e:
        raise _Failure(str(e), EXIT_USAGE) from None
    sys.stdout.write(text)
    return 0


# -- ctl ------------------------------------------------------------------------------


def _ask(path: str, line: str, timeout: float) -> list[str]:
    """Send one command line to the control socket; the reply's lines after ``ok``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        try:
            conn.connect(path)
        except (OSError, ValueError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise _Unreachable(
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
            raise _Failure(
                f"no answer from the agent on {path} within {timeout:g} s", EXIT_FAILED
            ) from None
        except OSError as e:
            raise _Failure(
                f"lost the connection to the agent on {path}: {e}", EXIT_FAILED
            ) from None
    lines = b"".join(chunks).decode("utf-8", "replace").splitlines()
    if not lines:
        raise _Failure(f"the agent on {path} closed the connection without an answer", EXIT_FAILED)
    status, rest = lines[0], lines[1:]
    if status == "ok":
        return rest
    if status.startswith("error:"):
        raise _Failure(
            status[len("error:") :].strip() or "the agent answered an error", EXIT_FAILED
        )
    raise _Failure(f"unexpected answer from {path}: {status!r}", EXIT_FAILED)


def _ctl(args: argparse.Namespace) -> int:
    if args.action == "list" and args.namespaces:
        raise _Failure("'list' takes no NAMESPACE", EXIT_USAGE)
    if args.action != "list" and not args.namespaces:
        raise _Failure(f"'{args.action}' needs at least one NAMESPACE", EXIT_USAGE)
    path = args.control_socket
    if path is None:
        path = _settings(args).control_socket
        if not path:
            raise _Failure(
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
        except _Unreachable:
            raise
        except _Failure as e:
            print(f"{PROG} ctl: {args.action} {namespace.name}: {e}", file=sys.stderr)
            status = e.status
    return status


# -- check-config ---------------------------------------------------------------------


def _check_config(args: argparse.Namespace) -> int:
    # Always the full load with every check, even with no file (the defaults must
    # then hold on this node, e.g. the default lookup table must exist).
    settings = load_settings(list(args.config_files), list(args.config_dirs))
    print("configuration OK")
    for label, value in _summary(settings):
        print(f"  {label}: {value}")
    return EXIT_OK


def _summary(settings: Settings) -> list[tuple[str, str]]:
    """The key resolved values; never a secret's value."""
    lookup = settings.lookup_backend
    if lookup == "table":
        lookup += f" ({settings.lookup_table})"
    return [
        ("config files", ", ".join(settings.config_files) or "(none: defaults)"),
        ("metadata_proxy_socket", settings.metadata_proxy_socket),
        ("socket mode", f"{settings.socket_mode:04o}"),
        ("namespace_socket_dir", settings.namespace_socket_dir),
        ("control_socket", settings.control_socket),
        ("nova metadata url", settings.nova_url),
        ("lookup backend", lookup),
        ("log", _log_summary(settings)),
        (
            "metadata_proxy_shared_secret",
            "set"
            if settings.metadata_proxy_shared_secret
            else "NOT SET (Nova will refuse signed requests unless its secret is empty too)",
        ),
    ]


def _log_summary(settings: Settings) -> str:
    """Where the agent's log goes, from oslo.log's options (twistd's --logfile and the
    agent's --log-file are on its command line, not in the files)."""
    where = []
    if settings.log_path:
        where.append(f"file {os.path.abspath(settings.log_path)}")
    if settings.use_stderr:
        where.append("standard error")
    if settings.use_journal:
        where.append("journald")
    if not where:
        where.append("standard output (or the agent's --log-file, twistd's --logfile)")
    if settings.use_syslog:
        where.append(f"syslog ({settings.syslog_log_facility})")
    return ", ".join(where) + (", as JSON" if settings.use_json else "")


# -- health ---------------------------------------------------------------------------


def _health(args: argparse.Namespace) -> int:
    import http.client

    from metaproxy.config import parse_listen

    entry = args.listen
    if entry is None:
        entries = _settings(args).metrics_listen
        if not entries:
            raise _Failure(
                "the configuration sets no [metaproxy] metrics_listen, so the "
                "agent serves no /healthz; set it, or pass --listen",
                EXIT_USAGE,
            )
        entry = entries[0]
    try:
        kind, where, port = parse_listen(entry)
    except ValueError as e:
        raise _Failure(f"--listen {entry!r}: {e}", EXIT_USAGE) from None

    class _UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(args.timeout)
            self.sock.connect(where)

    if kind == "unix":
        conn: http.client.HTTPConnection = _UnixConnection("localhost", timeout=args.timeout)
    else:
        conn = http.client.HTTPConnection(where, int(port), timeout=args.timeout)
    try:
        conn.request("GET", "/healthz")
        answer = conn.getresponse()
        body = answer.read().decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException) as e:
        raise _Unreachable(f"cannot ask the agent's /healthz on {entry}: {e}") from None
    finally:
        conn.close()
    print(body)
    return EXIT_OK if answer.status == 200 else EXIT_FAILED


# -- main -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``metaproxy`` command; return the exit status."""
    parser = _build_parser()
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
    except _Failure as e:
        print(f"{where}: error: {e}", file=sys.stderr)
        return e.status


if __name__ == "__main__":
    sys.exit(main())
