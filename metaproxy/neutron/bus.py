"""neutron-server's RPC bus, reached the way upstream's metadata agent reaches it.

Upstream's agent (docs/upstream.md, "RPC calls" and "State reports") makes two kinds of call
with oslo.messaging:

  - C{get_ports(context, filters=...)} as a C{call} on topic C{q-plugin}, version 1.0,
    namespace None (neutron's C{MetadataPluginAPI}, answered by neutron-server's
    C{MetadataRpcCallback});
  - C{report_state(context, agent_state={'agent_state': state}, time=...)} on topic
    C{q-reports-plugin}, version 1.4, namespace None (neutron's
    C{PluginReportStateAPI}): a C{call} for the first report, C{cast}s afterwards, each
    with the report interval as its timeout.

The context is neutron-lib's C{get_admin_context_without_session()} as its C{to_dict()}
serialises it (L{admin_context}): no user or project, C{is_admin} true, roles admin,
member and reader, a new request id. oslo.messaging is the library neutron-server itself
uses, so the messages are right by construction; it is imported only when a bus is used.

L{NeutronRpc} holds one transport, built from the operator's own configuration files
(so C{[oslo_messaging_rabbit]} and the other driver options apply, and no new
credentials are needed), with its blocking C{get_ports} and C{report_state}. Its
methods block: call them from a thread, never from the reactor.

A lookup must not wait on a call that is already lost, so C{get_ports} differs from
upstream's in three ways that change nothing neutron-server sees:

  - Each call has its own timeout (the caller's; L{metaproxy.resolve.rpc} keeps it a
    few seconds and tries again while the lookup's time lasts).
  - It is published with RabbitMQ's C{mandatory} flag (oslo.messaging's
    C{TransportOptions(at_least_once=True)}): a call that no queue takes (neutron-server
    has not subscribed again after a broker restart) comes back at once as
    C{MessageUndeliverable} instead of vanishing and being waited for.
  - The transport tries to reconnect every second or two while the broker is down
    (C{[oslo_messaging_rabbit] rabbit_interval_max} defaults to 1 here instead of 30;
    C{kombu_reconnect_delay}, 1 s, comes on top),
    so the queue of its replies is back as soon as the broker is; a value in the
    operator's files still wins.

oslo.messaging is imported by L{import_messaging}, without the deprecation warnings
eventlet prints when a library merely checks whether it is there: metaproxy runs
nothing on eventlet.
"""

from __future__ import annotations

import datetime
import uuid
import warnings
from types import ModuleType
from typing import Any

from oslo_config import cfg

from metaproxy.config import Settings

__all__ = [
    "TOPIC_PLUGIN",
    "TOPIC_REPORTS",
    "METADATA_RPC_VERSION",
    "REPORT_STATE_VERSION",
    "ISO8601_TIME_FORMAT",
    "NEUTRON_CONTROL_EXCHANGE",
    "admin_context",
    "report_time",
    "import_messaging",
    "messaging_conf",
    "rpc_timeout",
    "CLIENT_RECONNECT_DEFAULTS",
    "NeutronRpc",
]

#: neutron-lib's C{topics.PLUGIN} and C{topics.REPORTS}.
TOPIC_PLUGIN = "q-plugin"
TOPIC_REPORTS = "q-reports-plugin"
#: C{MetadataPluginAPI}'s and C{PluginReportStateAPI}'s target versions.
METADATA_RPC_VERSION = "1.0"
REPORT_STATE_VERSION = "1.4"
#: neutron-lib's C{constants.ISO8601_TIME_FORMAT}: the C{time} of a state report.
ISO8601_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def _utcnow() -> datetime.datetime:
    # naive UTC, as oslo.utils' timeutils.utcnow() gives neutron
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def admin_context(
    now: datetime.datetime | None = None, request_id: str | None = None
) -> dict[str, Any]:
    """neutron-lib's admin context without session, serialised as neutron sends it.

    @param now: its timestamp (naive UTC); default now.
    @param request_id: default a new C{req-<uuid>}.
    """
    return {
        "user": None,
        "project": None,
        "system_scope": None,
        "domain": None,
        "user_domain": None,
        "project_domain": None,
        "is_admin": True,
        "read_only": False,
        "show_deleted": False,
        "auth_token": None,
        "request_id": request_id or f"req-{uuid.uuid4()}",
        "global_request_id": None,
        "resource_uuid": None,
        "roles": ["admin", "member", "reader"],
        "user_identity": "- - - - -",
        "is_admin_project": True,
        "user_id": None,
        "project_id": None,
        "timestamp": str(now or _utcnow()),
        "project_name": None,
        "user_name": None,
        "has_global_access": True,
        "can_set_project_id": True,
    }


def report_time(now: datetime.datetime | None = None) -> str:
    """The C{time} argument of C{report_state}."""
    return (now or _utcnow()).strftime(ISO8601_TIME_FORMAT)


def import_messaging() -> ModuleType:
    """C{oslo_messaging}, imported without the deprecation warnings eventlet prints when
    it is imported: futurist imports it to see whether it is there, and oslo.service's
    default backend (whose classes oslo.messaging's servers derive from) imports it, but
    nothing monkey-patches or runs on it. metaproxy's calls run on its own threads, and
    RPC servers (the fake neutron-server) use the C{threading} executor."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
        warnings.filterwarnings("ignore", message=r"eventletutils module is deprecated")
        warnings.filterwarnings("ignore", message=r".*'oslo_service.eventlet_backdoor'")
        import oslo_messaging
    return oslo_messaging


#: neutron's default C{control_exchange} (C{neutron.common.config} calls
#: C{oslo_messaging.set_transport_defaults(control_exchange='neutron')} at import), so
#: neutron-server's RPC servers and every Neutron agent use the exchange C{neutron}, not
#: oslo.messaging's own default C{openstack}.
NEUTRON_CONTROL_EXCHANGE = "neutron"

#: (module, list of options named like their group) oslo.messaging registers globally.
_GLOBAL_ONLY_OPTS = (
    ("oslo_messaging._tracing.client", "oslo_messaging_tracing"),
    ("oslo_messaging._metrics.client", "oslo_messaging_metrics"),
)


def messaging_conf(config_files: tuple[str, ...] | list[str] = ()) -> cfg.ConfigOpts:
    """A private C{ConfigOpts} over C{config_files} for oslo.messaging's options (the
    driver registers its own, e.g. C{[oslo_messaging_rabbit]}, when the transport is made).

    Some oslo.messaging modules register options on the global C{cfg.CONF} only, yet
    read them from the transport's configuration (C{[oslo_messaging_tracing]},
    C{[oslo_messaging_metrics]}): they are registered here too.

    C{control_exchange} defaults to neutron's (L{NEUTRON_CONTROL_EXCHANGE}), as it does in
    neutron-server and upstream's agent: with oslo.messaging's default (C{openstack}) every
    call would go to an exchange no neutron-server consumes from, and time out. A value in
    C{config_files} still wins. Only this C{ConfigOpts} is changed (neutron changes the
    option's default for the whole process).
    """
    import importlib

    import_messaging()
    from oslo_messaging.opts import list_opts

    conf = cfg.ConfigOpts()
    for module, group in _GLOBAL_ONLY_OPTS:
        try:
            opts = getattr(importlib.import_module(module), group)
        except (ImportError, AttributeError):  # an oslo.messaging without them
            continue
        conf.register_opts(opts, group=group)
    # copies equal to the options the transport registers again (a no-op for equal options)
    conf.register_opts(
        [
            opt
            for group, opts in list_opts()
            if group is None
            for opt in opts
            if opt.name == "control_exchange"
        ]
    )
    conf.set_default("control_exchange", NEUTRON_CONTROL_EXCHANGE)
    conf(
        args=[],
        project="neutron",
        prog="metaproxy",
        use_env=False,
        default_config_files=list(config_files),
        default_config_dirs=[],
    )
    return conf


def rpc_timeout(s: Settings) -> float:
    """Seconds an RPC lookup may take: C{rpc_response_timeout}, capped by
    C{rpc_response_max_timeout} (Neutron's longest wait) and by C{nova_timeout}, so
    a slow neutron-server gets the instance metaproxy's 503, not haproxy's 504."""
    return float(max(1, min(s.rpc_response_timeout, s.rpc_response_max_timeout, s.nova_timeout)))


#: C{[oslo_messaging_rabbit]} defaults of metaproxy's own transports: try to reconnect
#: every second or two (oslo.messaging backs off to every 30 s), so that the replies' queue is
#: back, and lookups answered, as soon as the broker is.
CLIENT_RECONNECT_DEFAULTS = {"rabbit_interval_max": 1}


def _client_reconnect_defaults(conf: cfg.ConfigOpts) -> None:
    """Apply L{CLIENT_RECONNECT_DEFAULTS} to C{conf} (values in its files still win)."""
    from oslo_messaging.opts import list_opts

    for group, opts in list_opts():
        if group != "oslo_messaging_rabbit":
            continue
        conf.register_opts(
            [opt for opt in opts if opt.dest in CLIENT_RECONNECT_DEFAULTS], group=group
        )
        for name, value in CLIENT_RECONNECT_DEFAULTS.items():
            conf.set_default(name, value, group=group)


class NeutronRpc:
    """One oslo.messaging transport to neutron-server and the two calls upstream makes.

    Built from L{Settings} (C{transport_url} and the files it was read from); nothing
    connects until the first call. The calls block: run them in a thread.

    @param lookup_timeout: seconds C{get_ports} waits for its answer unless told.
    @param report_timeout: seconds a C{report_state} waits (upstream: the interval).
    @param lookup_retry: reconnection attempts of one C{get_ports} when the bus is down
        (oslo.messaging's C{retry}; None: for ever). Each lookup tries again, so a bus
        that comes back is used at once, and a thread never waits on a dead bus for
        longer than a lookup may take.
    @param report_retry: the same for C{report_state}: with oslo.messaging's default
        (for ever) a report sent while the broker is down holds its thread until the
        broker is back, and the agent cannot stop meanwhile; a report that fails is
        logged and the next one is due an interval later anyway.
    @param reactor: when given, oslo.messaging's log goes through the process's
        L{metaproxy.neutron.buslog.BusLog} on this reactor (see L{on_reconnect}).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        lookup_timeout: float,
        report_timeout: float,
        lookup_retry: int | None = 1,
        report_retry: int | None = 1,
        reactor: Any = None,
    ) -> None:
        oslo_messaging = import_messaging()

        if not settings.transport_url:
            raise ValueError("NeutronRpc needs [DEFAULT] transport_url")
        self._messaging = oslo_messaging
        self.bus_log: Any = None
        if reactor is not None:
            from metaproxy.neutron.buslog import BusLog

            self.bus_log = BusLog.install(reactor)
        conf = messaging_conf(settings.config_files)
        _client_reconnect_defaults(conf)
        #: the exchange calls go to (neutron-server's: L{NEUTRON_CONTROL_EXCHANGE} unless
        #: the operator's files say otherwise), for messages that name the bus
        self.exchange: str = conf.control_exchange
        self.transport = oslo_messaging.get_rpc_transport(conf, url=settings.transport_url)
        serializer = oslo_messaging.NoOpSerializer()  # contexts are already dicts
        self._ports = oslo_messaging.get_rpc_client(
            self.transport,
            oslo_messaging.Target(topic=TOPIC_PLUGIN, version=METADATA_RPC_VERSION),
            serializer=serializer,
            transport_options=oslo_messaging.TransportOptions(at_least_once=True),
        ).prepare(version=METADATA_RPC_VERSION, timeout=lookup_timeout, retry=lookup_retry)
        self._reports = oslo_messaging.get_rpc_client(
            self.transport,
            oslo_messaging.Target(topic=TOPIC_REPORTS, version=REPORT_STATE_VERSION),
            serializer=serializer,
        ).prepare(timeout=report_timeout, retry=report_retry)

    @property
    def timeout_errors(self) -> tuple[type[BaseException], ...]:
        """A call that got no answer in its time."""
        return (self._messaging.MessagingTimeout,)

    @property
    def no_consumer_errors(self) -> tuple[type[BaseException], ...]:
        """A call no queue took: nothing consumes its topic (yet)."""
        return (self._messaging.MessageUndeliverable,)

    def on_reconnect(self, listener: Any) -> None:
        """Call C{listener(lost_since)} on the reactor when the bus is back after an
        outage (L{metaproxy.neutron.buslog.BusLog.add_listener}); nothing without a
        reactor."""
        if self.bus_log is not None:
            self.bus_log.add_listener(listener)

    def get_ports(
        self, filters: dict[str, Any], timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """neutron-server's ports matching C{filters} (blocks at most C{timeout} seconds
        for the answer, default C{lookup_timeout})."""
        client = self._ports if timeout is None else self._ports.prepare(timeout=timeout)
        return client.call(admin_context(), "get_ports", filters=filters)

    def report_state(self, agent_state: dict[str, Any], use_call: bool) -> Any:
        """Send one state report (blocks): a call when C{use_call}, otherwise a cast."""
        state = dict(agent_state, uuid=str(uuid.uuid4()))
        kwargs = {"agent_state": {"agent_state": state}, "time": report_time()}
        send = self._reports.call if use_call else self._reports.cast
        return send(admin_context(), "report_state", **kwargs)

    def close(self) -> None:
        """Close the transport's connections (blocks)."""
        self.transport.cleanup()
