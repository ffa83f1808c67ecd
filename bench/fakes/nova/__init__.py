"""A fake Nova metadata API for the demo, the integration tests and the bench.

It checks the proxy headers the way Nova does with C{[neutron] service_metadata_proxy =
True}, serves the tree from L{bench.fakes.novatree}, and records every request it
receives (method, request-target, headers exactly as on the wire, body) so tests can
assert what metaproxy forwarded, byte for byte. Every answer carries an
C{X-Fakenova-Pid} header: the process that answered.

A slow Nova can be modelled: each answer waits a service time (fixed or drawn from a
distribution, after the header checks), and with a concurrency limit at most that many
requests are in their service time at once, the others wait in FIFO order.
C{--processes N} runs N processes on one listening socket so that the fake is never the
bottleneck.

Control endpoints (only with the header C{X-Fakenova-Control: 1}; they skip the
signature checks, the service time and the queue, and are not recorded):

  - C{GET /_fakenova/stats}: L{bench.fakes.nova.stats.NovaStats.as_json}, summed over
    all processes;
  - C{GET /_fakenova/requests}: the requests recorded by the process that answers
    (with several processes, each keeps its own);
  - C{POST /_fakenova/reset}: forget the counters and the recorded requests, in all
    processes;
  - C{GET|POST /_fakenova/config}: read or change C{delay} (fixed seconds),
    C{delay_dist} (a L{bench.fakes.nova.service_time.ServiceTime} spec), C{concurrency}
    and C{status_override} (POST a JSON object with any of these keys), in all processes.

Run it with C{python -m bench.fakes.nova --table ports.json --secret S}
(L{bench.fakes.nova.cli.main}). The modules, by job:

  - L{bench.fakes.nova.api}: the resource (C{FakeNova}: the worker queue, the control
    endpoints, the configuration) and C{make_site};
  - L{bench.fakes.nova.answers}: Nova's answer to one request (header checks, signature,
    instance and project, the tree, the password);
  - L{bench.fakes.nova.service_time}: the service time model and each process's share
    of the concurrency limit;
  - L{bench.fakes.nova.stats}: the counters, shared between the processes;
  - L{bench.fakes.nova.recording}: the requests as received on the wire, and the site
    that records them;
  - L{bench.fakes.nova.instances}: the instances of a lookup table;
  - L{bench.fakes.nova.tls}: the server's TLS options;
  - L{bench.fakes.nova.pool}: the processes of C{--processes N};
  - L{bench.fakes.nova.cli}: the command line.
"""
