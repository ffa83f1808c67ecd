"""metaproxy.chassis.nssocket on a real network namespace: the socket listens inside
it, not in the host's, and the caller's thread never leaves the host namespace."""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest
import pytest_twisted
from twisted.internet import reactor

from metaproxy.chassis.nssocket import NamespaceSocketError, open_in_namespace

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


@pytest.fixture
def namespace():
    name = f"mpnstest-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "delete", name], check=False)


def listening(namespace: str | None) -> str:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    return subprocess.run([*prefix, "ss", "-Hltn"], capture_output=True, text=True).stdout


@pytest_twisted.ensureDeferred
async def test_the_socket_listens_inside_the_namespace_only(namespace) -> None:
    before = os.readlink("/proc/thread-self/ns/net")
    sock = await open_in_namespace(reactor, namespace, "169.254.169.254", 80)
    try:
        assert "169.254.169.254:80" in listening(namespace)  # freebind: no address needed
        assert "169.254.169.254:80" not in listening(None)
        assert os.readlink("/proc/thread-self/ns/net") == before
        assert sock.getsockname() == ("169.254.169.254", 80)
    finally:
        sock.close()
    assert "169.254.169.254:80" not in listening(namespace)


@pytest_twisted.ensureDeferred
async def test_ipv6_link_local_binds_to_its_interface(namespace) -> None:
    subprocess.run(
        ["ip", "-n", namespace, "link", "add", "tapx1", "type", "veth", "peer", "tapx2"], check=True
    )
    sock = await open_in_namespace(reactor, namespace, "fe80::a9fe:a9fe", 80, interface="tapx1")
    try:
        assert "[fe80::a9fe:a9fe]%tapx1:80" in listening(namespace)
    finally:
        sock.close()


@pytest_twisted.ensureDeferred
async def test_a_missing_namespace_says_so(namespace) -> None:
    with pytest.raises(NamespaceSocketError, match="setns.*no-such"):
        await open_in_namespace(reactor, "mpnstest-no-such", "169.254.169.254", 80)
