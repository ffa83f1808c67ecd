"""Integration tests for L{metaproxy.nova.client} and L{metaproxy.nova.tls} over real sockets.

A tiny L{twisted.web} site on 127.0.0.1 (L{tests.doubles.ListeningNova}) stands in for
Nova, plain or behind TLS with certificates from trustme (a server certificate for the
IP literal 127.0.0.1, and a client certificate for mutual TLS). Every test closes its
client's pool, waits for the server to see its connections go, and stops listening, so
the reactor is left as found.
"""

from __future__ import annotations

import pytest
import pytest_twisted
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
    load_pem_private_key,
)
from OpenSSL.crypto import X509
from twisted.internet.defer import gatherResults
from twisted.internet.ssl import CertificateOptions
from twisted.logger import globalLogPublisher

from metaproxy.nova.client import NovaClient, NovaTimeout, NovaUnreachable
from metaproxy.nova.tls import nova_tls_policy
from tests.doubles import ListeningNova

HEADERS = [
    (b"X-Forwarded-For", b"10.0.0.5"),
    (b"X-Instance-ID", b"a0b1c2d3-0000-4000-8000-000000000001"),
    (b"X-Tenant-ID", b"7f3e9a"),
    (b"X-Instance-ID-Signature", b"0" * 64),
]


def policy(*, ca_file, insecure, client_cert=None, client_key=None):
    return nova_tls_policy(
        ca_file=ca_file, insecure=insecure, client_cert=client_cert, client_key=client_key
    )


# --- Certificates ------------------------------------------------------------------------


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _server_tls(cert: trustme.LeafCert, client_ca: trustme.CA | None = None) -> CertificateOptions:
    """Server TLS options; with C{client_ca}, a client certificate from it is required."""
    key = load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    chain = [x509.load_pem_x509_certificate(blob.bytes()) for blob in cert.cert_chain_pems]
    options: dict = {}
    if client_ca is not None:
        ca = X509.from_cryptography(x509.load_pem_x509_certificate(client_ca.cert_pem.bytes()))
        options = dict(verify=True, caCerts=[ca], requireCertificate=True)
    return CertificateOptions(
        privateKey=key, certificate=chain[0], extraCertChain=chain[1:], **options
    )


@pytest.fixture
def pki(tmp_path):
    """A CA, a server certificate for 127.0.0.1, a client certificate, an unrelated CA,
    all written to PEM files."""
    ca = trustme.CA()
    other = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("metaproxy.client.example")

    class Files:
        pass

    files = Files()
    files.ca, files.other_ca, files.server = ca, other, server
    files.ca_file = _write(tmp_path / "ca.pem", ca.cert_pem.bytes())
    files.other_ca_file = _write(tmp_path / "other-ca.pem", other.cert_pem.bytes())
    files.client_cert = _write(tmp_path / "client.pem", client.cert_chain_pems[0].bytes())
    files.client_key = _write(tmp_path / "client.key", client.private_key_pem.bytes())
    files.tmp = tmp_path
    return files


# --- Plain HTTP --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_keep_alive_reuses_one_connection():
    """20 sequential requests travel over one TCP connection, each answered correctly."""
    from twisted.internet import reactor

    async with ListeningNova(reactor) as nova:
        client = nova.client()
        for i in range(20):
            target = b"/latest/meta-data/%%7E%d?x=1&y" % i
            response = await client.forward(b"GET", target, HEADERS, b"")
            assert (response.status, response.body) == (200, b"target=" + target)
        assert nova.site.connections == 1


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_reuse_the_pool():
    """A burst of 8 opens 8 connections; the next burst of 8 reuses them all."""
    from twisted.internet import reactor

    async with ListeningNova(reactor) as nova:
        client = nova.client(pool_size=8, max_in_flight=8)
        for _ in range(2):
            responses = await gatherResults(
                [client.forward(b"GET", b"/%d" % i, HEADERS, b"") for i in range(8)]
            )
            assert [r.body for r in responses] == [b"target=/%d" % i for i in range(8)]
        assert nova.site.connections == 8


@pytest_twisted.ensureDeferred
async def test_connections_nova_closes_while_idle_are_not_reused():
    """Nova dropping idle keep-alive connections (its own idle timeout) costs nothing:
    the client notices the close and the next request goes out on a new connection."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    async with ListeningNova(reactor) as nova:
        nova.site.timeOut = 0.1  # The server closes connections idle for 0.1 s.
        client = nova.client()
        for i in range(3):
            response = await client.forward(b"GET", b"/%d" % i, HEADERS, b"")
            assert response.body == b"target=/%d" % i
            while client.pool.idle:  # Until the server has closed it.
                await deferLater(reactor, 0.05, lambda: None)
        assert nova.site.connections == 3


@pytest_twisted.ensureDeferred
async def test_head_and_post_on_real_sockets():
    """HEAD answers without a body (twisted.web sends Content-Length), POST bodies
    arrive, and both leave the client ready for the next request."""
    from twisted.internet import reactor

    async with ListeningNova(reactor) as nova:
        client = nova.client()
        head = await client.forward(b"HEAD", b"/h", HEADERS, b"")
        assert (head.status, head.body) == (200, b"")
        assert (b"Content-Length", b"9") in head.headers
        post = await client.forward(b"POST", b"/openstack/latest/password", HEADERS, b"pw")
        assert post.body == b"target=/openstack/latest/password"
        again = await client.forward(b"GET", b"/g", HEADERS, b"")
        assert again.body == b"target=/g"
        assert nova.site.connections == 2  # A HEAD's connection is not reused.


@pytest_twisted.ensureDeferred
async def test_nothing_logged_on_success():
    """Successful requests log nothing, not even when new connections are opened (the
    pool's factory is quiet)."""
    from twisted.internet import reactor

    async with ListeningNova(reactor) as nova:
        client = nova.client(pool_size=2, max_in_flight=4)
        events: list = []
        globalLogPublisher.addObserver(events.append)
        try:
            for _ in range(5):
                await gatherResults([client.forward(b"GET", b"/", HEADERS, b"") for _ in range(4)])
        finally:
            globalLogPublisher.removeObserver(events.append)
        assert nova.site.connections > 1  # Connections were opened (and dropped) meanwhile.
        assert events == []


@pytest_twisted.ensureDeferred
async def test_connection_refused_fails_quickly():
    """Nothing listening: NovaUnreachable saying refused, in well under the timeouts."""
    from twisted.internet import reactor

    async with ListeningNova(reactor) as nova:
        closed = reactor.listenTCP(0, nova.site, interface="127.0.0.1")
        port = closed.getHost().port
        await closed.stopListening()
        client = NovaClient(
            reactor,
            f"http://127.0.0.1:{port}",
            timeout=10,
            connect_timeout=5,
            pool_size=1,
            max_in_flight=1,
        )
        started = reactor.seconds()
        with pytest.raises(NovaUnreachable, match=f"127.0.0.1:{port} refused the connection"):
            await client.forward(b"GET", b"/", HEADERS, b"")
        assert reactor.seconds() - started < 2
        await client.close()


@pytest_twisted.ensureDeferred
async def test_timeout_on_a_real_connection():
    """A Nova that never answers gives NovaTimeout after `timeout`; the slot is freed."""
    from twisted.internet import reactor

    async with ListeningNova(reactor) as nova:
        client = nova.client(timeout=0.2)
        with pytest.raises(NovaTimeout):
            await client.forward(b"GET", b"/hang", HEADERS, b"")
        assert client.in_flight == 0


# --- HTTPS -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_https_verified_with_ca_file(pki):
    """A certificate for the IP literal 127.0.0.1 from the configured CA verifies, and
    the TLS connection is reused."""
    from twisted.internet import reactor

    async with ListeningNova(reactor, _server_tls(pki.server)) as nova:
        tls = policy(ca_file=pki.ca_file, insecure=False)
        client = nova.client(tls=tls)
        for _ in range(3):
            target = b"/openstack/latest/meta_data.json"
            response = await client.forward(b"GET", target, HEADERS, b"")
            assert response.body == b"target=/openstack/latest/meta_data.json"
        assert nova.site.connections == 1


@pytest_twisted.ensureDeferred
async def test_https_wrong_ca_is_unreachable(pki):
    """A server certificate from a CA we do not trust: NovaUnreachable, saying TLS."""
    from twisted.internet import reactor

    async with ListeningNova(reactor, _server_tls(pki.server)) as nova:
        tls = policy(ca_file=pki.other_ca_file, insecure=False)
        client = nova.client(tls=tls)
        expected = (
            r"TLS with Nova metadata API at 127\.0\.0\.1:\d+ failed: .*certificate verify failed"
        )
        with pytest.raises(NovaUnreachable, match=expected):
            await client.forward(b"GET", b"/", HEADERS, b"")


@pytest_twisted.ensureDeferred
async def test_https_system_trust_rejects_private_ca(pki):
    """Without a CA file the system trust store is used, which does not know trustme's CA."""
    from twisted.internet import reactor

    async with ListeningNova(reactor, _server_tls(pki.server)) as nova:
        tls = policy(ca_file=None, insecure=False)
        client = nova.client(tls=tls)
        with pytest.raises(NovaUnreachable, match="TLS"):
            await client.forward(b"GET", b"/", HEADERS, b"")


@pytest_twisted.ensureDeferred
async def test_https_hostname_mismatch_is_unreachable(pki):
    """A trusted certificate for another name does not verify 127.0.0.1."""
    from twisted.internet import reactor

    async with ListeningNova(reactor, _server_tls(pki.ca.issue_cert("nova.example"))) as nova:
        tls = policy(ca_file=pki.ca_file, insecure=False)
        client = nova.client(tls=tls)
        expected = "TLS with .* failed: the certificate does not match the host"
        with pytest.raises(NovaUnreachable, match=expected):
            await client.forward(b"GET", b"/", HEADERS, b"")


@pytest_twisted.ensureDeferred
async def test_https_insecure_accepts_any_certificate(pki):
    """insecure=True accepts the untrusted certificate, and ignores the CA file as
    upstream does."""
    from twisted.internet import reactor

    async with ListeningNova(
        reactor, _server_tls(pki.other_ca.issue_cert("elsewhere.example"))
    ) as nova:
        tls = policy(ca_file=pki.ca_file, insecure=True)
        client = nova.client(tls=tls)
        response = await client.forward(b"GET", b"/x", HEADERS, b"")
        assert response.body == b"target=/x"


@pytest_twisted.ensureDeferred
async def test_mutual_tls(pki):
    """A server requiring a client certificate accepts ours when both cert and key are
    configured, and refuses us with only one of them (upstream ignores a lone one)."""
    from twisted.internet import reactor

    async with ListeningNova(reactor, _server_tls(pki.server, client_ca=pki.ca)) as nova:
        both = policy(
            ca_file=pki.ca_file,
            insecure=False,
            client_cert=pki.client_cert,
            client_key=pki.client_key,
        )
        client = nova.client(tls=both)
        response = await client.forward(b"POST", b"/openstack/latest/password", HEADERS, b"pw")
        assert (response.status, response.body) == (200, b"target=/openstack/latest/password")

        for cert, key in [(None, None), (pki.client_cert, None), (None, pki.client_key)]:
            lone = policy(ca_file=pki.ca_file, insecure=False, client_cert=cert, client_key=key)
            with pytest.raises(NovaUnreachable, match=r"127\.0\.0\.1:\d+"):
                await nova.client(tls=lone).forward(b"GET", b"/", HEADERS, b"")


@pytest_twisted.ensureDeferred
async def test_mutual_tls_insecure(pki):
    """insecure=True still presents the client certificate."""
    from twisted.internet import reactor

    async with ListeningNova(reactor, _server_tls(pki.server, client_ca=pki.ca)) as nova:
        tls = policy(
            ca_file=None, insecure=True, client_cert=pki.client_cert, client_key=pki.client_key
        )
        response = await nova.client(tls=tls).forward(b"GET", b"/y", HEADERS, b"")
        assert response.body == b"target=/y"


# --- Policy construction -----------------------------------------------------------------


def test_policy_caches_the_connection_creator_per_host(pki):
    """The policy builds one connection creator (one OpenSSL context) per host and
    returns it again on later requests."""
    for insecure in (False, True):
        cached = policy(
            ca_file=pki.ca_file,
            insecure=insecure,
            client_cert=pki.client_cert,
            client_key=pki.client_key,
        )
        first = cached.creatorForNetloc(b"127.0.0.1", 8775)
        assert cached.creatorForNetloc(b"127.0.0.1", 8775) is first
        assert cached.creatorForNetloc(b"nova.example", 8775) is not first


def _missing_ca(f):
    return dict(ca_file=str(f.tmp / "missing.pem"))


def _junk_ca(f):
    return dict(ca_file=_write(f.tmp / "junk.pem", b"not a cert"))


def _missing_cert(f):
    return dict(client_cert=str(f.tmp / "nope.pem"), client_key=f.client_key)


def _missing_key(f):
    return dict(client_cert=f.client_cert, client_key=str(f.tmp / "nokey"))


def _cert_as_key(f):
    return dict(client_cert=f.client_cert, client_key=f.client_cert)


def _encrypted(f):
    return dict(client_cert=f.client_cert, client_key=_encrypted_key(f))


def _mismatched(f):
    return dict(client_cert=f.client_cert, client_key=_other_key(f))


@pytest.mark.parametrize(
    "setup, message",
    [
        (_missing_ca, r"cannot read CA file '.*missing\.pem'"),
        (_junk_ca, r"CA file '.*junk\.pem' holds no usable PEM certificate"),
        (_missing_cert, r"cannot read client certificate file '.*nope\.pem'"),
        (_missing_key, r"cannot read client key file '.*nokey'"),
        (_cert_as_key, r"client key file '.*client\.pem' holds no usable"),
        (_encrypted, r"client key file '.*encrypted\.key' holds no usable unencrypted"),
        (
            _mismatched,
            r"key in '.*other\.key' does not belong to the certificate in '.*client\.pem'",
        ),
    ],
)
def test_policy_file_errors_name_the_file(pki, setup, message):
    """Unreadable, empty, encrypted or mismatched files fail at construction with a
    ValueError naming the file."""
    arguments = dict(ca_file=None, insecure=False, client_cert=None, client_key=None)
    arguments.update(setup(pki))
    with pytest.raises(ValueError, match=message):
        nova_tls_policy(**arguments)


def _encrypted_key(files) -> str:
    key = load_pem_private_key(files.server.private_key_pem.bytes(), password=None)
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"secret"))
    return _write(files.tmp / "encrypted.key", pem)


def _other_key(files) -> str:
    return _write(files.tmp / "other.key", files.server.private_key_pem.bytes())
