"""metaproxy.config: the OVN chassis mode's options ([ovs], [DEFAULT] agent_down_time,
[metaproxy] ovn_chassis) with the OVN metadata agent's names and defaults, how the mode
is switched on by an operator's unchanged neutron_ovn_metadata_agent.ini, and its checks."""

import shutil
import tempfile
from pathlib import Path

import pytest

from metaproxy.config import ConfigError, default_settings, load_settings


@pytest.fixture
def state():
    path = Path(tempfile.mkdtemp(prefix="mp", dir="/tmp"))
    (path / "metaproxy").mkdir()
    (path / "metaproxy" / "ports.json").write_text("{}")  # lookup_backend = table's
    yield path
    shutil.rmtree(path)


#: what neutron_ovn_metadata_agent.ini holds on a chassis (upstream's names only)
OVN_AGENT_INI = """\
[DEFAULT]
state_path = {state}
nova_metadata_host = 192.0.2.10
metadata_proxy_shared_secret = s3cret
[ovs]
ovsdb_connection = unix:/run/openvswitch/db.sock
[ovn]
ovn_sb_connection = tcp:192.0.2.21:6642
"""


def load(state: Path, text: str, *more: str):
    path = state / "agent.ini"
    path.write_text(text.format(state=state))
    files = [str(path)]
    for i, extra in enumerate(more):
        other = state / f"extra{i}.ini"
        other.write_text(extra)
        files.append(str(other))
    return load_settings(files, [])


def test_upstream_defaults_and_off_by_default() -> None:
    s = default_settings()
    assert (s.ovs_ovsdb_connection, s.ovs_ovsdb_connection_timeout, s.agent_down_time) == (
        "unix:/usr/local/var/run/openvswitch/db.sock",
        180,
        75,
    )
    assert s.ovn_chassis is False


def test_the_ovn_agents_own_file_turns_the_mode_on_with_ovn_lookups(state) -> None:
    s = load(state, OVN_AGENT_INI, "[DEFAULT]\nagent_down_time = 30\n")
    assert s.ovn_chassis is True and s.lookup_backend == "ovn"
    assert s.ovs_ovsdb_connection == "unix:/run/openvswitch/db.sock"
    assert s.ovn_sb_connection == "tcp:192.0.2.21:6642"
    assert s.agent_down_time == 30


@pytest.mark.parametrize(
    "text",
    [
        # only one of the two connections: not an OVN metadata agent's file
        "[DEFAULT]\nstate_path = {state}\n[ovn]\novn_sb_connection = tcp:192.0.2.21:6642\n",
        "[DEFAULT]\nstate_path = {state}\n[ovs]\novsdb_connection = tcp:127.0.0.1:6640\n",
        # another lookup backend asked for
        OVN_AGENT_INI + "[metaproxy]\nlookup_backend = table\n",
        # switched off by name
        OVN_AGENT_INI + "[metaproxy]\novn_chassis = false\n",
    ],
)
def test_the_mode_stays_off(state, text) -> None:
    assert load(state, text).ovn_chassis is False


def test_switched_on_by_name_with_the_defaults(state) -> None:
    s = load(state, "[DEFAULT]\nstate_path = {state}\n[metaproxy]\novn_chassis = true\n")
    assert s.ovn_chassis is True and s.lookup_backend == "ovn"


def test_on_by_name_with_another_backend_is_refused(state) -> None:
    text = OVN_AGENT_INI + "[metaproxy]\novn_chassis = true\nlookup_backend = rpc\n"
    text += "[DEFAULT]\ntransport_url = rabbit://x\n"
    with pytest.raises(ConfigError) as e:
        load(state, text)
    message = str(e.value)
    assert (
        "lookup_backend" in message
        and "ovn_chassis" in message
        and "set lookup_backend = ovn" in message
    )


@pytest.mark.parametrize(
    "value, words",
    [
        ("db.sock", "ovsdb_connection"),
        ("ssl:127.0.0.1:6640", "ssl: is not supported"),
    ],
)
def test_a_bad_local_connection_is_refused_with_the_fix(state, value, words) -> None:
    text = OVN_AGENT_INI.replace("unix:/run/openvswitch/db.sock", value)
    with pytest.raises(ConfigError) as e:
        load(state, text)
    message = str(e.value)
    assert words in message and "[ovs]" in message and "unix:PATH" in message
