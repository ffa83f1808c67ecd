"""The real `twistd metaproxy` on real Unix sockets against the bundled fake Nova."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from bench.load.unixhttp import get, send_raw
from metaproxy.signing import sign_instance_id
from tests.integration.conftest import GZIPPED, SECRET


def meta(answer):
    assert answer.status == 200, (answer.status, answer.body)
    return json.loads(answer.body)


def last_request(stack):
    return stack.nova_requests()[-1]


def via_router(stack, address, router, path="/openstack/latest/meta_data.json"):
    """GET path on the shared socket as haproxy forwards for `address` behind `router`."""
    return get(stack.shared, path, forwarded_for=address, headers=[("X-Neutron-Router-ID", router)])


def eventually(predicate, timeout=5.0):
    """Poll predicate until it holds or the timeout passes; its last value."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


@pytest.mark.parametrize(
    "via, headers, xff, instance, project",
    [
        ("shared", [("X-Neutron-Router-ID", "r1")], "10.0.0.5", "vm-a", "proj-a"),
        ("shared", [("X-Neutron-Router-ID", "r2")], "10.0.0.5", "vm-b", "proj-b"),
        ("shared", [("X-Neutron-Network-ID", "net-c")], "10.0.1.7", "vm-c", "proj-c"),
        ("shared", [("X-OVN-Network-ID", "net-d")], "192.168.5.9", "vm-d", "proj-d"),
        ("qrouter-r1", [], "10.0.0.5", "vm-a", "proj-a"),
        ("qrouter-r2", [], "10.0.0.5", "vm-b", "proj-b"),
        ("qdhcp-net-c", [], "10.0.1.7", "vm-c", "proj-c"),
        ("qdhcp-net-c", [], "::ffff:10.0.1.7", "vm-c", "proj-c"),
        ("qdhcp-net-c", [], "fe80::f816:3eff:fe11:2233", "vm-c", "proj-c"),
    ],
)
def test_each_namespace_gets_its_own_instance(stack, via, headers, xff, instance, project):
    """Overlapping IPs in several namespaces: each caller gets its own instance, signed."""
    path = stack.shared if via == "shared" else stack.ns_socket(via)
    data = meta(get(path, "/openstack/latest/meta_data.json", forwarded_for=xff, headers=headers))
    assert data["uuid"] == instance and data["project_id"] == project
    received = dict((k.lower(), v) for k, v in last_request(stack)["headers"])
    assert received["x-instance-id"] == instance
    assert received["x-tenant-id"] == project
    assert received["x-instance-id-signature"] == sign_instance_id(SECRET.encode(), instance)
    assert received["x-forwarded-for"] == xff


def test_user_data_text_gzip_and_missing(stack):
    """Text user data, binary gzipped user data (byte-exact) and a 404 for none."""
    a = via_router(stack, "10.0.0.5", "r1", "/openstack/latest/user_data")
    assert a.status == 200 and a.body == b"#!/bin/sh\necho a\n"
    b = via_router(stack, "10.0.0.5", "r2", "/openstack/latest/user_data")
    assert b.status == 200 and b.body == GZIPPED
    c = get(
        stack.shared,
        "/openstack/latest/user_data",
        forwarded_for="10.0.1.7",
        headers=[("X-Neutron-Network-ID", "net-c")],
    )
    assert c.status == 404


def test_empty_public_ipv4(stack):
    """public-ipv4 without a floating IP is an empty 200 with Content-Length: 0."""
    answer = get(
        stack.ns_socket("qrouter-r1"), "/latest/meta-data/public-ipv4", forwarded_for="10.0.0.5"
    )
    assert answer.status == 200 and answer.body == b"" and answer.header("Content-Length") == "0"


def test_guest_forwarded_for_before_proxys_own(stack):
    """A guest-supplied X-Forwarded-For before haproxy's resolves the real caller."""
    data = b"".join(
        [
            b"GET /openstack/latest/meta_data.json HTTP/1.1\r\n",
            b"X-Forwarded-For: 10.0.1.7\r\n",  # the guest's claim
            b"X-Neutron-Router-ID: r1\r\n",
            b"X-Forwarded-For: 10.0.0.5\r\n\r\n",  # haproxy's, appended last
        ]
    )
    assert meta(send_raw(stack.shared, [data]))["uuid"] == "vm-a"


def test_namespace_socket_ignores_claimed_namespace(stack):
    """On qrouter-r1's socket a request claiming router r2 still resolves in r1."""
    answer = get(
        stack.ns_socket("qrouter-r1"),
        "/openstack/latest/meta_data.json",
        forwarded_for="10.0.0.5",
        headers=[("X-Neutron-Router-ID", "r2"), ("X-Neutron-Network-ID", "net-b")],
    )
    assert meta(answer)["uuid"] == "vm-a"


def test_large_request_forwarded_intact(stack):
    """A 9 KiB request (query and body) reaches Nova whole (upstream truncates at 4 KiB)."""
    query = "q=" + "x" * 9216
    body = bytes(range(256)) * 36
    answer = get(
        stack.shared,
        f"/openstack/latest/meta_data.json?{query}",
        forwarded_for="10.0.0.5",
        headers=[("X-Neutron-Router-ID", "r1")],
        method="PUT",
        body=body,
    )
    assert answer.status in (200, 400, 404, 405)
    received = last_request(stack)
    assert received["uri"] == f"/openstack/latest/meta_data.json?{query}"
    assert received["body"].encode("latin-1") == body


def test_post_body_in_later_segment(stack):
    """A password POST whose body arrives after the headers is forwarded whole."""
    password = b"A" * 300
    head = (
        b"POST /openstack/2013-04-04/password HTTP/1.1\r\nX-Neutron-Router-ID: r2\r\n"
        b"Content-Length: 300\r\nX-Forwarded-For: 10.0.0.5\r\n\r\n"
    )
    answer = send_raw(stack.shared, [head, password[:100], password[100:]], pause=0.2)
    assert answer.status == 200 and answer.body == b""
    assert last_request(stack)["body"].encode() == password
    again = send_raw(stack.shared, [head + password])
    assert again.status == 409  # Nova's "already set", relayed


@pytest.mark.parametrize(
    "raw, status",
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX-Neutron-Router-ID: r1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX-Neutron-Router-ID: r1\r\nX-Forwarded-For: not-an-ip\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX-Neutron-Router-ID: r\xe9\r\nX-Forwarded-For: 10.0.0.5\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX-Neutron-Router-ID: r1\r\nX-Forwarded-For: \xff\xfe\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    ],
)
def test_bad_input_answered_and_logged(stack, raw, status):
    """Malformed input gets a clear 4xx and a log line; the agent keeps serving."""
    before = stack.agent.log().count("\n")
    answer = send_raw(stack.shared, [raw])
    assert answer.status == status and answer.header("Connection") == "close"
    eventually(lambda: stack.agent.log().count("\n") != before)
    new_lines = stack.agent.log().splitlines()[before:]
    assert any("Refused" in line for line in new_lines), new_lines
    assert meta(via_router(stack, "10.0.0.5", "r1"))["uuid"] == "vm-a"


def test_not_found_404_logged(stack):
    """An address with no port: 404 'Instance was not found on router r1.'"""
    answer = via_router(stack, "10.0.0.99", "r1", "/openstack")
    assert answer.status == 404 and b"Instance was not found on router r1." in answer.body


def test_socket_mode_and_backlog_applied(stack):
    """metadata_proxy_socket_mode (deduce as root: 0644) and metadata_backlog are real."""
    assert stat.S_IMODE(os.stat(stack.shared).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(stack.ns_socket("qrouter-r1")).st_mode) == 0o644
    try:
        out = subprocess.run(["ss", "-xlH"], capture_output=True, text=True, check=True).stdout
    except (FileNotFoundError, subprocess.CalledProcessError):
        pytest.skip("ss (iproute2) is not installed: cannot read the listen backlog")
    line = next(l for l in out.splitlines() if stack.shared in l)
    assert line.split()[3] == "4096", line  # Send-Q of a listening socket is its backlog


def test_control_command_and_watched_directory(stack):
    """Namespaces added and removed at run time, by `metaproxy ctl` and by the directory."""
    ctl = [
        sys.executable,
        "-m",
        "metaproxy.cli",
        "ctl",
        "--control-socket",
        str(stack.state / "metaproxy" / "control.sock"),
    ]

    def run(*args):
        return subprocess.run(ctl + list(args), capture_output=True, text=True)

    result = run("add", "ovnmeta-net-d")
    assert result.returncode == 0, result.stderr
    socket_path = stack.ns_socket("ovnmeta-net-d")
    assert (
        meta(get(socket_path, "/openstack/latest/meta_data.json", forwarded_for="192.168.5.9"))[
            "uuid"
        ]
        == "vm-d"
    )
    assert "ovnmeta-net-d" in run("list").stdout.split()
    assert run("remove", "ovnmeta-net-d").returncode == 0
    assert not os.path.exists(socket_path)
    # the watched directory: a file appears, the socket follows; it goes, the socket goes
    marker = stack.state / "metaproxy" / "namespaces.d" / "qrouter-r9"
    marker.touch()
    path = stack.ns_socket("qrouter-r9")
    assert eventually(lambda: os.path.exists(path))
    marker.unlink()
    assert eventually(lambda: not os.path.exists(path))
    # other namespaces were never disturbed
    assert (
        meta(
            get(
                stack.ns_socket("qrouter-r2"),
                "/openstack/latest/meta_data.json",
                forwarded_for="10.0.0.5",
            )
        )["uuid"]
        == "vm-b"
    )
    assert run("remove", "qrouter-r1").returncode == 1  # declared in the config file


def test_sighup_reloads_table(stack):
    """SIGHUP re-reads the lookup table: a new port resolves without a restart."""
    table = json.loads(stack.table.read_text())
    table["ports"].append(
        {
            "id": "pe",
            "network_id": "net-a",
            "mac_address": "fa:16:3e:00:00:0e",
            "fixed_ips": ["10.0.0.77"],
            "device_id": "vm-d",
            "project_id": "proj-d",
        }
    )
    assert via_router(stack, "10.0.0.77", "r1", "/openstack").status == 404
    stack.table.write_text(json.dumps(table))
    stack.agent.popen.send_signal(__import__("signal").SIGHUP)
    eventually(lambda: "Reloaded" in stack.agent.log())
    assert via_router(stack, "10.0.0.77", "r1", "/openstack").status == 200


def test_live_socket_not_stolen_by_second_agent(stack):
    """A second agent on the same socket path refuses to start, says why, exits non-zero."""
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    result = subprocess.run(
        [
            twistd,
            "--nodaemon",
            "--pidfile=",
            "metaproxy",
            "--config-file",
            str(stack.root / "agent.ini"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(stack.root),
    )
    assert result.returncode != 0
    assert "in use by a live process" in result.stdout + result.stderr
    assert os.path.exists(stack.shared)
    assert meta(via_router(stack, "10.0.0.5", "r1"))["uuid"] == "vm-a"
