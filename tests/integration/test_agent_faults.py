"""The real agent when things are wrong: secret, Nova down, TLS, bad configuration."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from bench.load.unixhttp import get
from tests.integration.conftest import SECRET, short_tmp, start_stack


def ask(stack, router="r1", xff="10.0.0.5", path="/openstack/latest/meta_data.json"):
    return get(stack.shared, path, forwarded_for=xff, headers=[("X-Neutron-Router-ID", router)])


def test_wrong_secret_relays_novas_403():
    """With a secret Nova does not share, Nova's 403 reaches the instance; secret not logged."""
    stack = start_stack("badsecret", agent_secret="not-the-secret")
    try:
        answer = ask(stack)
        assert answer.status == 403
        assert b"Invalid proxy request signature." in answer.body
        log = stack.agent.log()
        assert "shared secrets do not match" in log
        assert "not-the-secret" not in log and SECRET not in log
    finally:
        stack.stop()


def test_nova_down_is_503_with_retry_after():
    """Nova not listening: 503 with Retry-After, so cloud-init retries; a clear log line."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    stack = start_stack("novadown", nova_port=free_port)
    try:
        answer = ask(stack)
        assert answer.status == 503 and answer.header("Retry-After") == "1"
        assert "Nova metadata API unreachable" in stack.agent.log()
    finally:
        stack.stop()


def test_slow_nova_answered_by_agent_before_haproxy_timeout():
    """A Nova slower than [metaproxy] nova_timeout gets a 503 from the agent, not a hang."""
    stack = start_stack(
        "slownova", nova_args=["--delay", "3"], extra_metaproxy="nova_timeout = 0.5\n"
    )
    try:
        answer = ask(stack)
        assert answer.status == 503 and answer.header("Retry-After") == "1"
        assert "too slow" in stack.agent.log()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def pki():
    trustme = pytest.importorskip("trustme")
    root = short_tmp()
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("metadata-agent.example")
    files = {}
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    server.private_key_pem.write_to_path(str(root / "server.key"))
    server.cert_chain_pems[0].write_to_path(str(root / "server.pem"))
    client.private_key_pem.write_to_path(str(root / "client.key"))
    client.cert_chain_pems[0].write_to_path(str(root / "client.pem"))
    for name in ("ca.pem", "server.key", "server.pem", "client.key", "client.pem"):
        files[name] = str(root / name)
    return files


def tls_stack(pki, with_client_cert: bool):
    nova_args = [
        "--tls-cert",
        pki["server.pem"],
        "--tls-key",
        pki["server.key"],
        "--tls-client-ca",
        pki["ca.pem"],
    ]
    extra = f"nova_metadata_protocol = https\nauth_ca_cert = {pki['ca.pem']}\n"
    if with_client_cert:
        extra += (
            f"nova_client_cert = {pki['client.pem']}\nnova_client_priv_key = {pki['client.key']}\n"
        )
    return start_stack("tls", nova_args=nova_args, extra_default=extra)


def test_mutual_tls_to_nova(pki):
    """https with our CA and a client certificate reaches a Nova that requires one."""
    stack = tls_stack(pki, with_client_cert=True)
    try:
        answer = ask(stack)
        assert answer.status == 200, answer.body
    finally:
        stack.stop()


def test_tls_without_client_certificate_refused(pki):
    """Without the client certificate the TLS handshake fails: 503, and the log says TLS."""
    stack = tls_stack(pki, with_client_cert=False)
    try:
        answer = ask(stack)
        assert answer.status == 503
        assert "unreachable" in stack.agent.log()
    finally:
        stack.stop()


def twistd(*args, cwd):
    exe = os.path.join(os.path.dirname(sys.executable), "twistd")
    return subprocess.run(
        [exe, "--nodaemon", "--pidfile=", "metaproxy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_bad_config_value_stops_startup_with_one_message():
    """A bad value stops start-up with a message naming file, option and fix; no traceback."""
    root = short_tmp()
    ini = root / "metadata_agent.ini"
    ini.write_text(f"[DEFAULT]\nstate_path = {root}\nmetadata_backlog = lots\n")
    result = twistd("--config-file", str(ini), cwd=str(root))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert str(ini) in output and "[DEFAULT] metadata_backlog" in output and "lots" in output
    assert "Traceback" not in output


def test_missing_table_stops_startup():
    """A missing lookup table is a start-up error naming [metaproxy] lookup_table."""
    root = short_tmp()
    ini = root / "metadata_agent.ini"
    ini.write_text(f"[DEFAULT]\nstate_path = {root}\n")
    result = twistd("--config-file", str(ini), cwd=str(root))
    assert result.returncode != 0
    assert "lookup_table" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
