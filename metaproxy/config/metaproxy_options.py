"""The C{[metaproxy]} section: the options metaproxy adds to Neutron's (lookup backend,
namespace sockets, Nova connections, request limits, metrics, draining).
"""

from __future__ import annotations

from oslo_config import cfg

__all__ = ["METAPROXY_OPTS"]

_S = "$state_path/metaproxy"

METAPROXY_OPTS = [
    cfg.StrOpt(
        "lookup_backend",
        choices=["table", "rpc", "neutron_api", "ovn"],
        sample_default="rpc when transport_url is set, table otherwise",
        help="Where instances are looked up: rpc asks neutron-server over "
        "transport_url (get_ports on topic q-plugin, as neutron-metadata-agent "
        "does; each call waits at most rpc_response_timeout seconds, and never "
        "longer than nova_timeout); neutron_api asks Neutron's API (the [neutron] "
        "section: Keystone credentials and endpoint; enable [cache] with it); ovn "
        "keeps a replica of the OVN Southbound database named in [ovn] "
        "ovn_sb_connection and answers from memory; table reads lookup_table. "
        "Unset: rpc when transport_url is set, table otherwise.",
    ),
    cfg.IntOpt(
        "rpc_lookup_threads",
        default=8,
        min=1,
        help="Threads making RPC lookups at once (oslo.messaging calls block); "
        "more lookups wait their turn. Concurrent identical lookups share one "
        "call whatever this says.",
    ),
    cfg.StrOpt(
        "lookup_table",
        default=f"{_S}/ports.json",
        help="Port table file for lookup_backend = table; must exist at start.",
    ),
    cfg.StrOpt(
        "namespace_socket_dir",
        default=f"{_S}/ns",
        help="Directory of the per-namespace sockets metaproxy creates, one "
        "<namespace name>.sock per namespace.",
    ),
    cfg.StrOpt(
        "namespace_dir",
        default=f"{_S}/namespaces.d",
        help="Watched directory of namespace declarations: one empty file per "
        "namespace, named like it (e.g. qrouter-<router id>). Adding or removing a "
        "file adds or removes that namespace's socket without a restart.",
    ),
    cfg.ListOpt(
        "namespaces",
        default=[],
        help="Namespaces served from the start, comma separated: "
        "qrouter-<router id>, qdhcp-<network id> or ovnmeta-<network id>.",
    ),
    cfg.FloatOpt(
        "namespace_rescan_interval",
        default=10,
        min=0.1,
        help="Seconds between rescans of namespace_dir, and of /run/netns when "
        "router_namespaces = serve (inotify, where available, sees changes sooner).",
    ),
    cfg.StrOpt(
        "router_namespaces",
        default="off",
        choices=["off", "serve"],
        help="serve: metaproxy itself answers instances behind every router on this "
        "node, with no haproxy: in each qrouter-<router id> namespace it adds "
        "169.254.169.254/32 to the loopback and listens on 169.254.169.254:80, the "
        "caller being the connection's peer. Set enable_metadata_proxy = False in "
        "l3_agent.ini with it (docs/routers.md). Needs CAP_SYS_ADMIN, CAP_NET_ADMIN "
        "and CAP_NET_BIND_SERVICE. off: routers keep the L3 agent's haproxy.",
    ),
    cfg.StrOpt(
        "router_id_prefix",
        default="",
        help="With router_namespaces = serve, serve only the routers whose id starts "
        "with this; empty: every qrouter- namespace on the node. For test and "
        "benchmark hosts whose other routers must be left alone.",
    ),
    cfg.StrOpt(
        "control_socket",
        default=f"{_S}/control.sock",
        help="Unix socket of the local control command (metaproxy ctl), mode "
        "0600: only metaproxy's user and root may use it.",
    ),
    cfg.FloatOpt(
        "nova_timeout",
        default=28,
        min=0.1,
        help="Seconds Nova has to answer a request; must be below haproxy's "
        "timeout server (32) so that metaproxy, not haproxy, answers the error.",
    ),
    cfg.FloatOpt("nova_connect_timeout", default=5, min=0.1, help="Seconds to connect to Nova."),
    cfg.IntOpt(
        "nova_pool_size",
        default=200,
        min=1,
        help="Idle keep-alive connections to Nova kept for reuse (idle ones close "
        "after 4 s); near nova_max_in_flight, or bursts open and close connections.",
    ),
    cfg.IntOpt(
        "nova_max_in_flight",
        default=200,
        min=1,
        help="Most requests in flight to Nova at once; more wait their turn.",
    ),
    cfg.IntOpt(
        "max_header_bytes",
        default=16384,
        min=1024,
        help="Largest request head (request line and headers) accepted, in bytes; larger gets 431.",
    ),
    cfg.IntOpt(
        "max_headers", default=100, min=8, help="Most request headers accepted; more gets 431."
    ),
    cfg.IntOpt(
        "max_body_bytes",
        default=65536,
        min=0,
        help="Largest request body accepted, in bytes; larger gets 413.",
    ),
    cfg.FloatOpt(
        "request_timeout",
        default=30,
        min=0.1,
        help="Seconds a client has to send a whole request; then it gets 408.",
    ),
    cfg.IntOpt(
        "retry_after",
        default=1,
        min=0,
        help="Retry-After seconds sent with a 503 (cloud-init retries).",
    ),
    cfg.BoolOpt(
        "gzip_decode",
        default=False,
        help="Decompress gzip bodies from Nova, as Neutron 2025.2 and later do. "
        "The default passes bodies through byte-exact.",
    ),
    cfg.ListOpt(
        "nova_metadata_endpoints",
        default=[],
        help="More Nova metadata API endpoints after the one of nova_metadata_host, "
        "nova_metadata_port and nova_metadata_protocol, comma separated: URLs "
        "(http://host:port, https://[v6addr]:port) or host:port (with "
        "nova_metadata_protocol). Requests go to the first healthy one; GET and HEAD "
        "requests fail over to the next when one cannot be reached. The TLS options "
        "apply to every https endpoint.",
    ),
    cfg.IntOpt(
        "nova_breaker_failures",
        default=5,
        min=1,
        help="Consecutive failures (unreachable or no answer in nova_timeout) after "
        "which an endpoint is left alone for nova_breaker_cooldown seconds; then one "
        "request probes it, and it is used again once one succeeds.",
    ),
    cfg.FloatOpt(
        "nova_breaker_cooldown",
        default=5,
        min=0.1,
        help="Seconds an endpoint is left alone after nova_breaker_failures; "
        "doubles while its probes fail, up to 12 times this.",
    ),
    cfg.IntOpt(
        "nova_max_queued",
        default=1000,
        min=0,
        help="Most requests waiting for one of nova_max_in_flight's slots (per "
        "endpoint); more get 503 with Retry-After at once instead of waiting.",
    ),
    cfg.IntOpt(
        "max_connections",
        default=16384,
        min=1,
        help="Most connections from the namespace proxies open at once, all sockets "
        "together; more are answered 503 with Retry-After and closed (keep it below "
        "the process's open-file limit).",
    ),
    cfg.IntOpt(
        "max_connections_per_namespace",
        default=2048,
        min=1,
        help="Most connections open at once on one namespace's own socket (haproxy "
        "opens at most its maxconn, 1024); more are answered 503 and closed. The "
        "shared socket carries every namespace and is bounded by max_connections.",
    ),
    cfg.StrOpt(
        "guest_forwarded_for",
        default="log",
        choices=["off", "log", "enforce"],
        help="A request that carried an X-Forwarded-For of its own (more than haproxy's "
        "one) came through a proxy inside the instance: off ignores it, log counts "
        "and logs it (at most one line per refusal_log_interval), enforce answers "
        "403 as well.",
    ),
    cfg.FloatOpt(
        "refusal_log_interval",
        default=60,
        min=0,
        help="Seconds between two log lines about guest-forwarded requests, rate "
        "limiting, full connection limits or a full Nova queue; the lines left out "
        "are counted in the next.",
    ),
    cfg.IntOpt(
        "rate_limit_max_sources",
        default=100000,
        min=1,
        help="Most sources (namespace, address) the rate limiter remembers; idle "
        "ones are forgotten after twice the longest window anyway.",
    ),
    cfg.ListOpt(
        "metrics_listen",
        default=[],
        help="Where to serve /metrics (Prometheus text format) and /healthz, comma "
        "separated: HOST:PORT or PORT (TCP; a bare port binds 127.0.0.1 only, "
        "IPv6 as [::1]:PORT) and/or unix:PATH (mode 0660). Never an address "
        "instances can reach. Empty: off.",
    ),
    cfg.FloatOpt(
        "health_probe_interval",
        default=10,
        min=1,
        help="Seconds between the /healthz probes of Nova (a GET / on the "
        "metadata API, which needs no instance).",
    ),
    cfg.FloatOpt(
        "drain_timeout",
        default=20,
        min=0,
        help="On SIGTERM: stop accepting, then let the requests in flight finish "
        "for at most this many seconds before exiting (status 0). Keep it below "
        "systemd's TimeoutStopSec.",
    ),
    cfg.IntOpt(
        "log_rate_limit",
        default=20,
        min=0,
        help="Most log lines about failed or refused requests of one kind per 10 "
        "seconds; past it they are counted, and one line per kind says how many "
        "were left out. 0: no limit.",
    ),
]
