"""The L3 agent's own iptables code applying a router's rules, run with upstream's Python
(bench/compare/upstream.py's virtualenv) inside the router's namespace, as root:

    ip netns exec qrouter-<id> <upstream venv>/bin/python tests/e2e/l3_agent_rules.py \\
        [--metadata-proxy] [--extra-rule]

It builds the rules a router gets from C{neutron.agent.l3.router_info.RouterInfo} (the
address scope chains and the metadata mark it installs whatever C{enable_metadata_proxy}
says), plus, with C{--metadata-proxy}, those of C{neutron.agent.metadata.driver} (the
redirect of 169.254.169.254:80 to 9697 and the filter on 9697: C{enable_metadata_proxy =
True}), and applies them with a new C{IptablesManager} named C{neutron-l3-agent}, as the
agent does after a restart: whatever its chains held before is replaced. C{--extra-rule}
adds an SNAT rule, as a router's gateway would. Prints "applied" on success.

Privileged calls run in this process (oslo.privsep in client mode off: we are root), and
upstream's code is used as it is; this file imports nothing of metaproxy's.
"""

import argparse
import sys
import tempfile
import types
import warnings


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--metadata-proxy", action="store_true")
    parser.add_argument("--extra-rule", action="store_true")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    from neutron import privileged
    from neutron.agent.l3 import router_info
    from neutron.agent.linux import iptables_manager
    from neutron.agent.metadata import driver
    from neutron.conf.agent import common as agent_config
    from neutron.conf.agent.l3 import config as l3_config
    from oslo_concurrency import lockutils
    from oslo_config import cfg

    conf = cfg.CONF
    l3_config.register_l3_agent_config_opts(l3_config.OPTS, conf)
    agent_config.register_root_helper(conf)
    conf([], project="neutron")
    lockutils.set_defaults(tempfile.mkdtemp(prefix="l3-locks-"))
    for name in dir(privileged):
        context = getattr(privileged, name)
        if hasattr(context, "set_client_mode"):
            context.set_client_mode(False)

    manager = iptables_manager.IptablesManager(
        use_ipv6=True, namespace=None, binary_name="neutron-l3-agent"
    )
    router = types.SimpleNamespace(iptables_manager=manager, agent_conf=conf)
    router_info.RouterInfo._initialize_address_scope_iptables(router, manager)
    router_info.RouterInfo.initialize_metadata_iptables(router)
    if args.metadata_proxy:
        port, mark = conf.metadata_port, conf.metadata_access_mark
        for chain, rule in driver.metadata_filter_rules(port, mark):
            manager.ipv4["filter"].add_rule(chain, rule)
            manager.ipv6["filter"].add_rule(chain, rule)
        for chain, rule in driver.metadata_nat_rules(port):
            manager.ipv4["nat"].add_rule(chain, rule)
    if args.extra_rule:
        manager.ipv4["nat"].add_rule("snat", "-o qg-fake -j SNAT --to-source 192.0.2.10")
    manager.apply()
    print("applied")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
