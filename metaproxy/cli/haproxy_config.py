"""``metaproxy haproxy-config NAMESPACE``: print the haproxy configuration for one
namespace proxy, forwarding to that namespace's own socket (or, with ``--shared``, to
Neutron's shared socket)."""

from __future__ import annotations

import argparse
import os
import sys

from metaproxy.cli.failures import CommandFailed
from metaproxy.cli.parser import (
    EXIT_CODES,
    EXIT_USAGE,
    HelpFormatter,
    namespace_arg,
    port_arg,
    rate_arg,
    settings_from,
)
from metaproxy.namespace import Namespace, namespace_socket_path
from metaproxy.neutron.haproxy import (
    InvalidUserOrGroup,
    RateLimit,
    render_haproxy_config,
    resolve_group,
    resolve_user,
)

__all__ = ["add_subcommand"]


def add_subcommand(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config: argparse.ArgumentParser,
) -> None:
    hc = commands.add_parser(
        "haproxy-config",
        parents=[config],
        epilog=EXIT_CODES,
        formatter_class=HelpFormatter,
        help="print the haproxy configuration for a namespace proxy",
        description="Print the haproxy configuration for the proxy in NAMESPACE, rendered "
        "as Neutron renders it, forwarding to that namespace's own metaproxy socket "
        "(or to the shared socket with --shared).",
    )
    hc.add_argument(
        "namespace",
        type=namespace_arg,
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
        type=port_arg,
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
        type=rate_arg,
        metavar="N/SECONDS",
        help="answer 429 past N requests per source in SECONDS (default 10/10)",
    )
    rl.add_argument(
        "--rate-limit-burst",
        type=rate_arg,
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


def _rate_limit(args: argparse.Namespace) -> RateLimit | None:
    if args.rate_limit_base is None and args.rate_limit_burst is None:
        if args.rate_limit_ip_version is not None:
            raise CommandFailed(
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
    settings = settings_from(args)
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
        raise CommandFailed(str(e), EXIT_USAGE) from None
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
        raise CommandFailed(str(e), EXIT_USAGE) from None
    sys.stdout.write(text)
    return 0
