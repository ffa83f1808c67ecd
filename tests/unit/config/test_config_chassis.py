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


# -- the neutron-ovn-agent shape ----------------------------------------------------

#: neutron_ovn_agent.ini on a chassis that also runs another extension, with metadata
#: dropped from [agent] extensions (upstream's names only)
NEUTRON_OVN_AGENT_INI = """\
[DEFAULT]
state_path = {state}
nova_metadata_host = 192.0.2.10
metadata_proxy_shared_secret = s3cret
[agent]
extensions = ovn-bgp
[ovn]
ovn_sb_connection = tcp:192.0.2.21:6642
"""


def load_named(state: Path, name: str, text: str):
    path = state / name
    path.write_text(text.format(state=state))
    return load_settings([str(path)], [])


def test_the_metadata_agents_file_is_the_metadata_agent_shape(state) -> None:
    s = load(state, OVN_AGENT_INI)
    assert s.ovn_agent_shape == "neutron-ovn-metadata-agent"
    assert s.agent_extensions == ()


def test_agent_extensions_set_is_the_neutron_ovn_agent_shape_and_turns_the_mode_on(state) -> None:
    # neutron-ovn-agent's own [ovs] ovsdb_connection default is tcp:127.0.0.1:6640
    # (its ovsdb_api options), so its file need not set it for the mode to start
    s = load(state, NEUTRON_OVN_AGENT_INI)
    assert s.ovn_agent_shape == "neutron-ovn-agent"
    assert s.agent_extensions == ("ovn-bgp",)
    assert s.ovn_chassis is True and s.lookup_backend == "ovn"
    assert s.ovs_ovsdb_connection == "tcp:127.0.0.1:6640"


def test_an_ovsdb_connection_the_file_sets_is_kept_in_the_neutron_ovn_agent_shape(state) -> None:
    s = load(state, NEUTRON_OVN_AGENT_INI, "[ovs]\novsdb_connection = unix:/run/ovs/db.sock\n")
    assert s.ovs_ovsdb_connection == "unix:/run/ovs/db.sock"


def test_an_empty_extensions_list_is_still_the_neutron_ovn_agent_shape(state) -> None:
    s = load(state, NEUTRON_OVN_AGENT_INI.replace("extensions = ovn-bgp", "extensions ="))
    assert (s.ovn_agent_shape, s.agent_extensions, s.ovn_chassis) == (
        "neutron-ovn-agent",
        (),
        True,
    )


def test_the_file_named_neutron_ovn_agent_ini_is_that_shape_without_extensions(state) -> None:
    text = NEUTRON_OVN_AGENT_INI.replace("[agent]\nextensions = ovn-bgp\n", "")
    assert load(state, text).ovn_agent_shape == "neutron-ovn-metadata-agent"
    assert load_named(state, "neutron_ovn_agent.ini", text).ovn_agent_shape == "neutron-ovn-agent"


@pytest.mark.parametrize("extensions", ["metadata", "ovn-bgp, metadata", "metadata,qos_hwol"])
def test_metadata_still_in_the_extensions_is_refused(state, extensions) -> None:
    text = NEUTRON_OVN_AGENT_INI.replace("extensions = ovn-bgp", f"extensions = {extensions}")
    with pytest.raises(ConfigError) as e:
        load(state, text)
    message = str(e.value)
    assert message.startswith(f"{state / 'agent.ini'}: [AGENT] extensions = {extensions!r}:")
    assert "both would provision the ovnmeta- namespaces" in message
    assert "remove metadata from [agent] extensions in neutron_ovn_agent.ini" in message
    assert "ovn_chassis = false" in message


def test_metadata_in_the_extensions_with_the_mode_off_by_name_is_accepted(state) -> None:
    text = NEUTRON_OVN_AGENT_INI.replace("extensions = ovn-bgp", "extensions = metadata")
    s = load(state, text, "[metaproxy]\novn_chassis = false\nlookup_backend = ovn\n")
    assert s.ovn_chassis is False and s.agent_extensions == ("metadata",)


def test_neutron_ovn_agent_file_without_a_southbound_leaves_the_mode_off(state) -> None:
    text = NEUTRON_OVN_AGENT_INI.replace("[ovn]\novn_sb_connection = tcp:192.0.2.21:6642\n", "")
    assert load(state, text).ovn_chassis is False


def test_external_pids_follows_state_path_as_upstreams(state) -> None:
    assert load(state, OVN_AGENT_INI).external_pids == f"{state}/external/pids"
    s = load(state, OVN_AGENT_INI, "[DEFAULT]\nexternal_pids = /run/neutron/pids\n")
    assert s.external_pids == "/run/neutron/pids"
