"""The load: the fleet of instances (L{bench.load.fleet}), what cloud-init asks on first
boot (L{bench.load.cloudinit}), the boot storm that replays it against an agent
(L{bench.load.storm}, its worker processes L{bench.load.storm_worker}, where requests go
L{bench.load.targets}, the verdict on each answer L{bench.load.checks}), the one HTTP
answer parser (L{bench.load.answer_parser}) and the blocking client built on it
(L{bench.load.unixhttp}), a storm's result and plots (L{bench.load.report},
L{bench.load.plots}), the agent's CPU and memory from /proc (L{bench.load.procstat}),
and the network namespaces with real haproxy in front of the agent
(L{bench.load.netns}, L{bench.load.netns_host}, L{bench.load.nstarget}; the client run
inside an instance's namespace is L{bench.load.nsclient})."""
