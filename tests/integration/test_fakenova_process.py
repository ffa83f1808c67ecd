"""bench.fakenova as a process: plain HTTP, TLS with required client certificates, SIGTERM.

Starts C{python -m bench.fakenova} on C{tcp:0}, reads the port from its
C{fakenova listening on ...} line, and talks to it with urllib. No reactor here.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import re
import select
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trustme

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


class FakeNovaProcess:
    def __init__(self, tmp_path: Path, *extra: str) -> None:
        table = tmp_path / "ports.json"
        table.write_text(json.dumps(TABLE))
        secret = tmp_path / "secret"
        secret.write_text(SECRET + "\n")
        self.stderr_path = tmp_path / f"fakenova-{len(list(tmp_path.glob('fakenova-*')))}.err"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.fakenova", "--table", str(table),
             "--secret-file", str(secret), "--listen", "tcp:0:interface=127.0.0.1", *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.url = self._wait_for_url(timeout=20)

    def _wait_for_url(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline().decode()
                match = re.fullmatch(r"fakenova listening on (https?://127\.0\.0\.1:(\d+))\n", line)
                assert match, (line, self.stderr())
                assert int(match.group(2)) > 0
                return match.group(1)
            if self.proc.poll() is not None:
                break
        raise AssertionError(f"fakenova did not start: {self.stderr()}")

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc.stdout.close()  # type: ignore[union-attr]
        self._stderr.close()


def test_signed_request_and_recording_over_http(tmp_path):
    """A signed urllib request gets the instance's data; the control endpoints report
    it; SIGTERM makes the process exit with status 0."""
    nova = FakeNovaProcess(tmp_path)
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

        nova.proc.send_signal(signal.SIGTERM)
        assert nova.proc.wait(timeout=10) == 0, nova.stderr()
    finally:
        nova.stop()


def test_tls_requires_client_certificate(tmp_path):
    """With --tls-client-ca, a client without a certificate is refused and one with a
    certificate from that CA is served."""
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

    nova = FakeNovaProcess(
        tmp_path,
        "--tls-cert", str(paths["server"]),
        "--tls-key", str(paths["server-key"]),
        "--tls-client-ca", str(paths["ca"]),
    )
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
        assert nova.proc.poll() is None, nova.stderr()
    finally:
        nova.stop()


def test_bad_table_exits_nonzero(tmp_path):
    """A table fakenova cannot use stops it with a non-zero status and a message."""
    table = tmp_path / "bad.json"
    table.write_text(json.dumps({"ports": [], "instances": {"x": {"hostnme": "typo"}}}))
    result = subprocess.run(
        [sys.executable, "-m", "bench.fakenova", "--table", str(table), "--secret", "s",
         "--listen", "tcp:0:interface=127.0.0.1"],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
        env=dict(os.environ),
    )
    assert result.returncode != 0
    assert result.stdout == b""
    assert b"unknown keys" in result.stderr
