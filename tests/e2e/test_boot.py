"""cloud-init's whole boot from inside instance namespaces, through haproxy, to Nova."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.load.netns import ROUTER_METADATA_PORT
from tests.e2e.conftest import BOOT_REQUESTS, REPO, V4, V6


@pytest.mark.parametrize("name", ["a1", "a2", "b", "d", "o"])
def test_cloud_init_boot_over_ipv4(e2e, variant, name):
    """The 28 requests of a first boot on http://169.254.169.254, behind a router (iptables
    redirect to haproxy on 9697), a DHCP namespace or an OVN namespace: every body is
    exactly the instance's own."""
    instance = e2e.site(variant).instances[name]
    report = e2e.client(instance, V4)
    e2e.assert_own(instance, report, count=BOOT_REQUESTS)
    assert {a["source"] for a in report["requests"]} == {instance.ip}
    meta = json.loads(report["requests"][2]["body"])
    assert meta["uuid"] == e2e.device_of[instance.namespace]


@pytest.mark.parametrize("name", ["d", "o"])
def test_cloud_init_first_seven_over_ipv6_link_local(e2e, variant, name):
    """The first seven requests on http://[fe80::a9fe:a9fe%eth0], from the instance's
    EUI-64 link-local address: the agent finds the instance by the MAC in it."""
    instance = e2e.site(variant).instances[name]
    e2e.nova_control("reset", "POST")
    report = e2e.client(instance, V6, first=7)
    e2e.assert_own(instance, report, count=7)
    assert {a["source"] for a in report["requests"]} == {instance.link_local}
    assert instance.link_local.startswith("fe80::") and "ff:fe" in instance.link_local
    # Nova saw the link-local address haproxy wrote, and the instance the MAC names
    seen = e2e.nova_control("requests")
    assert len(seen) == 7
    for request in seen:
        headers = {k.lower(): v for k, v in request["headers"]}
        assert headers["x-forwarded-for"] == instance.link_local
        assert headers["x-instance-id"] == e2e.device_of[instance.namespace]


def test_same_ip_behind_two_routers(e2e, variant):
    """a1 and b are both 10.0.0.5, behind different routers, booting at the same time:
    each gets its own metadata."""
    site = e2e.site(variant)
    a1, b = site.instances["a1"], site.instances["b"]
    assert a1.ip == b.ip
    argv = [sys.executable, "-m", "bench.load.nsclient", "--base", V4]
    procs = [e2e.topo.popen(i, argv, stdout=subprocess.PIPE, cwd=str(REPO)) for i in (a1, b)]
    metas = []
    for instance, proc in zip((a1, b), procs, strict=False):
        out, _ = proc.communicate(timeout=120)
        report = e2e.parse_report(instance, out)
        e2e.assert_own(instance, report, count=BOOT_REQUESTS)
        metas.append(json.loads(report["requests"][2]["body"]))
    assert metas[0]["uuid"] == e2e.device_of[a1.namespace]
    assert metas[1]["uuid"] == e2e.device_of[b.namespace]
    assert metas[0]["uuid"] != metas[1]["uuid"]


def test_router_metadata_port_only_through_the_redirect(e2e, variant):
    """Neutron's filter rules: 9697 on the router answers only redirected (marked)
    traffic; the instance going straight to <gateway>:9697 is dropped."""
    instance = e2e.site(variant).instances["a1"]
    gateway = instance.attached_to.ports[instance.network_id].ip
    report = e2e.client(
        instance, f"http://{gateway}:{ROUTER_METADATA_PORT}", paths=["/openstack"], timeout=1.0
    )
    assert report["requests"] == []
    assert report["error"] is not None and "timed out" in report["error"]
    # while the same haproxy answers through the redirect
    e2e.assert_own(instance, e2e.client(instance, V4, paths=["/openstack"]), count=1)


def test_haproxy_runs_metaproxys_config(e2e, variant):
    """Each namespace's haproxy runs what `metaproxy haproxy-config` renders, bound and
    pointed as Neutron's agents do: the shared socket or the namespace's own."""
    site = e2e.site(variant)
    for namespace in site.namespaces:
        proxy = namespace.haproxy
        assert proxy is not None
        rendered = subprocess.run(
            [
                sys.executable,
                "-m",
                "metaproxy.cli",
                "haproxy-config",
                namespace.name,
                "--config-file",
                str(e2e.config),
                "--user",
                "root",
                "--group",
                "root",
                "--pidfile",
                str(proxy.pidfile),
            ]
            + (["--shared"] if variant == "shared" else [])
            + (
                [f"--ipv6-interface={next(iter(namespace.ports.values())).ifname}"]
                if namespace.kind != "router"
                else []
            ),
            capture_output=True,
            text=True,
            check=True,
            cwd=str(REPO),
        ).stdout
        assert proxy.config_path.read_text() == rendered
        lines = [line.strip() for line in rendered.splitlines()]
        socket = e2e.shared_socket if variant == "shared" else str(e2e.ns_socket(namespace))
        assert f"server metadata {socket}" in lines
        header = {
            "router": "X-Neutron-Router-ID",
            "dhcp": "X-Neutron-Network-ID",
            "ovn": "X-OVN-Network-ID",
        }[namespace.kind]
        assert any(
            line.startswith("http-request") and line.endswith(f"{header} {namespace.id}")
            for line in lines
        )
        if namespace.kind == "router":
            assert "bind 0.0.0.0:9697" in lines
        else:
            (port,) = namespace.ports.values()
            assert "bind 169.254.169.254:80" in lines
            assert f"bind [fe80::a9fe:a9fe]:80 interface {port.ifname}" in lines
