"""metaproxy.config: the [ovn] options (the OVN metadata agent's names and defaults) and
their start-up checks when lookup_backend = ovn."""

import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest

from metaproxy.config import ConfigError, default_settings, load_settings


@pytest.fixture
def state():
    path = Path(tempfile.mkdtemp(prefix="mp", dir="/tmp"))
    yield path
    shutil.rmtree(path)


def config(state: Path, ovn: str, backend: str = "ovn") -> list[str]:
    path = state / "agent.ini"
    path.write_text(
        f"[DEFAULT]\nstate_path = {state}\n[metaproxy]\nlookup_backend = "
        f"{backend}\n[ovn]\n" + textwrap.dedent(ovn)
    )
    return [str(path)]


def test_upstream_defaults() -> None:
    s = default_settings()
    assert (s.ovn_sb_connection, s.ovn_sb_private_key, s.ovn_sb_certificate, s.ovn_sb_ca_cert) == (
        "tcp:127.0.0.1:6642",
        "",
        "",
        "",
    )
    assert (s.ovsdb_connection_timeout, s.ovsdb_retry_max_interval, s.ovsdb_probe_interval) == (
        180,
        180,
        60000,
    )


def test_ovn_section_is_read(state) -> None:
    s = load_settings(
        config(
            state,
            """\
        ovn_sb_connection = unix:/run/ovn/ovnsb_db.sock
        ovsdb_probe_interval = 0
        ovsdb_connection_timeout = 30
        """,
        ),
        [],
    )
    assert s.lookup_backend == "ovn" and s.ovn_sb_connection == "unix:/run/ovn/ovnsb_db.sock"
    assert (s.ovsdb_probe_interval, s.ovsdb_connection_timeout) == (0, 30)


def test_bad_connection_string_names_file_option_and_fix(state) -> None:
    files = config(state, "ovn_sb_connection = tcp:sb.example:6642\n")
    with pytest.raises(ConfigError) as info:
        load_settings(files, [])
    text = str(info.value)
    assert text.startswith(f"{files[0]}: [ovn] ovn_sb_connection = 'tcp:sb.example:6642'")
    assert "not an IP address" in text and "Fix: write tcp:IP:PORT" in text


def test_a_bad_connection_string_is_ignored_with_another_backend(state) -> None:
    (state / "metaproxy").mkdir()
    (state / "metaproxy" / "ports.json").write_text("{}")
    s = load_settings(config(state, "ovn_sb_connection = nonsense\n", backend="table"), [])
    assert s.lookup_backend == "table"


def test_ssl_needs_the_three_files(state) -> None:
    with pytest.raises(
        ConfigError,
        match=r"\[ovn\] ovn_sb_private_key = '' .*uses ssl: and "
        r"needs the private key. Fix: set \[ovn\] ovn_sb_private_key",
    ):
        load_settings(config(state, "ovn_sb_connection = ssl:192.0.2.1:6642\n"), [])
    (state / "key.pem").write_text("k")
    (state / "cert.pem").write_text("c")
    with pytest.raises(
        ConfigError,
        match=r"ovn_sb_ca_cert = '/nowhere/ca.pem': CA "
        r"certificate '/nowhere/ca.pem' does not exist",
    ):
        load_settings(
            config(
                state,
                f"""\
            ovn_sb_connection = ssl:192.0.2.1:6642
            ovn_sb_private_key = {state}/key.pem
            ovn_sb_certificate = {state}/cert.pem
            ovn_sb_ca_cert = /nowhere/ca.pem
            """,
            ),
            [],
        )


def test_negative_probe_interval_is_refused(state) -> None:
    with pytest.raises(ConfigError, match=r"\[ovn\] ovsdb_probe_interval = '-1'.*>= 0"):
        load_settings(config(state, "ovsdb_probe_interval = -1\n"), [])
