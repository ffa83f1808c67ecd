"""Render haproxy configurations with Neutron's own code, for test_haproxy.py.

Run by the upstream virtualenv's python (neutron installed there, not in metaproxy's):
reads a JSON list of cases on stdin and writes the JSON list of the configurations
Neutron's C{HaproxyConfigurator} renders for them. A case names the driver (C{ml2}: the
L3 and DHCP agents' C{neutron.agent.metadata.driver}; C{ovn}: the OVN metadata agent's
C{neutron.agent.ovn.metadata.driver}), the configurator's arguments as the agents pass
them, C{debug}, and overrides of Neutron's C{[metadata_rate_limiting]} and
C{[metadata_haproxy]} options (their defaults are Neutron's own).
"""

import json
import sys

from neutron.agent.metadata import driver as ml2_driver
from neutron.agent.ovn.metadata import driver as ovn_driver
from neutron.conf.agent.metadata import config as metadata_config
from oslo_config import cfg
from oslo_log import log as logging

_DRIVERS = {"ml2": ml2_driver, "ovn": ovn_driver}


def render(case):
    # the log level comes from the global configuration's [DEFAULT] debug
    cfg.CONF.set_override("debug", case["debug"])
    conf = cfg.ConfigOpts()
    metadata_config.register_meta_conf_opts(
        metadata_config.METADATA_RATE_LIMITING_OPTS, conf, group="metadata_rate_limiting"
    )
    metadata_config.register_meta_conf_opts(
        metadata_config.METADATA_HAPROXY_OPTS, conf, group="metadata_haproxy"
    )
    conf([], default_config_files=[], default_config_dirs=[])
    for group in ("metadata_rate_limiting", "metadata_haproxy"):
        for name, value in case[group].items():
            conf.set_override(name, value, group=group)
    configurator = _DRIVERS[case["driver"]].HaproxyConfigurator(
        case["network_id"],
        case["router_id"],
        case["socket"],
        case["host"],
        case["port"],
        case["user"],
        case["group"],
        "/var/lib/neutron",  # state_path: where the file would be written, not in it
        case["pidfile"],
        conf.metadata_rate_limiting,
        conf.metadata_haproxy,
        case["host_v6"],
        case["bind_interface"],
    )
    return configurator.haproxy_cfg


def main():
    logging.register_options(cfg.CONF)
    cfg.CONF([], project="neutron", default_config_files=[], default_config_dirs=[])
    json.dump([render(case) for case in json.load(sys.stdin)], sys.stdout)


if __name__ == "__main__":
    main()
