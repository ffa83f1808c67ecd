"""A real OVN chassis on this host, for integration tests and the bench.

    from bench.ovnsandbox import Cloud, OvnSandbox, missing

    with OvnSandbox.start() as sandbox:           # OVS + NB/SB + northd + ovn-controller
        cloud = Cloud(sandbox)
        net = cloud.add_network("10.1.0.0/24")    # Neutron-shaped NB rows
        vm = cloud.add_instance(net)              # a namespace plugged into br-int
        cloud.wait_bound(vm)

- L{bench.ovnsandbox.daemons}: the processes, readiness, clean-up, the one-at-a-time lock.
- L{bench.ovnsandbox.nbrows}: Northbound rows as Neutron's ML2/OVN driver writes them.
- L{bench.ovnsandbox.cloud}: networks and instances (network namespaces) on the sandbox.
- L{bench.ovnsandbox.ovsdbsync}: blocking OVSDB requests for the set-up.
- L{bench.ovnsandbox.probe}: ping, TCP and HTTP probes run inside an instance.
- L{bench.ovnsandbox.upstream_alive}: neutron-server's own agent list from the rows,
  run with the upstream virtualenv's Python.

Needs root and the Debian packages openvswitch-switch, ovn-central and ovn-host
(L{missing} says in one line what is absent). Everything runs as plain processes in
C{/tmp/mpovn-<tag>/}; no system service is started or touched.
"""

from bench.ovnsandbox.cloud import Cloud, Instance
from bench.ovnsandbox.daemons import OvnSandbox, SandboxError, missing
from bench.ovnsandbox.nbrows import Network, VmPort

__all__ = ["Cloud", "Instance", "OvnSandbox", "SandboxError", "missing", "Network", "VmPort"]
