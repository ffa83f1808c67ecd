"""ML2/OVN: metaproxy as this chassis's OVN metadata agent, with no haproxy.

What the OVN metadata agent does on a chassis, done by metaproxy itself:

- L{metaproxy.chassis.identity}: the chassis name (C{Open_vSwitch}
  C{external_ids:system-id}), the integration bridge (C{ovn-bridge}, default
  C{br-int}) and the agent id neutron-server lists.
- L{metaproxy.chassis.shapes}: which of upstream's agents metaproxy stands in for
  (C{neutron-ovn-metadata-agent}, or C{neutron-ovn-agent}'s C{metadata} extension) and
  so which keys it registers under, and what neutron-server's agent list shows in each.
- L{metaproxy.chassis.registration}: C{Chassis_Private.external_ids} (the shape's id,
  C{neutron:ovn-bridge}, the shape's sb-cfg key following C{nb_cfg}), so that
  neutron-server's agent list shows the agent alive.
- L{metaproxy.chassis.agent}: the two OVSDB monitors (local Open_vSwitch, Southbound)
  and the registration, resynchronised after every reconnection.
- L{metaproxy.chassis.southbound}, L{metaproxy.chassis.localovs}: what is read from
  each database, and the OVSDB transactions written to the local one.
- L{metaproxy.chassis.plan} (which networks need a namespace, holding what),
  L{metaproxy.chassis.steps} (what must be done: pure decisions),
  L{metaproxy.chassis.netlink} (doing it: pyroute2 on a dedicated thread) and
  L{metaproxy.chassis.provision} (the passes: desired against actual, idempotent).
- L{metaproxy.chassis.serving}: 169.254.169.254:80 (and C{[fe80::a9fe:a9fe]:80}) in
  every provisioned namespace, on the service's listeners
  (L{metaproxy.http.listeners.Listeners.add_tcp}): the same pipeline, the TCP peer as
  the caller; L{metaproxy.chassis.leftovers}: the haproxy the replaced agent left in a
  namespace, stopped (by its pid file, verified in C{/proc}) before it is served.

- L{metaproxy.chassis.mode}: all of it assembled (C{ChassisMode}), for the service to
  start when C{[metaproxy] ovn_chassis} is on.

Layering: the package sits above L{metaproxy.ovsdb}, L{metaproxy.http} and
L{metaproxy.namespace}, and below the service that builds it (it never imports the
pipeline or the configuration: the service hands it its listeners and the values read).

Privileges, per step (metaproxy runs as root on a chassis, as the OVN metadata agent
does; these are the capabilities a confined deployment must keep):

- identity and registration: none beyond access to the local OVSDB socket (C{unix:} is
  usually root-only) and to the Southbound database;
- provisioning namespaces, veths, addresses, routes and MTUs: C{CAP_NET_ADMIN};
  creating and bind-mounting C{/run/netns/ovnmeta-*}: C{CAP_SYS_ADMIN}; the
  checksum-fill rule on C{netdev} bridges: C{CAP_NET_ADMIN} (iptables in the namespace);
- listening on 169.254.169.254:80 inside each namespace: C{CAP_SYS_ADMIN} for
  C{setns(2)} into it, and C{CAP_NET_BIND_SERVICE} for port 80.
"""
