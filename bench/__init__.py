"""metaproxy's bench: the fakes it runs against, the boot-storm load and its reports.

The rooms:

  - L{bench.fakes}: the fake Nova, Keystone and Neutron API, neutron-server on a bus,
    RabbitMQ and the OVN Southbound database;
  - L{bench.load}: the fleet, cloud-init's requests, the storm, its targets (sockets and
    real haproxy in network namespaces) and its results;
  - L{bench.compare}: the same storm against two agents, upstream's among them;
  - L{bench.scale}: the scale checks (C{python -m bench.scale});
  - L{bench.cpu}, L{bench.fuzz}: CPU benchmarks and the fuzzer of the request path.

The entry points are here: the command line (C{python -m bench storm|compare},
L{bench.__main__}, with its options in L{bench.options}), the stack a storm runs against
(L{bench.stack}, started with L{bench.processes} and L{bench.lookups}), the storms on it
(L{bench.local_storms}), C{python -m bench.demo} (L{bench.demo}) and C{python -m
bench.soak} (L{bench.soak}).
"""
