"""The option schema: every option metaproxy reads, by section, in the order the sample
configuration and docs/configuration.md list them. The sections themselves are defined in
L{agent_options} (Neutron's own), L{metaproxy_options}, L{backend_options} and
L{chassis_options}.
"""

from __future__ import annotations

from oslo_config import cfg

from metaproxy.config.agent_options import (
    AGENT_OPTS,
    CACHE_OPTS,
    COMMON_OPTS,
    LOG_OPTS,
    METADATA_OPTS,
    RATE_LIMIT_OPTS,
)
from metaproxy.config.backend_options import NEUTRON_OPTS, OVN_OPTS
from metaproxy.config.chassis_options import (
    AGENT_DOWN_TIME_OPT,
    AGENT_EXTENSIONS_OPT,
    EXTERNAL_PIDS_OPT,
    OVN_CHASSIS_OPT,
    OVS_OPTS,
)
from metaproxy.config.metaproxy_options import METAPROXY_OPTS

__all__ = ["list_opts", "register_options", "find_option"]


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Every option metaproxy reads, by section (the oslo-config-generator shape)."""
    return [
        (
            "DEFAULT",
            METADATA_OPTS + COMMON_OPTS + [AGENT_DOWN_TIME_OPT, EXTERNAL_PIDS_OPT] + LOG_OPTS,
        ),
        ("AGENT", AGENT_OPTS + [AGENT_EXTENSIONS_OPT]),
        ("cache", CACHE_OPTS),
        ("metadata_rate_limiting", RATE_LIMIT_OPTS),
        ("metaproxy", METAPROXY_OPTS + [OVN_CHASSIS_OPT]),
        ("neutron", NEUTRON_OPTS),
        ("ovn", OVN_OPTS),
        ("ovs", OVS_OPTS),
    ]


def register_options(conf: cfg.ConfigOpts) -> None:
    """Register every option of L{list_opts} on C{conf}."""
    for group, opts in list_opts():
        conf.register_opts(opts, group=None if group == "DEFAULT" else group)


def find_option(group: str, name: str) -> cfg.Opt:
    """The option C{name} of section C{group} (C{"DEFAULT"} for [DEFAULT])."""
    return next(o for g, opts in list_opts() if g == group for o in opts if o.dest == name)
