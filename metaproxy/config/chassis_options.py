"""The options of the ML2/OVN chassis mode (L{metaproxy.chassis}), with the OVN metadata
agent's names and defaults.

Everything an operator's unchanged C{neutron_ovn_metadata_agent.ini} and C{neutron.conf}
already say is read from where they say it:

  - C{[ovs] ovsdb_connection} (the local Open_vSwitch database) and
    C{[ovs] ovsdb_connection_timeout};
  - C{[DEFAULT] agent_down_time} (neutron.conf: how long neutron-server waits before it
    calls an agent dead; the liveness writes are spread inside a third of it);
  - the Southbound connection, C{[ovn] ovn_sb_connection} and its TLS files, which the
    OVN lookup backend already reads (L{metaproxy.config.backend_options}).

On nodes that run C{neutron-ovn-agent} (upstream's successor of the OVN metadata
agent), its C{neutron_ovn_agent.ini} is read instead, and:

  - C{[agent] extensions} (that file's list of the agent's extensions) says the node has
    that shape (L{metaproxy.config.settings.resolve_ovn_agent_shape}); C{metadata} must
    no longer be in it, since metaproxy takes that extension's place;
  - C{[ovs] ovsdb_connection} defaults, as for that agent, to C{tcp:127.0.0.1:6640}.

Upstream's C{[DEFAULT] external_pids} (default C{$state_path/external/pids}) is where
the replaced agent kept its haproxies' pid files, which metaproxy reads to stop those
left running (L{metaproxy.chassis.leftovers}).

One option is metaproxy's own: C{[metaproxy] ovn_chassis}. Unset, the mode is on when
the files set both C{[ovs] ovsdb_connection} and C{[ovn] ovn_sb_connection} (what the OVN
metadata agent's own file holds), or C{[ovn] ovn_sb_connection} in the neutron-ovn-agent
shape, and no C{lookup_backend} other than C{ovn} is set
(L{metaproxy.config.settings.resolve_ovn_chassis}).
"""

from __future__ import annotations

from oslo_config import cfg

__all__ = [
    "OVS_OPTS",
    "AGENT_DOWN_TIME_OPT",
    "OVN_CHASSIS_OPT",
    "AGENT_EXTENSIONS_OPT",
    "EXTERNAL_PIDS_OPT",
]

OVS_OPTS = [
    cfg.StrOpt(
        "ovsdb_connection",
        default="unix:/usr/local/var/run/openvswitch/db.sock",
        help="The local Open_vSwitch database, for the OVN chassis mode (the chassis's "
        "name, its integration bridge, and the metadata ports plugged into it): "
        "tcp:IP:PORT, ssl:IP:PORT or unix:PATH. When neutron_ovn_agent.ini is read "
        "([agent] extensions is set) the default is that agent's, tcp:127.0.0.1:6640.",
    ),
    cfg.IntOpt(
        "ovsdb_connection_timeout",
        default=180,
        min=1,
        help="Seconds to connect to the local Open_vSwitch database and for each of its answers.",
    ),
]

AGENT_DOWN_TIME_OPT = cfg.IntOpt(
    "agent_down_time",
    default=75,
    min=1,
    help="Seconds after which neutron-server regards an agent as down (neutron.conf). "
    "In the OVN chassis mode the liveness is reported within a third of it.",
)

OVN_CHASSIS_OPT = cfg.BoolOpt(
    "ovn_chassis",
    default=None,
    sample_default="on when [ovs] ovsdb_connection and [ovn] ovn_sb_connection are set",
    help="Be this chassis's OVN metadata agent: register in the Southbound database "
    "(neutron-server lists metaproxy as the node's OVN metadata agent), provision an "
    "ovnmeta-<network> namespace for every network with an instance here, and answer "
    "169.254.169.254:80 inside it (no haproxy); lookups come from the Southbound "
    "(lookup_backend = ovn). Unset: on when the files set both [ovs] ovsdb_connection "
    "and [ovn] ovn_sb_connection, as neutron_ovn_metadata_agent.ini does, and "
    "lookup_backend is unset or ovn.",
)

AGENT_EXTENSIONS_OPT = cfg.ListOpt(
    "extensions",
    default=[],
    help="neutron-ovn-agent's extensions (neutron_ovn_agent.ini). Set, this node runs "
    "neutron-ovn-agent and the OVN chassis mode takes the place of its metadata "
    "extension: registers as the chassis's OVN Neutron agent. metadata must not be "
    "listed: remove it, or neutron-ovn-agent and metaproxy would both serve metadata on "
    "this chassis.",
)

EXTERNAL_PIDS_OPT = cfg.StrOpt(
    "external_pids",
    default="$state_path/external/pids",
    help="Where Neutron's agents keep the pid files of the processes they spawn. In the "
    "OVN chassis mode, a haproxy the replaced agent left in an ovnmeta- namespace (its "
    "<network id>.pid.haproxy here) is stopped before metaproxy serves the namespace.",
)
