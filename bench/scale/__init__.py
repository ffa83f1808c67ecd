"""Scale checks: many held connections, many namespace sockets. Figures, no verdicts.

    python -m bench.scale connections [--connections 10000] [--hold 3]
    python -m bench.scale namespaces [--namespaces 10000] [--declare config|dir]
                                     [--instances 200] [--routers 20] [--ops 4]

C{connections}: the real agent (C{twistd metaproxy}) and the fake Nova, then a generator
process opens C{--connections} connections to the shared socket, sends each the first
line and a header of a request (never its end) and holds them all. The agent's C{VmRSS}
and C{VmHWM} are read from C{/proc/<pid>/status} before, while they are held, and after
they are let go, and a normal request is made while they are held (it must still be
answered). The agent's C{request_timeout} is raised for the run (C{--request-timeout},
default 300 s) so that the held connections are not answered 408 while they are measured.

C{namespaces}: the agent is started with C{--namespaces} per-namespace sockets declared
in C{[metaproxy] namespaces} (C{--declare config}) or as files in C{namespace_dir}
(C{--declare dir}); the start-up time is from starting the process until every one of
those sockets accepts a connection. Then a boot storm runs through the per-namespace
sockets of C{--instances} instances over C{--routers} of them while one more namespace is
added and removed C{--ops} times with C{metaproxy ctl}, and a probe asks one instance's
metadata every 20 ms. Reported: the storm's errors (must be 0), each C{ctl} command's
time, how soon the added socket answered, and the probe's latency near the changes
against the rest of the run (the "latency step").

Both write C{<out>/<stamp>-scale-<check>.json} and C{.md} and print the table.

File descriptors: the agent needs one per socket and one per connection, so C{nofile}
must be above C{sockets + connections + ~100}. This command raises its own soft limit to
what it needs (at most the hard limit) before starting the agent, which inherits it, and
the generator raises its own. Under systemd, set C{LimitNOFILE=} in the unit to the same
(e.g. C{LimitNOFILE=65536}): the default soft limit of 1024 stops an agent at about 1,000
connections plus sockets.

The OVSDB client at the scale of a large cloud (each its own command, figures in
BENCHMARKS.md): C{python -m bench.scale.ovsdb_reconnect} (L{bench.scale.ovsdb_reconnect}:
a reconnect after an outage on 100,000 Port_Binding rows, changes only against a full
copy), C{python -m bench.scale.ovsdb_storm} (L{bench.scale.ovsdb_storm}: many clients of
a 3-member cluster and a member restart), C{python -m bench.scale.ovsdb_clients}
(L{bench.scale.ovsdb_clients}: metaproxy's client against the C{ovs} library's IDL),
C{python -m bench.scale.ovsdb_fullcopy} (L{bench.scale.ovsdb_fullcopy}: where a full
copy's reactor time goes, and the longest reactor stall while it arrives); the
fleet they load and the relay that cuts the line: L{bench.scale.southbound}.

The modules: the agent of a check (L{bench.scale.agent}), the held connections
(L{bench.scale.holder}), the two checks (L{bench.scale.connections},
L{bench.scale.namespaces}), the host's limits and /proc (L{bench.scale.host}), the
results' files (L{bench.scale.output}) and the command line (L{bench.scale.cli}).
"""
