"""The log's destinations for real: a file reopened after a rename, syslog and journald
through local Unix datagram sockets (the datagrams parsed here), and how oslo.log's
options and twistd's pick them."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import struct
import tempfile
import time

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from metaproxy.config import default_settings
from metaproxy.ops.log_destinations import (
    FileDestination,
    JournalDestination,
    LogDestinationError,
    StreamDestination,
    SyslogDestination,
    parse_facility,
)
from metaproxy.ops.logs import LogSetup

MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
#: 2023-11-14 22:13:20 UTC
WHEN = 1700000000.0


def _event(ns="metaproxy.pipeline", level=LogLevel.warn, fmt="No port for {address}", **fields):
    return dict(log_namespace=ns, log_level=level, log_format=fmt, log_time=WHEN, **fields)


@pytest.fixture
def sock_dir():
    path = tempfile.mkdtemp(prefix="mp-log-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _daemon(path: str) -> socket.socket:
    """A log daemon's socket: bound, datagrams, never blocking the test for long."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    return server


def _received(server: socket.socket) -> list[bytes]:
    out = []
    server.settimeout(0.2)
    try:
        while True:
            out.append(server.recv(1 << 20))
    except (TimeoutError, BlockingIOError):
        return out


def _parse_journal(datagram: bytes) -> dict[str, str]:
    """journald's native protocol, read as journald reads it."""
    fields: dict[str, str] = {}
    rest = datagram
    while rest:
        line, newline, after = rest.partition(b"\n")
        assert newline, f"field without a final newline: {rest!r}"
        if b"=" in line:
            name, _, value = line.partition(b"=")
            rest = after
        else:
            name = line
            (size,) = struct.unpack("<Q", after[:8])
            value = after[8 : 8 + size]
            assert after[8 + size : 9 + size] == b"\n"
            rest = after[9 + size :]
        fields[name.decode("ascii")] = value.decode("utf-8")
    return fields


# -- facilities -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, number",
    [
        ("LOG_USER", 1),
        ("user", 1),
        ("LOG_DAEMON", 3),
        ("log_local0", 16),
        ("local7", 23),
        ("LOCAL3", 19),
        ("LOG_AUTHPRIV", 10),
    ],
)
def test_facilities_as_oslo_log_accepts_them(name, number):
    assert parse_facility(name) == number


@pytest.mark.parametrize("name", ["local8", "LOG_", "", "syslogd", "16"])
def test_a_facility_that_does_not_exist_is_refused(name):
    with pytest.raises(ValueError, match="is not a syslog facility"):
        parse_facility(name)


# -- a file -----------------------------------------------------------------------------


def test_file_is_appended_to_and_reopened_after_a_rename(tmp_path):
    path = tmp_path / "agent.log"
    path.write_text("an older line\n")
    setup = LogSetup(Clock(), destinations=[FileDestination(str(path))])
    setup(_event(address="10.0.0.5"))
    path.rename(tmp_path / "agent.log.1")  # logrotate
    setup(_event(address="10.0.0.6"))  # still the renamed file: not reopened yet
    setup.reopen()
    setup(_event(address="10.0.0.7"))
    setup.close()
    old = (tmp_path / "agent.log.1").read_text().splitlines()
    assert old[0] == "an older line"
    assert len(old) == 3
    assert old[1].endswith("No port for 10.0.0.5") and old[2].endswith("No port for 10.0.0.6")
    assert "[metaproxy.pipeline#warn]" in old[1]
    new = path.read_text().splitlines()
    assert len(new) == 1 and new[0].endswith("No port for 10.0.0.7")


def test_a_file_that_cannot_be_opened_names_it_and_the_fix(tmp_path):
    with pytest.raises(LogDestinationError) as info:
        FileDestination(str(tmp_path / "missing" / "agent.log"))
    text = str(info.value)
    assert f"cannot open the log file {tmp_path}/missing/agent.log" in text
    assert "No such file or directory" in text and "Fix:" in text and "\n" not in text


def test_a_file_that_cannot_be_reopened_keeps_the_old_one(tmp_path):
    directory = tmp_path / "logs"
    directory.mkdir()
    destination = FileDestination(str(directory / "agent.log"))
    setup = LogSetup(Clock(), destinations=[destination])
    (directory / "agent.log").rename(tmp_path / "kept.log")
    directory.rmdir()  # nowhere to create the new file
    setup.reopen()
    setup(_event(address="10.0.0.9"))
    setup.close()
    assert (tmp_path / "kept.log").read_text().endswith("No port for 10.0.0.9\n")


# -- syslog -----------------------------------------------------------------------------


def _syslog_head(pri: int, when: float, tag: str) -> str:
    t = time.localtime(when)
    return (
        f"<{pri}>{MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:"
        f"{t.tm_sec:02d} {tag}[{os.getpid()}]: "
    )


def test_syslog_datagrams_carry_facility_priority_tag_and_message(sock_dir):
    path = os.path.join(sock_dir, "log")
    daemon = _daemon(path)
    destination = SyslogDestination(path, facility=parse_facility("local0"))
    setup = LogSetup(Clock(), destinations=[destination], debug=True)
    setup(_event(address="10.0.0.5"))  # warning
    setup(_event(ns="metaproxy.service", level=LogLevel.info, fmt="started"))
    setup(_event(ns="metaproxy.service", level=LogLevel.error, fmt="broke"))
    setup(_event(ns="metaproxy.service", level=LogLevel.debug, fmt="detail"))
    setup(_event(ns="metaproxy.service", level=LogLevel.critical, fmt="gone"))
    got = [d.decode() for d in _received(daemon)]
    # local0 is 16: PRI = 16 * 8 + severity (warning 4, info 6, error 3, debug 7, crit 2)
    assert got == [
        _syslog_head(132, WHEN, "metaproxy") + "[metaproxy.pipeline#warn] No port for 10.0.0.5",
        _syslog_head(134, WHEN, "metaproxy") + "[metaproxy.service#info] started",
        _syslog_head(131, WHEN, "metaproxy") + "[metaproxy.service#error] broke",
        _syslog_head(135, WHEN, "metaproxy") + "[metaproxy.service#debug] detail",
        _syslog_head(130, WHEN, "metaproxy") + "[metaproxy.service#critical] gone",
    ]
    assert destination.dropped == 0
    setup.close()
    daemon.close()


def test_syslog_with_use_json_sends_the_json_object(sock_dir):
    path = os.path.join(sock_dir, "log")
    daemon = _daemon(path)
    setup = LogSetup(Clock(), destinations=[SyslogDestination(path)], use_json=True)
    setup(_event(address="10.0.0.5", namespace="qrouter-r1"))
    (datagram,) = _received(daemon)
    head = _syslog_head(12, WHEN, "metaproxy")  # user (1) * 8 + warning (4)
    assert datagram.decode().startswith(head)
    record = json.loads(datagram.decode()[len(head) :])
    assert record["message"] == "No port for 10.0.0.5" and record["namespace"] == "qrouter-r1"
    setup.close()
    daemon.close()


def test_syslog_daemon_restarted_is_connected_to_again(sock_dir):
    path = os.path.join(sock_dir, "log")
    daemon = _daemon(path)
    now = [100.0]
    destination = SyslogDestination(path, monotonic=lambda: now[0])
    setup = LogSetup(Clock(), destinations=[destination])
    setup(_event(address="10.0.0.1"))
    assert len(_received(daemon)) == 1
    daemon.close()
    os.unlink(path)
    setup(_event(address="10.0.0.2"))  # nobody there: dropped, counted
    assert destination.dropped == 1
    daemon = _daemon(path)  # restarted
    setup(_event(address="10.0.0.3"))  # tried again within the second: not yet
    assert destination.dropped == 2 and _received(daemon) == []
    now[0] += 1.5
    setup(_event(address="10.0.0.4"))
    got = _received(daemon)
    assert len(got) == 1 and got[0].endswith(b"No port for 10.0.0.4")
    setup.close()
    daemon.close()


def test_syslog_never_waits_for_a_daemon_that_is_behind(sock_dir):
    path = os.path.join(sock_dir, "log")
    daemon = _daemon(path)  # never reads
    destination = SyslogDestination(path)
    setup = LogSetup(Clock(), destinations=[destination], rate_limit=0)
    started = time.monotonic()
    for n in range(5000):
        setup(_event(address=f"10.0.{n // 256}.{n % 256}"))
    assert time.monotonic() - started < 5
    assert destination.dropped > 0
    taken = len(_received(daemon))
    assert taken + destination.dropped == 5000
    setup.close()
    daemon.close()


def test_syslog_unreachable_at_start_is_refused(sock_dir):
    with pytest.raises(LogDestinationError) as info:
        SyslogDestination(os.path.join(sock_dir, "nothing"))
    text = str(info.value)
    assert f"cannot reach the syslog daemon at {sock_dir}/nothing" in text
    assert "use_syslog = false" in text and "\n" not in text


# -- journald ---------------------------------------------------------------------------


def test_journal_native_protocol_fields(sock_dir):
    path = os.path.join(sock_dir, "journal")
    daemon = _daemon(path)
    destination = JournalDestination(path, facility=parse_facility("LOG_LOCAL5"))
    setup = LogSetup(Clock(), destinations=[destination])
    setup(_event(address="10.0.0.5", namespace="qrouter-r1", status=404, obj=object()))
    (datagram,) = _received(daemon)
    fields = _parse_journal(datagram)
    assert fields["MESSAGE"] == "[metaproxy.pipeline#warn] No port for 10.0.0.5"
    assert fields["PRIORITY"] == "4"
    assert fields["SYSLOG_FACILITY"] == "21"
    assert fields["SYSLOG_IDENTIFIER"] == "metaproxy"
    assert fields["LOGGER_NAME"] == "metaproxy.pipeline"
    assert fields["LOGGER_LEVEL"] == "warn"
    assert fields["ADDRESS"] == "10.0.0.5" and fields["NAMESPACE"] == "qrouter-r1"
    assert fields["STATUS"] == "404"
    assert "OBJ" not in fields and not any(name.startswith("LOG_") for name in fields)
    setup.close()
    daemon.close()


def test_journal_multiline_values_take_the_binary_form(sock_dir):
    path = os.path.join(sock_dir, "journal")
    daemon = _daemon(path)
    setup = LogSetup(Clock(), destinations=[JournalDestination(path)])
    try:
        raise RuntimeError("the cause")
    except RuntimeError:
        failure = Failure()
    setup(
        _event(
            ns="metaproxy.service", level=LogLevel.error, fmt="Lookup broke", log_failure=failure
        )
    )
    (datagram,) = _received(daemon)
    # the binary form: NAME, newline, 64-bit little-endian length, value, newline
    assert b"\nMESSAGE\n" in b"\n" + datagram
    fields = _parse_journal(datagram)
    assert fields["MESSAGE"].startswith("[metaproxy.service#error] Lookup broke\n")
    assert "RuntimeError: the cause" in fields["MESSAGE"]
    assert "RuntimeError: the cause" in fields["EXCEPTION_INFO"]
    assert fields["PRIORITY"] == "3" and fields["SYSLOG_FACILITY"] == "1"
    setup.close()
    daemon.close()


def test_journal_unreachable_at_start_is_refused(sock_dir):
    with pytest.raises(LogDestinationError) as info:
        JournalDestination(os.path.join(sock_dir, "nothing"))
    assert "cannot reach the journald" in str(info.value)
    assert "use_journal = false" in str(info.value)


# -- which destinations: oslo.log's options and twistd's -----------------------------------


class _Paths:
    """Local syslog and journald sockets, and stand-ins for stdout and stderr."""

    def __init__(self, directory: str) -> None:
        self.syslog_path = os.path.join(directory, "log")
        self.journal_path = os.path.join(directory, "journal")
        self.syslog = _daemon(self.syslog_path)
        self.journal = _daemon(self.journal_path)
        self.stdout, self.stderr = io.StringIO(), io.StringIO()

    def setup(self, twistd: dict | None, **settings) -> LogSetup | None:
        return LogSetup.for_twistd(
            Clock(),
            twistd,
            default_settings(**settings),
            syslog_path=self.syslog_path,
            journal_path=self.journal_path,
            stdout=self.stdout,
            stderr=self.stderr,
        )

    def close(self) -> None:
        self.syslog.close()
        self.journal.close()


@pytest.fixture
def paths(sock_dir):
    p = _Paths(sock_dir)
    yield p
    p.close()


def _where(setup: LogSetup, paths: _Paths, tmp_path) -> dict[str, bool]:
    """Write one line; where did it land?"""
    setup(_event(ns="metaproxy.service", level=LogLevel.info, fmt="hello {n}", n=1))
    setup.close()
    landed = {
        "stdout": "hello 1" in paths.stdout.getvalue(),
        "stderr": "hello 1" in paths.stderr.getvalue(),
        "syslog": bool(_received(paths.syslog)),
        "journal": bool(_received(paths.journal)),
    }
    for log in sorted(tmp_path.rglob("*.log")):
        landed[str(log.relative_to(tmp_path))] = "hello 1" in log.read_text()
    return {k: v for k, v in landed.items() if v}


def test_not_under_twistd_there_is_no_observer(paths):
    assert paths.setup(None) is None


def test_nothing_set_with_nodaemon_is_stdout(paths, tmp_path):
    setup = paths.setup({"nodaemon": True, "logfile": None})
    assert setup.description == "standard output"
    assert _where(setup, paths, tmp_path) == {"stdout": True}


def test_daemonized_with_nothing_set_is_twistd_log(paths, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    setup = paths.setup({"nodaemon": False, "logfile": None})
    assert setup.description == f"file {tmp_path}/twistd.log"
    assert _where(setup, paths, tmp_path) == {"twistd.log": True}


@pytest.mark.parametrize(
    "log_file, log_dir, where",
    [
        ("agent.log", None, "agent.log"),
        ("agent.log", "d", "d/agent.log"),
        (None, "d", "d/metaproxy.log"),
    ],
)
def test_log_file_and_log_dir_as_oslo_log_combines_them(
    paths, tmp_path, monkeypatch, log_file, log_dir, where
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    setup = paths.setup({"nodaemon": True, "logfile": None}, log_file=log_file, log_dir=log_dir)
    assert setup.description == f"file {tmp_path}/{where}"
    assert _where(setup, paths, tmp_path) == {where: True}


def test_an_absolute_log_file_ignores_log_dir(paths, tmp_path):
    setup = paths.setup(
        {"nodaemon": True, "logfile": None},
        log_file=str(tmp_path / "abs.log"),
        log_dir=str(tmp_path / "elsewhere"),
    )
    assert _where(setup, paths, tmp_path) == {"abs.log": True}


def test_use_syslog_adds_syslog_and_keeps_stdout(paths, tmp_path):
    """As oslo.log: syslog does not take standard output's place."""
    setup = paths.setup({"nodaemon": True, "logfile": None}, use_syslog=True)
    assert _where(setup, paths, tmp_path) == {"stdout": True, "syslog": True}


def test_use_journal_replaces_stdout(paths, tmp_path):
    setup = paths.setup({"nodaemon": True, "logfile": None}, use_journal=True)
    assert setup.description == f"journald {paths.journal_path}"
    assert _where(setup, paths, tmp_path) == {"journal": True}


def test_use_stderr_replaces_stdout(paths, tmp_path):
    setup = paths.setup({"nodaemon": True, "logfile": None}, use_stderr=True)
    assert _where(setup, paths, tmp_path) == {"stderr": True}


def test_everything_at_once(paths, tmp_path):
    setup = paths.setup(
        {"nodaemon": True, "logfile": None},
        log_file=str(tmp_path / "a.log"),
        use_stderr=True,
        use_journal=True,
        use_syslog=True,
        syslog_log_facility="local2",
    )
    assert setup.description == (
        f"file {tmp_path}/a.log, standard error, journald {paths.journal_path}, "
        f"syslog {paths.syslog_path} (facility LOG_LOCAL2)"
    )
    assert _where(setup, paths, tmp_path) == {
        "a.log": True,
        "stderr": True,
        "journal": True,
        "syslog": True,
    }


def test_twistd_logfile_is_written_too(paths, tmp_path):
    """twistd's --logfile was asked for explicitly: it is a destination with log_file."""
    setup = paths.setup(
        {"nodaemon": True, "logfile": str(tmp_path / "t.log")}, log_file=str(tmp_path / "a.log")
    )
    assert _where(setup, paths, tmp_path) == {"a.log": True, "t.log": True}


def test_twistd_logfile_naming_the_same_file_writes_it_once(paths, tmp_path):
    setup = paths.setup(
        {"nodaemon": True, "logfile": str(tmp_path / "a.log")}, log_file=str(tmp_path / "a.log")
    )
    _where(setup, paths, tmp_path)
    assert (tmp_path / "a.log").read_text().count("hello 1") == 1


def test_twistd_logfile_dash_is_stdout_even_with_a_file(paths, tmp_path):
    setup = paths.setup({"nodaemon": True, "logfile": "-"}, log_file=str(tmp_path / "a.log"))
    assert _where(setup, paths, tmp_path) == {"a.log": True, "stdout": True}


def test_twistd_syslog_is_a_syslog_destination_with_its_prefix(paths, tmp_path):
    setup = paths.setup(
        {"nodaemon": True, "logfile": None, "syslog": True, "prefix": "mp"},
        syslog_log_facility="daemon",
    )
    setup(_event(ns="metaproxy.service", level=LogLevel.info, fmt="hello"))
    setup.close()
    (datagram,) = _received(paths.syslog)
    assert datagram.decode() == _syslog_head(30, WHEN, "mp") + "[metaproxy.service#info] hello"
    assert paths.stdout.getvalue() == ""


def test_an_unused_facility_is_not_read_and_a_bad_used_one_is_refused(paths, tmp_path):
    """As in oslo.log (and the configuration's check), only syslog and journald read it."""
    setup = paths.setup({"nodaemon": True, "logfile": None}, syslog_log_facility="nope")
    assert _where(setup, paths, tmp_path) == {"stdout": True}
    with pytest.raises(LogDestinationError, match="'nope' is not a syslog facility"):
        paths.setup({"nodaemon": True, "syslog": True}, syslog_log_facility="nope")


def test_a_destination_that_fails_closes_the_others(paths, tmp_path):
    with pytest.raises(LogDestinationError, match="cannot reach the syslog daemon"):
        LogSetup.for_twistd(
            Clock(),
            {"nodaemon": True},
            default_settings(log_file=str(tmp_path / "a.log"), use_syslog=True),
            syslog_path=str(tmp_path / "nothing"),
        )
    # the file was opened, then closed: no descriptor of ours still points at it
    fds = os.listdir("/proc/self/fd")
    assert not any(os.path.realpath(f"/proc/self/fd/{fd}") == str(tmp_path / "a.log") for fd in fds)


def test_a_stream_destination_survives_a_closed_stream():
    stream = io.StringIO()
    setup = LogSetup(Clock(), destinations=[StreamDestination(stream)])
    stream.close()
    setup(_event())  # no exception
