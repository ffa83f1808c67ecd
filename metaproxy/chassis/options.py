"""The options the chassis mode reads, with the OVN metadata agent's names and defaults.

Everything an operator's unchanged C{neutron_ovn_metadata_agent.ini} and C{neutron.conf}
already say is read from where they say it:

  - C{[ovs] ovsdb_connection} (the local Open_vSwitch database) and
    C{[ovs] ovsdb_connection_timeout};
  - C{[DEFAULT] agent_down_time} (neutron.conf: how long neutron-server waits before it
    calls an agent dead; the liveness writes are spread inside a third of it);
  - the Southbound connection, C{[ovn] ovn_sb_connection} and its TLS files, which the
    OVN lookup backend already reads.

One option is metaproxy's own: C{[metaproxy] ovn_chassis}, which turns the mode on.

L{CHASSIS_OPTS} lists them as C{(group, options)}; registering them with the rest of the
configuration (and validating C{ovsdb_connection} with L{metaproxy.ovsdb.remote}) is the
configuration package's job.
"""

from __future__ import annotations

from oslo_config import cfg

__all__ = ["OVS_OPTS", "AGENT_DOWN_TIME_OPT", "METAPROXY_CHASSIS_OPTS", "CHASSIS_OPTS"]

OVS_OPTS = [
    cfg.StrOpt(
        "ovsdb_connection",
        default="unix:/usr/local/var/run/openvswitch/db.sock",
        help="The local Open_vSwitch database (the chassis's name, its integration "
        "bridge, and the metadata ports plugged into it): tcp:IP:PORT or unix:PATH.",
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
    "The chassis reports its liveness within a third of it (3 to 10 seconds).",
)

METAPROXY_CHASSIS_OPTS = [
    cfg.BoolOpt(
        "ovn_chassis",
        default=False,
        help="Be this chassis's OVN metadata agent: register in the Southbound "
        "database, provision an ovnmeta-<network> namespace for every network with an "
        "instance here, and answer 169.254.169.254:80 inside it (no haproxy).",
    ),
]

#: (group, options) for the configuration package to register.
CHASSIS_OPTS = [
    ("ovs", OVS_OPTS),
    ("DEFAULT", [AGENT_DOWN_TIME_OPT]),
    ("metaproxy", METAPROXY_CHASSIS_OPTS),
]
