"""oslo.log's options that metaproxy does not implement: refused when set.

metaproxy honours oslo.log's C{debug}, C{use_json}, C{log_file}, C{log_dir},
C{use_stderr}, C{use_journal}, C{use_syslog} and C{syslog_log_facility}
(L{metaproxy.config.agent_options.LOG_OPTS}) and accepts C{log_date_format} with no
effect. Every other oslo.log option changes what upstream agents log, or where, in a way
metaproxy would not: rather than ignore it silently, L{refuse_unsupported} stops the
start (and C{metaproxy check-config}) with one line naming it and what to use instead.

An option is "set" when its value differs from oslo.log's default: a line that writes
the default is accepted, so a file read after a shared neutron.conf (metadata_agent.ini)
can set an option back to its default for metaproxy alone. Options that upstream itself
ignores unless another one is set (the rotation sizes and intervals without
C{log_rotation_type}, C{rate_limit_except_level} without C{rate_limit_interval} and
C{rate_limit_burst}) are accepted: they do nothing there either.

The options are registered under oslo.log's names, types, defaults and deprecated names,
on the loader's private C{cfg.ConfigOpts} only; they are not in L{list_opts}, the sample
file or L{Settings}.
"""

from __future__ import annotations

from oslo_config import cfg

from metaproxy.config.errors import ConfigError, Sources

__all__ = [
    "UNSUPPORTED_LOG_OPTS",
    "ACCEPTED_LOG_OPTS",
    "register_log_options",
    "refuse_unsupported",
]

_ROTATION = (
    "rotation is logrotate's job: contrib/metaproxy.logrotate rotates log_file and sends "
    "SIGUSR1, on which metaproxy reopens it"
)
_FORMAT = (
    "metaproxy writes '<time> [<logger>#<level>] <message>' lines, or with use_json one "
    "JSON object per line"
)

#: (option as oslo.log registers it, why metaproxy refuses it and what to use instead)
UNSUPPORTED_LOG_OPTS: list[tuple[cfg.Opt, str]] = [
    (
        cfg.StrOpt("log_config_append", deprecated_name="log_config"),
        "metaproxy reads no Python logging configuration; choose where the log goes "
        "with log_file (or log_dir), use_syslog, use_journal or use_stderr, its level "
        f"with debug and its format with use_json; {_ROTATION}",
    ),
    (
        cfg.StrOpt("log_rotation_type", default="none", ignore_case=True),
        f"{_ROTATION} (contrib/metaproxy.logrotate)",
    ),
    (
        cfg.BoolOpt("watch_log_file", default=False),
        "metaproxy reopens log_file on SIGUSR1 or SIGHUP instead of watching it; "
        "contrib/metaproxy.logrotate sends SIGUSR1 after rotating",
    ),
    (
        cfg.BoolOpt("use_eventlog", default=False),
        "there is no Windows event log on Linux; use use_syslog or use_journal",
    ),
    (
        cfg.StrOpt(
            "logging_context_format_string",
            default="%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s "
            "[%(global_request_id)s %(request_id)s %(user_identity)s] "
            "%(instance)s%(message)s",
        ),
        _FORMAT,
    ),
    (
        cfg.StrOpt(
            "logging_default_format_string",
            default="%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s [-] "
            "%(instance)s%(message)s",
        ),
        _FORMAT,
    ),
    (
        cfg.StrOpt("logging_debug_format_suffix", default="%(funcName)s %(pathname)s:%(lineno)d"),
        _FORMAT,
    ),
    (
        cfg.StrOpt(
            "logging_exception_prefix",
            default="%(asctime)s.%(msecs)03d %(process)d ERROR %(name)s %(instance)s",
        ),
        f"{_FORMAT}; a traceback follows its line",
    ),
    (
        cfg.StrOpt(
            "logging_user_identity_format",
            default="%(user)s %(project)s %(domain)s %(system_scope)s %(user_domain)s "
            "%(project_domain)s",
        ),
        f"{_FORMAT}; there is no request context to show",
    ),
    (
        cfg.ListOpt(
            "default_log_levels",
            default=[
                "amqp=WARN",
                "boto=WARN",
                "sqlalchemy=WARN",
                "suds=INFO",
                "oslo.messaging=INFO",
                "oslo_messaging=INFO",
                "iso8601=WARN",
                "requests.packages.urllib3.connectionpool=WARN",
                "urllib3.connectionpool=WARN",
                "websocket=WARN",
                "requests.packages.urllib3.util.retry=WARN",
                "urllib3.util.retry=WARN",
                "keystonemiddleware=WARN",
                "routes.middleware=WARN",
                "stevedore=WARN",
                "taskflow=WARN",
                "keystoneauth=WARN",
                "oslo.cache=INFO",
                "oslo_policy=INFO",
                "dogpile.core.dogpile=INFO",
            ],
        ),
        "metaproxy has one log level for all its lines: info, or everything with debug",
    ),
    (
        cfg.BoolOpt("publish_errors", default=False),
        "metaproxy sends no error notifications; watch /healthz and /metrics "
        "([metaproxy] metrics_listen) instead",
    ),
    (
        cfg.StrOpt("instance_format", default="[instance: %(uuid)s] "),
        f"{_FORMAT}, naming the namespace and the caller's address",
    ),
    (
        cfg.StrOpt("instance_uuid_format", default="[instance: %(uuid)s] "),
        f"{_FORMAT}, naming the namespace and the caller's address",
    ),
    (
        cfg.IntOpt("rate_limit_interval", default=0),
        "metaproxy limits its log lines with [metaproxy] log_rate_limit",
    ),
    (
        cfg.IntOpt("rate_limit_burst", default=0),
        "metaproxy limits its log lines with [metaproxy] log_rate_limit",
    ),
    (
        cfg.BoolOpt("fatal_deprecations", default=False),
        "metaproxy has no deprecated features to make fatal",
    ),
    (
        cfg.BoolOpt("log_color", default=False),
        "metaproxy writes no colour codes",
    ),
]

#: oslo.log's options that do nothing unless a refused one is set, upstream as here:
#: accepted whatever their value.
ACCEPTED_LOG_OPTS: list[cfg.Opt] = [
    cfg.IntOpt("max_logfile_size_mb", default=200),
    cfg.IntOpt("max_logfile_count", default=30),
    cfg.IntOpt("log_rotate_interval", default=1),
    cfg.StrOpt("log_rotate_interval_type", default="days", ignore_case=True),
    cfg.StrOpt("rate_limit_except_level", default="CRITICAL"),
]


def register_log_options(conf: cfg.ConfigOpts) -> None:
    """Register the refused and the accepted oslo.log options on C{conf}."""
    conf.register_opts([opt for opt, _ in UNSUPPORTED_LOG_OPTS] + ACCEPTED_LOG_OPTS)


def _normal(opt: cfg.Opt, value: object) -> object:
    """A value as it compares with the default: a file cannot hold surrounding blanks
    (the default of instance_format ends with one), oslo.log treats an empty string as
    unset, and some options ignore case."""
    if not isinstance(value, str):
        return value
    value = value.strip()
    if getattr(opt.type, "ignore_case", False):
        value = value.lower()
    return value or None


def _where(sources: Sources, opt: cfg.Opt) -> tuple[str, str, str] | None:
    """(file, name as written, value as written) of the line that set C{opt}, its
    deprecated names included."""
    for name in [opt.dest] + [d.name for d in opt.deprecated_opts if d.name]:
        found = sources.where("DEFAULT", name)
        if found is not None:
            return found[0], name, found[1]
    return None


def refuse_unsupported(conf: cfg.ConfigOpts, sources: Sources) -> None:
    """Raise one L{ConfigError} for the first refused option whose value is not
    oslo.log's default (registered with L{register_log_options}).

    @raise ConfigError: names the file, the option, the value, and what to use instead.
    """
    for opt, instead in UNSUPPORTED_LOG_OPTS:
        try:
            value = conf[opt.dest]
        except (cfg.Error, ValueError):
            value = None  # not even a valid value: refused all the same
        else:
            if _normal(opt, value) == _normal(opt, opt.default):
                continue
        found = _where(sources, opt)
        if found is not None:
            head = f"{found[0]}: [DEFAULT] {found[1]} = {found[2]!r}"
        else:
            head = f"[DEFAULT] {opt.dest} = {value!r}"
        raise ConfigError(
            f"{head}: oslo.log's {opt.dest} is not supported by metaproxy: {instead}. "
            f"Fix: remove the line (or set it back to oslo.log's default in a file read "
            "after it, such as metadata_agent.ini)."
        )
