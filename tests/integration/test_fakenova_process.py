"""bench.fakes.nova as a process: plain HTTP, TLS with required client certificates, SIGTERM,
service time and concurrency, several processes on one socket.

Starts C{python -m bench.fakes.nova} on C{tcp:0} (L{bench.processes.start_fakenova}, which
reads the URL from its C{fakenova listening on ...} line, the first on its stdout), and
talks to it with urllib (a new connection per request). No reactor here.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import trustme

from bench.processes import Process, start_fakenova

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SECRET = "integration-secret"
INSTANCE = "0b1d6a3e-8a4c-4a55-9e2f-3c7a1b2d4e5f"
PROJECT = "proj-int"
TABLE = {
    "routers": {"r1": ["n1"]},
    "ports": [
        {
            "id": "p1",
            "network_id": "n1",
            "mac_address": "fa:16:3e:00:00:07",
            "fixed_ips": ["10.0.0.7"],
            "device_id": INSTANCE,
            "project_id": PROJECT,
            "device_owner": "compute:nova",
        }
    ],
    "instances": {INSTANCE: {"hostname": "int-vm", "user_data": "#!/bin/sh\necho hi\n"}},
}


# How a TLS handshake refused by the server surfaces in urllib: usually an SSLError
# ("tlsv13 alert certificate required"), sometimes a reset if the alert is not read.
REFUSED = (ssl.SSLError, ConnectionError, urllib.error.URLError, http.client.HTTPException)


def signed_headers() -> dict[str, str]:
    signature = hmac.new(SECRET.encode(), INSTANCE.encode(), hashlib.sha256).hexdigest()
    return {
        "X-Instance-ID": INSTANCE,
        "X-Tenant-ID": PROJECT,
        "X-Instance-ID-Signature": signature,
    }


def start(tmp_path: Path, *extra: str) -> Process:
    """The fake Nova on TABLE and SECRET, its stdout kept apart from its log (stderr)."""
    table = tmp_path / "ports.json"
    table.write_text(json.dumps(TABLE))
    nova, port = start_fakenova(
        table, SECRET, tmp_path / "nova", extra_args=extra, separate_stdout=True
    )
    match = re.fullmatch(r"https?://127\.0\.0\.1:(\d+)", nova.url)
    assert match, (nova.url, nova.log())
    assert int(match.group(1)) == port > 0
    return nova


def control(
    url: str,
    what: str,
    method: str = "GET",
    body: object = None,
    context: ssl.SSLContext | None = None,
):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + "/_fakenova/" + what, data=data, method=method, headers={"X-Fakenova-Control": "1"}
    )
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return json.load(response)


def signed_get(
    url: str, path: str = "/latest/meta-data/local-ipv4", context: ssl.SSLContext | None = None
) -> tuple[int, int, bytes]:
    """Status, answering pid and body of a signed GET, errors included."""
    request = urllib.request.Request(url + path, headers=signed_headers())
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, int(response.headers["X-Fakenova-Pid"]), response.read()
    except urllib.error.HTTPError as error:
        return error.code, int(error.headers["X-Fakenova-Pid"]), error.read()


def gone(pid: int) -> bool:
    """The process has exited (a zombie not reaped yet counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def eventually(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def make_pki(tmp_path: Path) -> tuple[trustme.CA, trustme.LeafCert, dict[str, Path]]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as files."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("metaproxy.client.example")
    paths = {name: tmp_path / f"{name}.pem" for name in ("server", "server-key", "ca", "client")}
    server.cert_chain_pems[0].write_to_path(str(paths["server"]))
    for blob in server.cert_chain_pems[1:]:
        blob.write_to_path(str(paths["server"]), append=True)
    server.private_key_pem.write_to_path(str(paths["server-key"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    return ca, client, paths


def tls_args(paths: dict[str, Path]) -> list[str]:
    return [
        "--tls-cert",
        str(paths["server"]),
        "--tls-key",
        str(paths["server-key"]),
        "--tls-client-ca",
        str(paths["ca"]),
    ]


def test_signed_request_and_recording_over_http(tmp_path):
    """A signed urllib request gets the instance's data; the control endpoints report
    it; SIGTERM makes the process exit with status 0."""
    nova = start(tmp_path)
    try:
        request = urllib.request.Request(
            nova.url + "/openstack/latest/meta_data.json?probe=1", headers=signed_headers()
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/json"
            document = json.load(response)
        assert document["uuid"] == INSTANCE
        assert document["hostname"] == "int-vm"

        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(nova.url + "/latest/meta-data/", timeout=10)
        assert info.value.code == 400
        assert b"X-Instance-ID header is missing from request." in info.value.read()

        control = {"X-Fakenova-Control": "1"}
        stats_request = urllib.request.Request(nova.url + "/_fakenova/stats", headers=control)
        with urllib.request.urlopen(stats_request, timeout=10) as response:
            stats = json.load(response)
        assert stats["total"] == 2
        assert stats["by_status"] == {"200": 1, "400": 1}
        assert stats["by_outcome"]["ok"] == 1 and stats["by_outcome"]["missing_header"] == 1

        requests_request = urllib.request.Request(nova.url + "/_fakenova/requests", headers=control)
        with urllib.request.urlopen(requests_request, timeout=10) as response:
            recorded = json.load(response)
        assert recorded[0]["uri"] == "/openstack/latest/meta_data.json?probe=1"
        sent = {name: value for name, value in recorded[0]["headers"]}
        for name, value in signed_headers().items():
            # urllib title-cases header names ("X-Instance-Id") before sending.
            assert sent.get(name.title()) == value, recorded[0]

        nova.popen.send_signal(signal.SIGTERM)
        assert nova.popen.wait(timeout=10) == 0, nova.log()
    finally:
        nova.stop()


def test_tls_requires_client_certificate(tmp_path):
    """With --tls-client-ca, a client without a certificate is refused and one with a
    certificate from that CA is served."""
    ca, client, paths = make_pki(tmp_path)
    nova = start(tmp_path, *tls_args(paths))
    try:
        assert nova.url.startswith("https://127.0.0.1:")
        url = nova.url + "/latest/meta-data/local-ipv4"

        anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ca.configure_trust(anonymous)
        with pytest.raises(REFUSED):
            request = urllib.request.Request(url, headers=signed_headers())
            urllib.request.urlopen(request, timeout=10, context=anonymous).read()

        authenticated = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ca.configure_trust(authenticated)
        client.configure_cert(authenticated)
        request = urllib.request.Request(url, headers=signed_headers())
        with urllib.request.urlopen(request, timeout=10, context=authenticated) as response:
            assert response.status == 200
            assert response.read() == b"10.0.0.7"

        wrong_ca = trustme.CA()
        stranger = wrong_ca.issue_cert("stranger.example")
        foreign = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ca.configure_trust(foreign)
        stranger.configure_cert(foreign)
        with pytest.raises(REFUSED):
            request = urllib.request.Request(url, headers=signed_headers())
            urllib.request.urlopen(request, timeout=10, context=foreign).read()
        assert nova.popen.poll() is None, nova.log()
    finally:
        nova.stop()


def test_bad_table_exits_nonzero(tmp_path):
    """A table fakenova cannot use stops it with a non-zero status and a message."""
    table = tmp_path / "bad.json"
    table.write_text(json.dumps({"ports": [], "instances": {"x": {"hostnme": "typo"}}}))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.fakes.nova",
            "--table",
            str(table),
            "--secret",
            "s",
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
        env=dict(os.environ),
    )
    assert result.returncode != 0
    assert result.stdout == b""
    assert b"unknown keys" in result.stderr


def test_processes_share_the_socket_and_the_counts(tmp_path):
    """With --processes 3 one line is printed; 60 requests, each on a new connection, are
    served by more than one process; /_fakenova/stats in any process counts all 60 and
    each process's part; a configuration and a reset reach every process; SIGTERM stops
    the workers, then the parent with status 0."""
    nova = start(tmp_path, "--processes", "3")
    try:
        # 60 connections, 12 at a time: with one at a time an idle process can accept
        # them all (the kernel wakes one waiter, often the same one)
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: signed_get(nova.url), range(60)))
        served = []
        for status, pid, body in answers:
            assert (status, body) == (200, b"10.0.0.7")
            served.append(pid)
        assert len(set(served)) > 1, Counter(served)

        stats = {}

        def counted_all() -> bool:
            stats.update(control(nova.url, "stats"))
            return stats["total"] == 60

        assert eventually(counted_all), stats
        assert stats["by_status"] == {"200": 60} and stats["by_outcome"]["ok"] == 60
        processes = stats["processes"]
        assert [p["index"] for p in processes] == [0, 1, 2]
        assert processes[0]["pid"] == nova.pid
        pids = [p["pid"] for p in processes]
        assert len(set(pids)) == 3 and 0 not in pids
        assert {p["pid"]: p["total"] for p in processes if p["total"]} == Counter(served)

        # /requests is per process: the answering process's part only.
        request = urllib.request.Request(
            nova.url + "/_fakenova/requests", headers={"X-Fakenova-Control": "1"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answering = int(response.headers["X-Fakenova-Pid"])
            assert len(json.load(response)) == Counter(served)[answering]

        path = "/latest/meta-data/local-ipv4"
        control(nova.url, "config", "POST", {"status_override": {path: 503}})
        overridden = [signed_get(nova.url) for _ in range(30)]
        assert {status for status, _, _ in overridden} == {503}, Counter(
            (status, pid) for status, pid, _ in overridden
        )

        assert control(nova.url, "reset", "POST")["total"] == 0
        for _ in range(6):
            assert control(nova.url, "stats")["total"] == 0
            assert control(nova.url, "requests") == []

        nova.popen.send_signal(signal.SIGTERM)
        assert nova.popen.wait(timeout=15) == 0, nova.log()
        assert eventually(lambda: all(gone(pid) for pid in pids)), pids
        assert nova.popen.stdout.read() == b""  # the listening line was the only one
    finally:
        nova.stop()


def test_processes_serve_tls(tmp_path):
    """Workers serve TLS with the same certificate and client-certificate check: with the
    parent stopped (SIGSTOP), only the worker can accept, and it does."""
    ca, client, paths = make_pki(tmp_path)
    nova = start(tmp_path, "--processes", "2", *tls_args(paths))
    authenticated = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(authenticated)
    client.configure_cert(authenticated)
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(anonymous)
    try:
        assert nova.url.startswith("https://")
        processes = control(nova.url, "stats", context=authenticated)["processes"]
        worker = processes[1]["pid"]
        assert worker not in (0, nova.pid)
        os.kill(nova.pid, signal.SIGSTOP)
        try:
            for _ in range(3):
                assert signed_get(nova.url, context=authenticated) == (200, worker, b"10.0.0.7")
            with pytest.raises(REFUSED):
                signed_get(nova.url, context=anonymous)
            # The worker reads the parent's counters too.
            assert control(nova.url, "stats", context=authenticated)["total"] == 3
        finally:
            os.kill(nova.pid, signal.SIGCONT)
        nova.popen.send_signal(signal.SIGTERM)
        assert nova.popen.wait(timeout=15) == 0, nova.log()
        assert eventually(lambda: gone(worker))
    finally:
        nova.stop()


def test_worker_exit_stops_the_parent(tmp_path):
    """A worker that dies makes the parent stop the others and exit with status 1."""
    nova = start(tmp_path, "--processes", "3")
    try:
        pids = [p["pid"] for p in control(nova.url, "stats")["processes"]]
        os.kill(pids[1], signal.SIGKILL)
        assert nova.popen.wait(timeout=15) == 1, nova.log()
        assert "fakenova worker 1 exited on its own" in nova.log()
        assert eventually(lambda: gone(pids[2]))
    finally:
        nova.stop()


def test_workers_exit_with_a_killed_parent(tmp_path):
    """Workers never outlive their parent, even one killed with SIGKILL."""
    nova = start(tmp_path, "--processes", "2")
    try:
        pids = [p["pid"] for p in control(nova.url, "stats")["processes"]]
        nova.popen.kill()
        nova.popen.wait(timeout=10)
        assert eventually(lambda: gone(pids[1])), pids
    finally:
        nova.stop()


def test_service_time_and_concurrency_options(tmp_path):
    """--delay-dist, --seed and --concurrency reach the fake: with one worker and a
    service time of at least two seconds, a second request waits in the queue."""
    nova = start(tmp_path, "--delay-dist", "uniform:2:2.5", "--seed", "7", "--concurrency", "1")
    try:
        assert control(nova.url, "config") == {
            "delay": None,
            "delay_dist": "uniform:2.0:2.5",
            "concurrency": 1,
            "status_override": {},
        }
        answers: list[tuple[int, int, bytes]] = []
        clients = [
            threading.Thread(target=lambda: answers.append(signed_get(nova.url))) for _ in range(2)
        ]
        for thread in clients:
            thread.start()
        stats = {}

        def one_waits() -> bool:
            stats.update(control(nova.url, "stats"))
            return (stats["in_service"], stats["queued"]) == (1, 1)

        try:
            assert eventually(one_waits, timeout=10), stats
        finally:
            for thread in clients:
                thread.join(timeout=20)
        assert [a[0] for a in answers] == [200, 200]
        stats = control(nova.url, "stats")
        assert (stats["in_service"], stats["queued"], stats["max_queued"]) == (0, 0, 1)
    finally:
        nova.stop()


def test_bad_process_options_exit_with_usage(tmp_path):
    table = tmp_path / "ports.json"
    table.write_text(json.dumps(TABLE))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.fakes.nova",
            "--table",
            str(table),
            "--secret",
            "s",
            "--processes",
            "4",
            "--concurrency",
            "3",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"below the number of processes" in result.stderr
