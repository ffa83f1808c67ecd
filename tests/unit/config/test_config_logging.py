"""oslo.log's options: the ones metaproxy honours under oslo.log's names, defaults and
deprecated names, and one line refusing each one it does not implement when set."""

from __future__ import annotations

import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest
from oslo_log import _options as oslo_log_options

from metaproxy.config import ConfigError, default_settings, list_opts, load_settings


@pytest.fixture
def state():
    path = Path(tempfile.mkdtemp(prefix="mp", dir="/tmp"))
    (path / "metaproxy").mkdir()
    (path / "metaproxy" / "ports.json").write_text("[]\n")
    yield path
    shutil.rmtree(path)


def _config(state: Path, default: str, name: str = "agent.ini") -> str:
    path = state / name
    path.write_text(f"[DEFAULT]\nstate_path = {state}\n" + textwrap.dedent(default))
    return str(path)


def _refused(files: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(files, [])
    return str(info.value)


def _oslo_log_opt(name: str):
    return next(o for o in oslo_log_options.list_opts()[0][1] if o.dest == name)


# -- honoured ------------------------------------------------------------------------------

HONOURED = [
    "debug",
    "use_json",
    "log_file",
    "log_dir",
    "use_stderr",
    "use_journal",
    "use_syslog",
    "syslog_log_facility",
    "log_date_format",
]


@pytest.mark.parametrize("name", HONOURED)
def test_honoured_options_have_oslo_logs_name_type_default_and_deprecated_names(name):
    ours = next(o for _, opts in list_opts() for o in opts if o.dest == name)
    theirs = _oslo_log_opt(name)
    assert type(ours) is type(theirs)
    assert ours.default == theirs.default
    assert [d.name for d in ours.deprecated_opts] == [
        d.name.replace("-", "_") for d in theirs.deprecated_opts
    ]


def test_defaults_log_nowhere_special():
    s = default_settings()
    assert (s.log_file, s.log_dir, s.log_path) == (None, None, None)
    assert (s.use_stderr, s.use_journal, s.use_syslog) == (False, False, False)
    assert s.syslog_log_facility == "LOG_USER"


@pytest.mark.parametrize(
    "lines, path",
    [
        ("log_file = /var/log/neutron/metaproxy.log\n", "/var/log/neutron/metaproxy.log"),
        ("log_file = agent.log\nlog_dir = /var/log/neutron\n", "/var/log/neutron/agent.log"),
        ("log_dir = /var/log/neutron\n", "/var/log/neutron/metaproxy.log"),
        ("log_file = /abs.log\nlog_dir = /var/log/neutron\n", "/abs.log"),
        # oslo.log's deprecated names
        ("logfile = /var/log/old.log\n", "/var/log/old.log"),
        ("logdir = /var/log/old\n", "/var/log/old/metaproxy.log"),
    ],
)
def test_log_file_and_log_dir_combine_as_oslo_log_does(state, lines, path):
    assert load_settings([_config(state, lines)], []).log_path == path


def test_every_honoured_option_set_at_once_loads(state):
    s = load_settings(
        [
            _config(
                state,
                """
                debug = true
                use_json = true
                log_file = /var/log/neutron/metaproxy.log
                use_stderr = true
                use_journal = true
                use_syslog = true
                syslog_log_facility = local3
                log_date_format = %H:%M
                """,
            )
        ],
        [],
    )
    assert (s.debug, s.use_json, s.use_journal, s.use_syslog, s.use_stderr) == (True,) * 5
    assert s.syslog_log_facility == "local3"


def test_a_bad_facility_is_refused_when_syslog_or_journal_uses_it(state):
    text = _refused([_config(state, "use_syslog = true\nsyslog_log_facility = LOG_LOCAL9\n")])
    assert text.startswith(f"{state}/agent.ini: [DEFAULT] syslog_log_facility = 'LOG_LOCAL9': ")
    assert "'LOG_LOCAL9' is not a syslog facility" in text and "LOG_LOCAL0" in text
    assert "\n" not in text
    text = _refused([_config(state, "use_journal = true\nsyslog_log_facility = nope\n")])
    assert "syslog_log_facility" in text
    # unused, as in oslo.log: not checked
    load_settings([_config(state, "syslog_log_facility = nope\n")], [])


# -- refused -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, name, hint",
    [
        ("log_config_append = /etc/neutron/logging.conf", "log_config_append", "logrotate"),
        ("log_config = /etc/neutron/logging.conf", "log_config", "use_syslog"),
        ("log_rotation_type = size", "log_rotation_type", "contrib/metaproxy.logrotate"),
        ("log_rotation_type = Interval", "log_rotation_type", "SIGUSR1"),
        ("watch_log_file = true", "watch_log_file", "SIGUSR1"),
        ("use_eventlog = true", "use_eventlog", "use_journal"),
        ("logging_context_format_string = %(message)s", "logging_context_format_string", "json"),
        ("logging_default_format_string = %(message)s", "logging_default_format_string", "json"),
        ("logging_debug_format_suffix = x", "logging_debug_format_suffix", "use_json"),
        ("logging_exception_prefix = x", "logging_exception_prefix", "use_json"),
        ("logging_user_identity_format = x", "logging_user_identity_format", "use_json"),
        ("default_log_levels = amqp=DEBUG", "default_log_levels", "debug"),
        ("publish_errors = true", "publish_errors", "/healthz"),
        ("instance_format = [i %(uuid)s] ", "instance_format", "namespace"),
        ("instance_uuid_format = [i %(uuid)s] ", "instance_uuid_format", "namespace"),
        ("rate_limit_interval = 5", "rate_limit_interval", "log_rate_limit"),
        ("rate_limit_burst = 10", "rate_limit_burst", "log_rate_limit"),
        ("fatal_deprecations = true", "fatal_deprecations", "remove"),
        ("log_color = true", "log_color", "colour"),
        # a value oslo.config cannot even read is refused all the same
        ("watch_log_file = perhaps", "watch_log_file", "SIGUSR1"),
    ],
)
def test_an_unsupported_oslo_log_option_is_refused_in_one_line(state, line, name, hint):
    path = _config(state, line + "\n")
    text = _refused([path])
    assert text.startswith(f"{path}: [DEFAULT] {name} = ")
    assert "is not supported by metaproxy" in text
    assert hint in text
    assert "Fix: remove the line" in text
    assert "\n" not in text


@pytest.mark.parametrize(
    "line",
    [
        # oslo.log's defaults, written out: not "set"
        "log_rotation_type = none",
        "log_rotation_type = NONE",
        "watch_log_file = false",
        "publish_errors = false",
        "rate_limit_burst = 0",
        "instance_format = [instance: %(uuid)s] ",
        "log_config_append = ",
        # without log_rotation_type (or rate limiting) they do nothing in oslo.log either
        "max_logfile_size_mb = 50",
        "max_logfile_count = 3",
        "log_rotate_interval = 2",
        "log_rotate_interval_type = Hours",
        "rate_limit_except_level = ERROR",
    ],
)
def test_oslo_log_options_at_their_default_or_without_effect_are_accepted(state, line):
    load_settings([_config(state, line + "\n")], [])


def test_a_later_file_can_set_a_shared_option_back_to_its_default(state):
    """neutron.conf is shared with other agents: metadata_agent.ini can undo an option
    for metaproxy alone."""
    shared = _config(state, "log_rotation_type = size\nmax_logfile_size_mb = 10\n", "neutron.conf")
    assert "log_rotation_type" in _refused([shared])
    own = state / "metadata_agent.ini"
    own.write_text("[DEFAULT]\nlog_rotation_type = none\n")
    load_settings([shared, str(own)], [])


@pytest.mark.parametrize(
    "name",
    [
        "log_config_append",
        "log_rotation_type",
        "logging_context_format_string",
        "logging_default_format_string",
        "logging_debug_format_suffix",
        "logging_exception_prefix",
        "logging_user_identity_format",
        "default_log_levels",
        "publish_errors",
        "instance_format",
        "instance_uuid_format",
        "rate_limit_interval",
        "rate_limit_burst",
        "log_color",
        "fatal_deprecations",
    ],
)
def test_refused_options_are_registered_with_oslo_logs_defaults(state, name):
    """'Set' means 'not oslo.log's default': each upstream default, written out, loads."""
    theirs = _oslo_log_opt(name)
    value = theirs.default
    if value is None:
        value = ""  # unset: an empty line
    elif isinstance(value, list):
        value = ",".join(value)
    elif isinstance(value, bool):
        value = str(value).lower()
    # $ is oslo.config's interpolation: none of these defaults holds one
    load_settings([_config(state, f"{name} = {value}\n")], [])


def test_the_operations_page_names_every_refused_option():
    from metaproxy.config.log_options import UNSUPPORTED_LOG_OPTS

    page = (Path(__file__).resolve().parents[3] / "docs" / "operations.md").read_text()
    logs = page[page.index("\n## Logs\n") :]
    logs = logs[: logs.index("\n## ", 1)]
    for opt, _ in UNSUPPORTED_LOG_OPTS:
        assert f"`{opt.dest}`" in logs, opt.dest
