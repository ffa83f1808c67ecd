"""``metaproxy check-config``: load the configuration as the agent would and print the
values that matter, or what is wrong with it."""

from __future__ import annotations

import argparse
import os

from metaproxy.cli.parser import EXIT_CODES, EXIT_OK, HelpFormatter
from metaproxy.config import Settings, load_settings
from metaproxy.config.settings import NEUTRON_OVN_AGENT_SHAPE

__all__ = ["add_subcommand"]


def add_subcommand(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config: argparse.ArgumentParser,
) -> None:
    check = commands.add_parser(
        "check-config",
        parents=[config],
        epilog=EXIT_CODES,
        formatter_class=HelpFormatter,
        help="load the configuration and print the values that matter",
        description="Load the configuration as the agent would; print 'configuration OK' "
        "and the key resolved values, or what is wrong.",
    )
    check.set_defaults(run=_check_config)


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
        ("router namespaces", _routers_summary(settings)),
        ("OVN chassis mode", _chassis_summary(settings)),
        ("log", _log_summary(settings)),
        (
            "metadata_proxy_shared_secret",
            "set"
            if settings.metadata_proxy_shared_secret
            else "NOT SET (Nova will refuse signed requests unless its secret is empty too)",
        ),
    ]


def _routers_summary(settings: Settings) -> str:
    if settings.router_namespaces != "serve":
        return "off (the L3 agent's haproxy serves them)"
    only = (
        f" whose id starts with {settings.router_id_prefix!r}" if settings.router_id_prefix else ""
    )
    return (
        f"served by metaproxy in every qrouter- namespace{only} (needs "
        "enable_metadata_proxy = False in l3_agent.ini, and CAP_SYS_ADMIN, CAP_NET_ADMIN, "
        "CAP_NET_BIND_SERVICE)"
    )


def _chassis_summary(settings: Settings) -> str:
    """Whether metaproxy is this chassis's metadata agent, in place of which of
    upstream's agents, and with which databases."""
    if not settings.ovn_chassis:
        return "off"
    if settings.ovn_agent_shape == NEUTRON_OVN_AGENT_SHAPE:
        shape = (
            "in place of neutron-ovn-agent's metadata extension, listed as its OVN Neutron agent"
        )
    else:
        shape = "in place of neutron-ovn-metadata-agent, listed as the OVN Metadata agent"
    return (
        f"on, {shape} (Open_vSwitch at {settings.ovs_ovsdb_connection}, "
        f"Southbound at {settings.ovn_sb_connection})"
    )


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
