"""``metaproxy haproxy-config``: the rendered configuration, its options, its user errors."""

from __future__ import annotations

import grp
import os
import pwd

import pytest

from metaproxy.cli import main
from metaproxy.config import default_settings
from tests.unit.cli.samples import DHCP, OVN, ROUTER


def _server_lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.strip().startswith("server ")]


def test_haproxy_config_defaults_to_the_namespace_socket(capsys):
    assert main(["haproxy-config", ROUTER]) == 0
    out = capsys.readouterr().out
    defaults = default_settings()
    assert _server_lines(out) == [f"server metadata {defaults.namespace_socket_dir}/{ROUTER}.sock"]
    router_id = ROUTER.removeprefix("qrouter-")
    assert f"    pidfile     {defaults.state_path}/external/pids/{router_id}.pid.haproxy\n" in out
    assert f"    user        {pwd.getpwuid(os.geteuid()).pw_name}\n" in out
    assert f"    group       {grp.getgrgid(os.getegid()).gr_name}\n" in out
    assert "    bind 0.0.0.0:9697\n" in out
    assert f"    http-request set-header X-Neutron-Router-ID {router_id}\n" in out


def test_haproxy_config_from_a_config_file(capsys, config_file, short_dir):
    assert main(["haproxy-config", DHCP, "--config-file", config_file]) == 0
    out = capsys.readouterr().out
    assert _server_lines(out) == [f"server metadata {short_dir}/ns/{DHCP}.sock"]
    net_id = DHCP.removeprefix("qdhcp-")
    assert f"    pidfile     {short_dir}/state/external/pids/{net_id}.pid.haproxy\n" in out
    assert "    user        root\n" in out
    assert f"    group       {grp.getgrgid(0).gr_name}\n" in out  # gid 0 resolved to its name
    assert "    bind 169.254.169.254:80\n" in out

    assert main(["haproxy-config", DHCP, "--config-file", config_file, "--shared"]) == 0
    out = capsys.readouterr().out
    assert _server_lines(out) == [f"server metadata {short_dir}/state/metadata_proxy"]


def test_haproxy_config_shared_socket_with_defaults(capsys):
    assert main(["haproxy-config", OVN, "--shared"]) == 0
    out = capsys.readouterr().out
    assert _server_lines(out) == [f"server metadata {default_settings().metadata_proxy_socket}"]
    assert f"    http-request add-header X-OVN-Network-ID {OVN.removeprefix('ovnmeta-')}\n" in out


def test_haproxy_config_explicit_values(capsys):
    me = pwd.getpwuid(os.geteuid()).pw_name
    argv = [
        "haproxy-config",
        DHCP,
        "--socket",
        "/run/mp/x.sock",
        "--ipv6-interface",
        "tap9a8b7c6d-5e",
        "--pidfile",
        "/run/mp/x.pid",
        "--user",
        str(os.geteuid()),
        "--group",
        str(os.getegid()),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert _server_lines(out) == ["server metadata /run/mp/x.sock"]
    assert "    bind [fe80::a9fe:a9fe]:80 interface tap9a8b7c6d-5e\n" in out
    assert "    pidfile     /run/mp/x.pid\n" in out
    assert f"    user        {me}\n" in out


def test_haproxy_config_router_options(capsys):
    assert main(["haproxy-config", ROUTER, "--bind-v6-any", "--metadata-port", "9700"]) == 0
    assert "    bind :::9700\n" in capsys.readouterr().out


def test_haproxy_config_rate_limiting(capsys):
    assert (
        main(
            [
                "haproxy-config",
                OVN,
                "--rate-limit-base",
                "30/60",
                "--rate-limit-burst",
                "3/5",
                "--rate-limit-ip-version",
                "6",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "    stick-table type ipv6 size 10k expire 60s store http_req_rate(60s)\n" in out
    assert "    stick-table type ipv6 size 10k expire 60s store http_req_rate(5s)\n" in out
    assert "if { src_http_req_rate(base_rate_limiter) gt 30 }\n" in out
    assert "if { src_http_req_rate(burst_rate_limiter) gt 3 }\n" in out

    # Only a burst window: the base window takes Neutron's default 10/10, type ip.
    assert main(["haproxy-config", OVN, "--rate-limit-burst", "2/5"]) == 0
    out = capsys.readouterr().out
    assert "    stick-table type ip size 10k expire 10s store http_req_rate(10s)\n" in out
    assert "    stick-table type ip size 10k expire 10s store http_req_rate(5s)\n" in out

    assert main(["haproxy-config", OVN]) == 0
    assert "rate_limiter" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, status, message",
    [
        (["haproxy-config", "qfoo-123"], 2, "'qfoo-123' is not a namespace name"),
        (["haproxy-config", "qrouter-"], 2, "is not a valid router or network id"),
        (["haproxy-config", ROUTER, "--shared", "--socket", "/x"], 2, "not allowed with"),
        (["haproxy-config", ROUTER, "--rate-limit-base", "10"], 2, "is not N/SECONDS"),
        (["haproxy-config", ROUTER, "--rate-limit-base", "0/10"], 2, "must be >= 1"),
        (
            ["haproxy-config", ROUTER, "--rate-limit-ip-version", "6"],
            2,
            "--rate-limit-ip-version needs --rate-limit-base or --rate-limit-burst",
        ),
        (["haproxy-config", ROUTER, "--metadata-port", "70000"], 2, "is not a TCP port"),
        (
            ["haproxy-config", ROUTER, "--ipv6-interface", "tap1"],
            2,
            "ipv6_interface applies to DHCP and OVN namespaces",
        ),
        (["haproxy-config", DHCP, "--bind-v6-any"], 2, "bind_v6_any applies to router"),
        (["haproxy-config", ROUTER, "--socket", "/run/a b.sock"], 2, "socket_path '/run/a b.sock'"),
        (["haproxy-config", ROUTER, "--socket", "/" + "s" * 120], 2, "haproxy accepts at most 97"),
        (
            ["haproxy-config", ROUTER, "--user", "no-such-user-metaproxy"],
            2,
            "metadata_proxy_user 'no-such-user-metaproxy': no such user",
        ),
        (
            ["haproxy-config", ROUTER, "--config-file", "/nonexistent/metaproxy.ini"],
            2,
            "configuration file not found",
        ),
        (
            ["haproxy-config", ROUTER, "--config-dir", "/nonexistent/metaproxy.d"],
            2,
            "configuration directory not found",
        ),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        ([], 2, "the following arguments are required: COMMAND"),
    ],
)
def test_user_errors_give_a_message_and_status_not_a_traceback(capsys, argv, status, message):
    assert main(argv) == status
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert "Traceback" not in captured.err


def test_help_exits_zero(capsys):
    assert main(["haproxy-config", "--help"]) == 0
    assert "--rate-limit-base N/SECONDS" in capsys.readouterr().out


def test_a_bad_value_in_the_config_file_is_reported(capsys, short_dir):
    path = os.path.join(short_dir, "bad.ini")
    with open(path, "w") as f:
        f.write("[DEFAULT]\nmetadata_proxy_socket_mode = sometimes\n")
    assert main(["haproxy-config", ROUTER, "--config-file", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"metaproxy haproxy-config: {path}: [DEFAULT] metadata_proxy_socket_mode")
    assert "Traceback" not in err
