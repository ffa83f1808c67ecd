"""neutron-server's own verdict on a chassis's agents, for comparison tests.

Run with the Python of a virtualenv where neutron is installed (not metaproxy's)::

    upstream-venv/bin/python bench/ovnsandbox/upstream_alive.py < rows.json

C{rows.json} holds C{chassis} and C{chassis_private} (rows as the Southbound has them:
C{name}, C{hostname}, C{external_ids}, C{other_config}; C{nb_cfg}, C{nb_cfg_timestamp},
C{external_ids}), C{nb_global_nb_cfg} and C{agent_down_time}. It prints, as JSON, the
agent list neutron-server's C{AgentCache} builds from those rows (its C{populate()}, which
reads the rows as the Southbound monitor's events do: the controller agent, then an "OVN
Neutron agent" when C{neutron:ovn-neutron-agent-id} is there, else an "OVN Metadata agent"
when C{neutron:ovn-metadata-id} is; its C{as_dict()} per agent, timestamps as text): the
same code decides what C{openstack network agent list} shows, alive or not.
"""

import json
import sys
import types


def main() -> int:
    rows = json.load(sys.stdin)
    from neutron.conf.agent.database import agents_db
    from oslo_config import cfg

    agents_db.register_db_agents_opts()
    cfg.CONF([], project="neutron")
    cfg.CONF.set_override("agent_down_time", rows["agent_down_time"])
    from neutron.plugins.ml2.drivers.ovn.agent import neutron_agent

    chassis = types.SimpleNamespace(**rows["chassis"])
    private = types.SimpleNamespace(**rows["chassis_private"], chassis=[chassis])
    nb = types.SimpleNamespace(nb_global=types.SimpleNamespace(nb_cfg=rows["nb_global_nb_cfg"]))
    listed = types.SimpleNamespace(execute=lambda check_error=False: [private])
    sb = types.SimpleNamespace(db_list_rows=lambda table: listed)
    cache = neutron_agent.AgentCache(driver=types.SimpleNamespace(nb_ovn=nb, sb_ovn=sb))
    cache.populate()
    agents = [agent.as_dict() for agent in cache.get_agents()]
    json.dump(agents, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
