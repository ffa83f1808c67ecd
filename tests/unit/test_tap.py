"""``twistd metaproxy``'s options: oslo.log's --log-file and --log-dir, the log's
destinations checked while options are parsed, and the systemd unit's log file."""

from __future__ import annotations

import re
import shlex
import shutil
import tempfile
from pathlib import Path

import pytest
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions

from metaproxy.tap import Options

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def short_dir():
    path = Path(tempfile.mkdtemp(prefix="mp-tap-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _config(directory: Path, default: str = "") -> str:
    (directory / "ports.json").write_text('{"routers": {}, "ports": [], "instances": {}}\n')
    path = directory / "agent.ini"
    path.write_text(
        f"[DEFAULT]\nstate_path = {directory}/s\n{default}"
        f"[metaproxy]\nlookup_table = {directory}/ports.json\n"
    )
    return str(path)


def _parse(args: list[str], twistd: dict | None = None) -> Options:
    options = Options()
    options.parent = twistd if twistd is not None else {"nodaemon": True, "logfile": None}
    options.parseOptions(args)
    return options


def test_under_twistd_the_log_file_option_is_the_destination(short_dir):
    """twistd parses its options, then ours: --log-file is where the lines go."""
    log = short_dir / "agent.log"
    twistd = ServerOptions()
    twistd.parseOptions(
        [
            "--nodaemon",
            "--pidfile=",
            "metaproxy",
            "--config-file",
            _config(short_dir),
            f"--log-file={log}",
        ]
    )
    setup = twistd.subOptions.log_setup
    assert setup.description == f"file {log}"
    setup.close()
    assert log.exists()


@pytest.mark.parametrize(
    "default, args, where",
    [
        ("", ["--log-file", "{d}/cli.log"], "{d}/cli.log"),
        ("log_file = {d}/conf.log\n", ["--log-file", "{d}/cli.log"], "{d}/cli.log"),
        ("log_file = {d}/conf.log\n", [], "{d}/conf.log"),
        ("", ["--log-dir", "{d}/logs"], "{d}/logs/metaproxy.log"),
        ("log_dir = {d}/logs\n", ["--log-file", "cli.log"], "{d}/logs/cli.log"),
        ("log_file = conf.log\n", ["--log-dir", "{d}/logs"], "{d}/logs/conf.log"),
        ("log_dir = {d}/elsewhere\n", ["--log-dir", "{d}/logs"], "{d}/logs/metaproxy.log"),
    ],
)
def test_command_line_wins_over_the_files_as_oslo_config_does(short_dir, default, args, where):
    (short_dir / "logs").mkdir()
    config = _config(short_dir, default.format(d=short_dir))
    options = _parse(["--config-file", config] + [a.format(d=short_dir) for a in args])
    path = where.format(d=short_dir)
    assert options.settings.log_path == path
    assert options.log_setup.description == f"file {path}"
    options.log_setup.close()


def test_a_log_file_that_cannot_be_opened_stops_the_start(short_dir):
    with pytest.raises(usage.UsageError) as info:
        _parse(["--config-file", _config(short_dir), "--log-file", f"{short_dir}/no/a.log"])
    assert f"cannot open the log file {short_dir}/no/a.log" in str(info.value)


def test_an_unsupported_oslo_log_option_stops_the_start(short_dir):
    config = _config(short_dir, "log_config_append = /etc/neutron/logging.conf\n")
    with pytest.raises(usage.UsageError) as info:
        _parse(["--config-file", config])
    text = str(info.value)
    assert f"{config}: [DEFAULT] log_config_append" in text and "not supported" in text


def test_the_units_log_file_is_the_one_logrotate_rotates():
    unit = (ROOT / "contrib" / "metaproxy.service").read_text()
    exec_start = re.search(r"^ExecStart=((?:.*\\\n)*.*)$", unit, re.M).group(1)
    args = shlex.split(exec_start.replace("\\\n", " "))
    assert "--logfile=-" not in args  # not both: the file is the destination
    (log_file,) = [a.split("=", 1)[1] for a in args if a.startswith("--log-file=")]
    assert args.index(f"--log-file={log_file}") > args.index("metaproxy")  # ours, not twistd's
    logrotate = (ROOT / "contrib" / "metaproxy.logrotate").read_text()
    assert re.search(rf"^{re.escape(log_file)} {{", logrotate, re.M)
    assert log_file.startswith("/var/log/neutron/")
