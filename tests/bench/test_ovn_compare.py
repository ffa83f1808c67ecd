"""The OVN comparison's plain parts: the two agents' configuration files, how a request
try is counted, the CPU and session bookkeeping, the fake Nova's table, the verdicts."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bench.fakes.nova.instances import instances_from_table
from bench.ovnsandbox.agents import cpu_delta
from bench.ovnsandbox.chassis_process import write_metaproxy_config
from bench.ovnsandbox.compare import AgentRun, Options, cidr_of, fleet_table, markdown
from bench.ovnsandbox.guests import outcome
from bench.ovnsandbox.nbrows import Network, VmPort
from bench.ovnsandbox.sessions import session_of, session_pids
from bench.ovnsandbox.upstream_agent import PRIVSEP_CONTEXTS, write_upstream_ovn_config
from metaproxy.config import load_settings


def read_ini(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read(path)
    return parser


def test_upstream_runs_as_root_without_sudo_and_each_privsep_context_has_its_helper(tmp_path):
    venv = Path("/opt/venv")
    conf, ini = write_upstream_ovn_config(
        tmp_path,
        venv_dir=venv,
        ovs_connection="unix:/tmp/mpovn-ab12/ovs.sock",
        sb_connection="tcp:127.0.0.1:6642",
        nova_port=8775,
        secret="s3cr$t",
    )
    assert (conf.name, ini.name) == ("neutron.conf", "neutron_ovn_metadata_agent.ini")
    agent = read_ini(ini)
    assert agent.get("agent", "root_helper") == ""
    assert agent.get("ovs", "ovsdb_connection") == "unix:/tmp/mpovn-ab12/ovs.sock"
    assert agent.get("ovn", "ovn_sb_connection") == "tcp:127.0.0.1:6642"
    assert agent.get("DEFAULT", "nova_metadata_port") == "8775"
    assert agent.get("DEFAULT", "metadata_proxy_shared_secret") == "s3cr$$t"  # oslo's escape
    assert agent.get("DEFAULT", "metadata_proxy_socket").startswith(str(tmp_path))
    expected = f"/opt/venv/bin/privsep-helper --config-file {conf} --config-file {ini}"
    assert len(PRIVSEP_CONTEXTS) == 6
    for context in (
        "privsep",
        "privsep_link",
        "privsep_namespace",
        "privsep_ovs_vsctl",
        "privsep_conntrack",
        "privsep_dhcp_release",
    ):
        assert agent.get(context, "helper_command") == expected
    neutron = read_ini(conf)
    assert neutron.get("DEFAULT", "state_path") == str(tmp_path / "state")
    assert (tmp_path / "state" / "lock").is_dir()


def test_a_run_directory_too_deep_for_upstreams_socket_is_refused(tmp_path):
    with pytest.raises(ValueError, match="too long for a Unix socket"):
        write_upstream_ovn_config(
            tmp_path / ("d" * 100),
            venv_dir=Path("/opt/venv"),
            ovs_connection="unix:/x",
            sb_connection="tcp:127.0.0.1:1",
            nova_port=1,
            secret="s",
        )


def test_the_chassis_process_configuration_is_one_metaproxy_accepts_with_ovn_lookups():
    short = Path(tempfile.mkdtemp(prefix="mpt-", dir="/tmp"))  # socket paths under it
    path = short / "metaproxy.ini"
    write_metaproxy_config(
        path,
        state_path=str(short / "s"),
        sb_connection="tcp:127.0.0.1:6642",
        nova_port=8775,
        secret="a$b",
    )
    try:
        settings = load_settings([str(path)], [])
    finally:
        shutil.rmtree(short)
    assert settings.lookup_backend == "ovn"
    assert settings.ovn_sb_connection == "tcp:127.0.0.1:6642"
    assert settings.metadata_proxy_shared_secret == "a$b"


@pytest.mark.parametrize(
    ("status", "path", "kind"),
    [
        (200, "/openstack", "answered"),
        (404, "/openstack/2018-08-27/user_data", "answered"),  # no user data: fine
        (404, "/openstack/2018-08-27/meta_data.json", "status 404"),
        (503, "/openstack", "503"),
        (502, "/latest/meta-data/", "status 502"),
    ],
)
def test_a_request_try_is_answered_503_or_other(status, path, kind):
    assert outcome(status, path) == kind


def test_a_request_without_answer_is_counted_by_its_error():
    assert outcome(None, "/openstack", ConnectionRefusedError()) == "ConnectionRefusedError"
    assert outcome(None, "/openstack", TimeoutError()) == "TimeoutError"


def test_cpu_delta_counts_a_new_process_whole_and_a_gone_one_not_at_all():
    before = {1: 10.0, 2: 5.0, 3: 1.0}
    after = {1: 12.5, 2: 5.0, 4: 0.75}
    assert cpu_delta(before, after) == pytest.approx(3.25)


def test_session_pids_finds_a_reparented_member_and_not_the_rest():
    leader = subprocess.Popen(
        [sys.executable, "-c", "import os,time\nif os.fork()==0: time.sleep(30)\n"],
        start_new_session=True,
    )
    leader.wait(10)  # the leader is gone; its child lives on, re-parented, same session
    members = session_pids(leader.pid)
    try:
        assert len(members) == 1
        [child] = members
        assert session_of(child) == leader.pid
        assert session_of(1) != leader.pid
    finally:
        for pid in members:
            subprocess.run(["kill", str(pid)])


def test_fleet_table_gives_the_fake_nova_every_instance_with_its_project():
    net = Network(id="ab12" + "0" * 32, cidr=cidr_of(3))
    ports = [VmPort(net, net.host(11)), VmPort(net, net.host(12), project_id="p2")]
    records = instances_from_table(fleet_table(ports))
    assert set(records) == {p.device_id for p in ports}
    assert records[ports[1].device_id].project_id == "p2"
    assert records[ports[0].device_id].local_ipv4 == "10.100.3.11"
    assert records[ports[0].device_id].public_keys  # cloud-init's key crawl is part of a boot


def test_cidr_of_gives_distinct_subnets_past_250_networks():
    assert cidr_of(0) == "10.100.0.0/24"
    assert cidr_of(249) == "10.100.249.0/24"
    assert cidr_of(250) == "10.101.0.0/24"


def run_of(agent: str, **figures) -> AgentRun:
    run = AgentRun(agent, Options(networks=2))
    for name, value in figures.items():
        setattr(run, name, value)
    return run


def test_the_report_says_which_targets_are_met():
    metaproxy = run_of(
        "metaproxy",
        outcomes={"answered": 1000},
        agent_cpu_s=0.2,
        bind_s=[0.1, 0.2, 0.3],
        serving_s={"a": 0.5, "b": 1.5},
        processes_per_network=0.0,
    )
    upstream = run_of(
        "upstream",
        outcomes={"answered": 500, "503": 400, "ConnectionResetError": 3},
        agent_cpu_s=2.0,
        bind_s=[1.0],
        serving_s={"a": 7.0, "b": 9.0},
        processes_per_network=1.0,
    )
    text = markdown([metaproxy, upstream], "cmd")
    assert "| 503 | 0 | 400 |" in text
    assert "| other | 0 | 3 {'ConnectionResetError': 3} |" in text
    assert "| start -> every network serving | 1.50 s | 9.00 s |" in text
    assert "| node CPU per answered request | 0.20 ms | 4.00 ms |" in text
    # 0.2 ms against 4 ms is 1/20: met, exactly at the target
    assert "metaproxy / upstream: 1/20.0 (target <= 1/20): met" in text
    assert "503s under the storm: 0 (target 0): met" in text
    assert "binding -> answering p99: 300 ms (target <= 500 ms): met" in text
    assert "start -> every network serving: 1.50 s (target <= 2 s): met" in text


def test_the_report_says_when_a_target_is_missed():
    metaproxy = run_of(
        "metaproxy",
        outcomes={"answered": 100, "503": 1},
        agent_cpu_s=0.1,
        bind_s=[0.7],
        serving_s={"a": 3.0},
        processes_per_network=0.0,
    )
    upstream = run_of("upstream", outcomes={"answered": 100}, agent_cpu_s=0.5)
    text = markdown([metaproxy, upstream], "cmd")
    assert "1/5.0 (target <= 1/20): not met" in text
    assert "503s under the storm: 1 (target 0): not met" in text
    assert "p99: 700 ms (target <= 500 ms): not met" in text
    # one network of two answered: not every network served
    assert "| start -> every network serving | - | - |" in text
    assert "| agent failure | none | none |" in text


def test_the_report_names_an_agent_failure_by_its_first_line():
    upstream = run_of("upstream", agent_failure="not every network served\ntraceback...")
    text = markdown([upstream], "cmd")
    assert "| agent failure | not every network served |" in text


def test_the_report_says_when_the_storm_is_not_the_one_the_bar_was_set_on():
    def report(boots_per_vm: int) -> str:
        runs = []
        for agent, cpu in (("metaproxy", 0.1), ("upstream", 3.0)):
            run = AgentRun(agent, Options(networks=2, boots_per_vm=boots_per_vm))
            run.outcomes = {"answered": 100}
            run.agent_cpu_s = cpu
            runs.append(run)
        return markdown(runs, "cmd")

    longer = report(10)
    assert "1/30.0 (target <= 1/20): met" in longer
    assert "this storm had 10 per VM" in longer
    assert "--boots-per-vm 1" in longer
    assert "boots-per-vm 1`;" not in report(1)
