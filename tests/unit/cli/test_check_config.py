"""``metaproxy check-config``: the key values, never the secret, or what is wrong."""

from __future__ import annotations

import os

from metaproxy.cli import main
from tests.unit.cli.samples import SECRET


def test_check_config_ok_shows_key_values_and_never_the_secret(capsys, config_file, short_dir):
    assert main(["check-config", "--config-file", config_file]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "configuration OK"
    assert f"  metadata_proxy_socket: {short_dir}/state/metadata_proxy" in lines
    assert "  socket mode: 0664" in lines
    assert "  nova metadata url: http://[fd00::5]:8775" in lines
    assert f"  lookup backend: table ({short_dir}/ports.json)" in lines
    assert f"  control_socket: {short_dir}/control.sock" in lines
    assert "  metadata_proxy_shared_secret: set" in lines
    assert SECRET not in out


def test_check_config_says_where_the_log_goes(capsys, config_file, short_dir):
    assert main(["check-config", "--config-file", config_file]) == 0
    assert "  log: standard output (or the agent's --log-file, twistd's --logfile)" in (
        capsys.readouterr().out.splitlines()
    )
    extra = os.path.join(short_dir, "logging.ini")
    with open(extra, "w") as f:
        f.write(
            "[DEFAULT]\nlog_dir = /var/log/neutron\nuse_syslog = true\n"
            "syslog_log_facility = local0\nuse_json = true\n"
        )
    assert main(["check-config", "--config-file", config_file, "--config-file", extra]) == 0
    assert (
        "  log: file /var/log/neutron/metaproxy.log, syslog (local0), as JSON"
        in capsys.readouterr().out.splitlines()
    )


def test_check_config_reports_the_problem(capsys, config_file, short_dir):
    os.unlink(os.path.join(short_dir, "ports.json"))
    assert main(["check-config", "--config-file", config_file]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "lookup_table" in captured.err and "does not exist" in captured.err
    assert SECRET not in captured.err
    assert "Traceback" not in captured.err


def test_check_config_says_who_serves_the_routers(capsys, config_file, short_dir):
    assert main(["check-config", "--config-file", config_file]) == 0
    assert "  router namespaces: off (the L3 agent's haproxy serves them)" in (
        capsys.readouterr().out.splitlines()
    )
    extra = os.path.join(short_dir, "routers.ini")
    with open(extra, "w") as f:
        f.write("[metaproxy]\nrouter_namespaces = serve\n")
    assert main(["check-config", "--config-file", config_file, "--config-file", extra]) == 0
    (line,) = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("  router namespaces:")
    ]
    assert line.startswith("  router namespaces: served by metaproxy in every qrouter- namespace")
    assert "enable_metadata_proxy = False" in line and "CAP_NET_ADMIN" in line


def test_check_config_says_whether_this_is_the_chassis_ovn_metadata_agent(
    capsys, config_file, short_dir
):
    assert main(["check-config", "--config-file", config_file]) == 0
    assert "  OVN chassis mode: off" in capsys.readouterr().out.splitlines()
    ovn = os.path.join(short_dir, "neutron_ovn_metadata_agent.ini")
    with open(ovn, "w") as f:
        f.write(
            "[metaproxy]\nlookup_backend = ovn\n"
            "[ovs]\novsdb_connection = unix:/run/openvswitch/db.sock\n"
            "[ovn]\novn_sb_connection = tcp:192.0.2.21:6642\n"
        )
    assert main(["check-config", "--config-file", config_file, "--config-file", ovn]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  lookup backend: ovn" in lines
    assert (
        "  OVN chassis mode: on, in place of neutron-ovn-metadata-agent, listed as the OVN "
        "Metadata agent (Open_vSwitch at unix:/run/openvswitch/db.sock, "
        "Southbound at tcp:192.0.2.21:6642)"
    ) in lines


def test_check_config_names_the_neutron_ovn_agent_shape(capsys, config_file, short_dir):
    """neutron_ovn_agent.ini with metadata dropped from [agent] extensions: the mode is
    on by itself, in neutron-ovn-agent's place, on that agent's default local OVSDB."""
    agent_ini = os.path.join(short_dir, "neutron_ovn_agent.ini")
    with open(agent_ini, "w") as f:
        f.write("[agent]\nextensions = ovn-bgp\n[ovn]\novn_sb_connection = tcp:192.0.2.21:6642\n")
    assert main(["check-config", "--config-file", config_file, "--config-file", agent_ini]) == 0
    assert (
        "  OVN chassis mode: on, in place of neutron-ovn-agent's metadata extension, listed "
        "as its OVN Neutron agent (Open_vSwitch at tcp:127.0.0.1:6640, "
        "Southbound at tcp:192.0.2.21:6642)"
    ) in capsys.readouterr().out.splitlines()


def test_check_config_refuses_neutron_ovn_agent_still_serving_metadata(
    capsys, config_file, short_dir
):
    agent_ini = os.path.join(short_dir, "neutron_ovn_agent.ini")
    with open(agent_ini, "w") as f:
        f.write(
            "[agent]\nextensions = metadata,qos_hwol\n"
            "[ovn]\novn_sb_connection = tcp:192.0.2.21:6642\n"
        )
    assert main(["check-config", "--config-file", config_file, "--config-file", agent_ini]) == 2
    captured = capsys.readouterr()
    assert "configuration OK" not in captured.out
    assert f"{agent_ini}: [AGENT] extensions = 'metadata,qos_hwol'" in captured.err
    assert "remove metadata from [agent] extensions" in captured.err
    assert "(extensions = qos_hwol)" in captured.err
