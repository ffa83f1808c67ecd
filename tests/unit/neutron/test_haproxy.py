"""The namespace proxy's haproxy configuration: Neutron's rendering, accepted by haproxy.

The exact texts below pin our layout; test_cli_output_matches_neutrons_rendering checks
what they say against Neutron's own rendering (its HaproxyConfigurator, run from the
upstream virtualenv the bench installs), so a hand-copied expectation cannot drift.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.compare.upstream import DEFAULT_VENV, upstream_installed
from metaproxy.cli import main
from metaproxy.namespace import Namespace, NamespaceKind, namespace_socket_path
from metaproxy.neutron.haproxy import (
    MAX_SOCKET_PATH_BYTES,
    InvalidUserOrGroup,
    RateLimit,
    parse_ip_versions,
    render_haproxy_config,
    resolve_group,
    resolve_user,
)

ROUTER = Namespace.parse("qrouter-3f5d8c3a-1b2c-4d5e-8f90-a1b2c3d4e5f6")
DHCP = Namespace.parse("qdhcp-9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d")
OVN = Namespace.parse("ovnmeta-0a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9")


def _global(
    ns_id: str,
    *,
    level: str = "info",
    user: str = "neutron",
    group: str = "neutron",
    pidfile: str = "/var/lib/neutron/external/pids/ID.pid.haproxy",
    timeouts: tuple[str, str, str, str, str] = ("30s", "30s", "32s", "32s", "30s"),
) -> str:
    """The global and defaults sections as we write them."""
    pidfile = pidfile.replace("ID", ns_id)
    return (
        "global\n"
        f"    log         /dev/log local0 {level}\n"
        f"    log-tag     haproxy-metadata-proxy-{ns_id}\n"
        f"    user        {user}\n"
        f"    group       {group}\n"
        "    maxconn     1024\n"
        "    nbthread    2\n"
        f"    pidfile     {pidfile}\n"
        "    daemon\n"
        "\n"
        "defaults\n"
        "    log global\n"
        "    mode http\n"
        "    option httplog\n"
        "    option dontlognull\n"
        "    option http-server-close\n"
        "    option forwardfor\n"
        "    retries                 3\n"
        f"    timeout http-request    {timeouts[0]}\n"
        f"    timeout connect         {timeouts[1]}\n"
        f"    timeout client          {timeouts[2]}\n"
        f"    timeout server          {timeouts[3]}\n"
        f"    timeout http-keep-alive {timeouts[4]}\n"
    )


def _render(namespace: Namespace, **kwargs) -> str:
    kwargs.setdefault("socket_path", "/var/lib/neutron/metadata_proxy")
    kwargs.setdefault("user", "neutron")
    kwargs.setdefault("group", "neutron")
    kwargs.setdefault("pidfile", f"/var/lib/neutron/external/pids/{namespace.id}.pid.haproxy")
    return render_haproxy_config(namespace, **kwargs)


def test_router_namespace():
    assert _render(ROUTER) == _global(ROUTER.id) + (
        "\n"
        "listen listener\n"
        "    bind 0.0.0.0:9697\n"
        "    server metadata /var/lib/neutron/metadata_proxy\n"
        "    http-request del-header X-Neutron-Network-ID\n"
        f"    http-request set-header X-Neutron-Router-ID {ROUTER.id}\n"
    )


def test_router_namespace_binds_v6_any_and_custom_port_debug_and_timeouts():
    text = _render(
        ROUTER,
        socket_path="/run/metaproxy/ns/qrouter-x.sock",
        bind_v6_any=True,
        metadata_port=9698,
        debug=True,
        timeout_http_request=5,
        timeout_connect=6,
        timeout_client=70,
        timeout_server=65,
        timeout_http_keep_alive=7,
    )
    assert text == _global(ROUTER.id, level="debug", timeouts=("5s", "6s", "70s", "65s", "7s")) + (
        "\n"
        "listen listener\n"
        "    bind :::9698\n"
        "    server metadata /run/metaproxy/ns/qrouter-x.sock\n"
        "    http-request del-header X-Neutron-Network-ID\n"
        f"    http-request set-header X-Neutron-Router-ID {ROUTER.id}\n"
    )


def test_dhcp_namespace_with_ipv6_interface():
    assert _render(DHCP, ipv6_interface="tapdeadbeef-01") == _global(DHCP.id) + (
        "\n"
        "listen listener\n"
        "    bind 169.254.169.254:80\n"
        "    bind [fe80::a9fe:a9fe]:80 interface tapdeadbeef-01\n"
        "    server metadata /var/lib/neutron/metadata_proxy\n"
        "    http-request del-header X-Neutron-Router-ID\n"
        f"    http-request set-header X-Neutron-Network-ID {DHCP.id}\n"
    )


def test_ovn_namespace_deletes_then_adds_its_header():
    assert _render(OVN, user="root", group="wheel") == _global(
        OVN.id, user="root", group="wheel"
    ) + (
        "\n"
        "listen listener\n"
        "    bind 169.254.169.254:80\n"
        "    server metadata /var/lib/neutron/metadata_proxy\n"
        "    http-request del-header X-OVN-Network-ID\n"
        f"    http-request add-header X-OVN-Network-ID {OVN.id}\n"
    )


def test_rate_limited_dhcp_namespace_matches_reference():
    text = _render(DHCP, ipv6_interface="tapXXXX", rate_limit=RateLimit(ip_versions=[4]))
    assert text == _global(DHCP.id) + (
        "\n"
        "backend base_rate_limiter\n"
        "    stick-table type ip size 10k expire 10s store http_req_rate(10s)\n"
        "backend burst_rate_limiter\n"
        "    stick-table type ip size 10k expire 10s store http_req_rate(10s)\n"
        "\n"
        "listen listener\n"
        "    bind 169.254.169.254:80\n"
        "    bind [fe80::a9fe:a9fe]:80 interface tapXXXX\n"
        "    http-request track-sc0 src table base_rate_limiter\n"
        "    http-request track-sc1 src table burst_rate_limiter\n"
        "    http-request deny deny_status 429 if { src_http_req_rate(base_rate_limiter) gt 10 }\n"
        "    http-request deny deny_status 429 if { src_http_req_rate(burst_rate_limiter) gt 10 }\n"
        "    server metadata /var/lib/neutron/metadata_proxy\n"
        "    http-request del-header X-Neutron-Router-ID\n"
        f"    http-request set-header X-Neutron-Network-ID {DHCP.id}\n"
    )


def test_rate_limit_expiry_is_the_longer_window_and_v6_uses_ipv6_table():
    limit = RateLimit(
        ip_versions=[6],
        base_window_duration=60,
        base_query_rate_limit=30,
        burst_window_duration=5,
        burst_query_rate_limit=3,
    )
    text = _render(ROUTER, rate_limit=limit)
    assert (
        "backend base_rate_limiter\n"
        "    stick-table type ipv6 size 10k expire 60s store http_req_rate(60s)\n"
        "backend burst_rate_limiter\n"
        "    stick-table type ipv6 size 10k expire 60s store http_req_rate(5s)\n"
    ) in text
    assert "src_http_req_rate(base_rate_limiter) gt 30 }\n" in text
    assert "src_http_req_rate(burst_rate_limiter) gt 3 }\n" in text
    # The burst window can be the longer one too.
    text = _render(ROUTER, rate_limit=RateLimit(base_window_duration=5, burst_window_duration=45))
    assert "stick-table type ip size 10k expire 45s store http_req_rate(5s)\n" in text
    assert "stick-table type ip size 10k expire 45s store http_req_rate(45s)\n" in text


@pytest.mark.parametrize("versions", [[4, 6], [6, 4], [5], []])
def test_rate_limit_with_other_than_one_ip_version_renders_no_limiting(versions):
    unlimited = _render(DHCP)
    assert _render(DHCP, rate_limit=RateLimit(ip_versions=versions)) == unlimited
    assert "rate_limiter" not in unlimited and "429" not in unlimited


def test_parse_ip_versions_like_upstream():
    assert parse_ip_versions([4]) == 4
    assert parse_ip_versions(["6"]) == 6
    assert parse_ip_versions([4, 6]) is None
    assert parse_ip_versions([5, 6]) is None
    assert parse_ip_versions([5]) is None


def test_rate_limit_values_must_be_positive():
    with pytest.raises(ValueError, match="base_query_rate_limit"):
        RateLimit(base_query_rate_limit=0)
    with pytest.raises(ValueError, match="burst_window_duration"):
        RateLimit(burst_window_duration=-1)


def test_options_of_the_other_kind_are_refused():
    with pytest.raises(ValueError, match="ipv6_interface"):
        _render(ROUTER, ipv6_interface="tap1")
    with pytest.raises(ValueError, match="bind_v6_any"):
        _render(OVN, bind_v6_any=True)
    with pytest.raises(ValueError, match="metadata_port"):
        _render(ROUTER, metadata_port=0)


@pytest.mark.parametrize(
    "field, value",
    [
        ("socket_path", "/tmp/a b.sock"),
        ("socket_path", "/tmp/x.sock\n    server evil 10.0.0.1:80"),
        ("user", ""),
        ("group", "wheel#"),
        ("pidfile", '/tmp/"p'),
        ("ipv6_interface", "tap1 transparent"),
    ],
)
def test_values_that_would_change_the_configuration_are_refused(field, value):
    namespace = DHCP
    with pytest.raises(ValueError, match=field):
        _render(namespace, **{field: value})


def test_socket_path_must_be_absolute_and_fit_haproxy_limit():
    with pytest.raises(ValueError, match="absolute"):
        _render(ROUTER, socket_path="metadata_proxy")
    longest = "/" + "s" * (MAX_SOCKET_PATH_BYTES - 1)
    assert f"    server metadata {longest}\n" in _render(ROUTER, socket_path=longest)
    with pytest.raises(ValueError, match="98 bytes long; haproxy accepts at most 97"):
        _render(ROUTER, socket_path=longest + "s")


def test_timeouts_must_be_positive_whole_seconds():
    with pytest.raises(ValueError, match="timeout_server"):
        _render(ROUTER, timeout_server=0)
    with pytest.raises(ValueError, match="timeout_client"):
        _render(ROUTER, timeout_client=1.5)


def test_namespace_socket_path():
    assert namespace_socket_path("/run/metaproxy/ns", ROUTER) == (
        f"/run/metaproxy/ns/qrouter-{ROUTER.id}.sock"
    )
    assert (
        namespace_socket_path("/run/metaproxy/ns/", OVN)
        == f"/run/metaproxy/ns/ovnmeta-{OVN.id}.sock"
    )


def test_resolve_user_and_group():
    me = pwd.getpwuid(os.geteuid()).pw_name
    my_group = grp.getgrgid(os.getegid()).gr_name
    assert resolve_user("") == me
    assert resolve_user(None) == me
    assert resolve_user(me) == me
    assert resolve_user(str(os.geteuid())) == me
    assert resolve_group("") == my_group
    assert resolve_group(str(os.getegid())) == my_group
    assert resolve_group(my_group) == my_group
    with pytest.raises(InvalidUserOrGroup, match="no-such-user-metaproxy"):
        resolve_user("no-such-user-metaproxy")
    with pytest.raises(InvalidUserOrGroup, match="no such group"):
        resolve_group("no-such-group-metaproxy")


HAPROXY = shutil.which("haproxy")


def _variants():
    return {
        "router": dict(namespace=ROUTER),
        "router-v6-any-debug": dict(namespace=ROUTER, bind_v6_any=True, debug=True),
        "router-rate-limited": dict(namespace=ROUTER, rate_limit=RateLimit()),
        "dhcp": dict(namespace=DHCP),
        "dhcp-v6": dict(namespace=DHCP, ipv6_interface="tap9a8b7c6d-5e"),
        "dhcp-v6-rate-limited-v6": dict(
            namespace=DHCP,
            ipv6_interface="tap9a8b7c6d-5e",
            rate_limit=RateLimit(ip_versions=[6], base_window_duration=60, burst_window_duration=5),
        ),
        "ovn": dict(namespace=OVN),
        "ovn-v6-rate-limited": dict(
            namespace=OVN, ipv6_interface="tap0a1b2c3d4e1", rate_limit=RateLimit()
        ),
        "custom-timeouts": dict(namespace=OVN, timeout_server=90, timeout_client=95),
    }


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not on PATH (apt-get install haproxy)")
@pytest.mark.parametrize("variant", sorted(_variants()))
def test_haproxy_accepts_the_configuration(variant, tmp_path):
    kwargs = _variants()[variant]
    namespace = kwargs.pop("namespace")
    text = render_haproxy_config(
        namespace,
        # haproxy -c does not connect, so the socket need not exist; a short directory
        # keeps the path within haproxy's 97-byte limit (tmp_path may be longer).
        socket_path=namespace_socket_path("/run/metaproxy/ns", namespace),
        user=pwd.getpwuid(os.geteuid()).pw_name,
        group=grp.getgrgid(os.getegid()).gr_name,
        pidfile=str(tmp_path / f"{namespace.id}.pid.haproxy"),
        **kwargs,
    )
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(text)
    result = subprocess.run(
        [HAPROXY, "-c", "-f", str(conf)], capture_output=True, text=True, timeout=30
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # haproxy -c exits 0 on warnings too; the rendering should not earn any.
    assert "[WARNING]" not in output and "[ALERT]" not in output, output


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not on PATH (apt-get install haproxy)")
def test_haproxy_check_rejects_a_socket_path_longer_than_the_limit(tmp_path):
    """The check above can fail, and MAX_SOCKET_PATH_BYTES is haproxy's own limit."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    longest = "/" + "s" * (MAX_SOCKET_PATH_BYTES - 1)
    text = render_haproxy_config(ROUTER, longest, me, group, str(tmp_path / "p.pid"))
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(text.replace(longest, longest + "s"))
    result = subprocess.run(
        [HAPROXY, "-c", "-f", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "too long" in result.stdout + result.stderr
    conf.write_text(text)
    result = subprocess.run(
        [HAPROXY, "-c", "-f", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- against Neutron's own rendering ---------------------------------------------------

_NEUTRON_RENDER = Path(__file__).with_name("neutron_haproxy_render.py")
#: the same values on both sides, so paths and pids need no normalising
_SOCKET = "/var/lib/neutron/metadata_proxy"
_PIDFILE = "/var/lib/neutron/external/pids/{id}.pid.haproxy"
_V4, _V6 = "169.254.169.254", "fe80::a9fe:a9fe"


def _case(
    namespace: Namespace,
    cli: list[str] | None = None,
    *,
    render: dict | None = None,
    debug: bool = False,
    user: str = "0",
    group: str = "0",
    bind_v6_any: bool = False,
    metadata_port: int = 9697,
    ipv6_interface: str | None = None,
    rate_limiting: dict | None = None,
    haproxy: dict | None = None,
) -> dict:
    """One configuration both ways: ours from C{metaproxy haproxy-config} with C{cli}
    (or, for what the command has no option for, L{render_haproxy_config} with
    C{render}), Neutron's from the arguments its agents pass for the same namespace."""
    if namespace.kind is NamespaceKind.ROUTER:
        # the L3 agent: "::" when the host has IPv6, the [DEFAULT] metadata_port
        where = dict(host="::" if bind_v6_any else "0.0.0.0", port=metadata_port)
        where.update(driver="ml2", router_id=namespace.id, network_id=None)
        where.update(host_v6=None, bind_interface=None)
    else:
        # the DHCP agent (ML2) and the OVN metadata agent: 169.254.169.254:80, and the
        # link-local address on the interface when IPv6 is served; the OVN agent names
        # its veth even when it binds no IPv6 address
        kind_driver = "ovn" if namespace.kind is NamespaceKind.OVN else "ml2"
        where = dict(driver=kind_driver, router_id=None, network_id=namespace.id)
        where.update(host=_V4, port=80, host_v6=_V6 if ipv6_interface else None)
        where["bind_interface"] = ipv6_interface or (
            "tap-ovn-veth" if namespace.kind is NamespaceKind.OVN else None
        )
    neutron = dict(
        where,
        socket=_SOCKET,
        user=user,
        group=group,
        pidfile=_PIDFILE.format(id=namespace.id),
        debug=debug,
        metadata_rate_limiting=rate_limiting or {},
        metadata_haproxy=haproxy or {},
    )
    return dict(namespace=namespace, cli=cli, render=render, debug=debug, neutron=neutron)


def _limit(base=(10, 10), burst=(10, 10), versions=(4,)) -> dict:
    """Neutron's [metadata_rate_limiting] for --rate-limit-base/--rate-limit-burst."""
    return dict(
        rate_limit_enabled=True,
        ip_versions=list(versions),
        base_query_rate_limit=base[0],
        base_window_duration=base[1],
        burst_query_rate_limit=burst[0],
        burst_window_duration=burst[1],
    )


_CASES = {
    "router": _case(ROUTER, []),
    "router-v6-any-port-debug": _case(
        ROUTER,
        ["--bind-v6-any", "--metadata-port", "9698"],
        bind_v6_any=True,
        metadata_port=9698,
        debug=True,
    ),
    "router-rate-limited-v6": _case(
        ROUTER,
        ["--rate-limit-base", "30/60", "--rate-limit-burst", "3/5", "--rate-limit-ip-version", "6"],
        rate_limiting=_limit(base=(30, 60), burst=(3, 5), versions=(6,)),
    ),
    "router-rate-limited-burst-longer": _case(
        ROUTER,
        ["--rate-limit-base", "10/5", "--rate-limit-burst", "4/45"],
        rate_limiting=_limit(base=(10, 5), burst=(4, 45)),
    ),
    "dhcp": _case(DHCP, [], user="root", group="root"),
    "dhcp-v6-rate-limited": _case(
        DHCP,
        ["--ipv6-interface", "tap9a8b7c6d-5e", "--rate-limit-base", "10/10"],
        ipv6_interface="tap9a8b7c6d-5e",
        rate_limiting=_limit(),
    ),
    "ovn": _case(OVN, []),
    "ovn-v6-rate-limited": _case(
        OVN,
        ["--ipv6-interface", "tap0a1b2c3d4e1", "--rate-limit-burst", "2/45"],
        ipv6_interface="tap0a1b2c3d4e1",
        rate_limiting=_limit(burst=(2, 45)),
    ),
    # no command-line option for these: the function the command calls
    "custom-timeouts": _case(
        DHCP,
        render=dict(
            timeout_http_request=5,
            timeout_connect=6,
            timeout_client=70,
            timeout_server=65,
            timeout_http_keep_alive=7,
        ),
        haproxy=dict(
            timeout_http_request=5,
            timeout_connect=6,
            timeout_client=70,
            timeout_server=65,
            timeout_http_keep_alive=7,
        ),
    ),
    "rate-limit-v4-and-v6-is-no-limit": _case(
        ROUTER,
        render=dict(rate_limit=RateLimit(ip_versions=[4, 6])),
        rate_limiting=_limit(versions=(4, 6)),
    ),
}


@pytest.fixture(scope="module")
def neutron_rendering() -> dict[str, str]:
    """Neutron's configuration for every case, rendered by its own code (one process)."""
    if not upstream_installed(DEFAULT_VENV):
        pytest.skip(f"upstream Neutron is not installed in {DEFAULT_VENV} (make bench-compare)")
    result = subprocess.run(
        [str(DEFAULT_VENV / "bin" / "python"), str(_NEUTRON_RENDER)],
        input=json.dumps([case["neutron"] for case in _CASES.values()]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(zip(_CASES, json.loads(result.stdout), strict=True))


def _ours(case: dict, capsys, tmp_path: Path) -> str:
    namespace = case["namespace"]
    if case["render"] is not None:
        return render_haproxy_config(
            namespace,
            _SOCKET,
            resolve_user(case["neutron"]["user"]),
            resolve_group(case["neutron"]["group"]),
            _PIDFILE.format(id=namespace.id),
            debug=case["debug"],
            **case["render"],
        )
    argv = ["haproxy-config", namespace.name, "--socket", _SOCKET]
    argv += ["--pidfile", _PIDFILE.format(id=namespace.id)]
    argv += ["--user", case["neutron"]["user"], "--group", case["neutron"]["group"]]
    if case["debug"]:
        # [DEFAULT] debug comes from the configuration, as for Neutron's agents
        (tmp_path / "ports.json").write_text("[]\n")
        config = tmp_path / "metadata_agent.ini"
        config.write_text(
            "[DEFAULT]\ndebug = true\nmetadata_proxy_shared_secret = s\n"
            f"[metaproxy]\nlookup_table = {tmp_path / 'ports.json'}\n"
        )
        argv += ["--config-file", str(config)]
    capsys.readouterr()
    assert main(argv + case["cli"]) == 0
    return capsys.readouterr().out


def _meaningful_lines(text: str) -> list[str]:
    """The lines haproxy reads: Neutron's templates leave blank lines between sections and
    an indented empty line where the optional IPv6 bind goes; haproxy skips both (and
    trailing white space), and our rendering writes neither."""
    return [line.rstrip() for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("name", sorted(_CASES))
def test_cli_output_matches_neutrons_rendering(name, neutron_rendering, capsys, tmp_path):
    """Line for line what Neutron writes for the same namespace and options, except one
    deliberate difference: in an OVN namespace we delete a guest's X-OVN-Network-ID
    before adding ours (Neutron only adds it, so a guest's copy reaches the agent too)."""
    case = _CASES[name]
    expected = _meaningful_lines(neutron_rendering[name])
    if case["namespace"].kind is NamespaceKind.OVN:
        add = expected.index(f"    http-request add-header X-OVN-Network-ID {OVN.id}")
        expected.insert(add, "    http-request del-header X-OVN-Network-ID")
    assert _meaningful_lines(_ours(case, capsys, tmp_path)) == expected
