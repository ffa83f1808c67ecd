"""A fake Keystone (v3 tokens) and Neutron API (port lists), answering from a port table.

For the Neutron API backend's tests (in process: L{bench.fakes.neutron.cloud.FakeCloud}
and L{bench.fakes.neutron.cloud.cloud_resource} behind
C{treq.testing.RequestTraversalAgent}) and for C{python -m bench storm --lookup
neutron-api} (stand-alone: C{python -m bench.fakes.neutron --table ports.json},
L{bench.fakes.neutron.cli}).

It speaks the real APIs' shapes:

  - C{GET /identity} and C{GET /identity/v3} answer Keystone's version discovery (what
    keystoneauth's C{password} plugin asks first), built with keystoneauth's fixtures;
  - C{POST /identity/v3/auth/tokens} with a C{password} (user name and domain; a project
    scope or the system scope, C{{"system": {"all": true}}}) or C{application_credential}
    body answers 201, the token in C{X-Subject-Token} and a body built with
    C{keystoneauth1.fixture.V3Token} (the scope, C{expires_at}, the catalog added with
    its C{add_service}); wrong credentials 401;
  - the catalog's C{network} service has three endpoints, C{internal}
    (C{<base>/network}), C{public} (C{<base>/network-public}) and C{admin}
    (C{<base>/network-admin}), in C{RegionOne}: all three serve the same ports, and the
    recorded requests say which one was used;
  - C{GET <endpoint>/v2.0/ports} with a live C{X-Auth-Token} (otherwise 401) filters with
    repeated query parameters as Neutron does (values of one key: any of them; different
    keys: all of them; C{fixed_ips=ip_address=<ip>}), returns only the C{fields=} asked
    for, and answers 400 for a filter Neutron would not know.

The table is the fleet's (L{metaproxy.resolve.table} format). Each network a router
reaches through the table's C{routers} map becomes a C{network:router_interface} port of
that router, as Neutron would have it (L{bench.fakes.neutron.ports}).
"""
