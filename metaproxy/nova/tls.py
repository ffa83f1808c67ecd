"""The HTTPS policy for connections to Nova, with upstream's option semantics.

Neutron's options (docs/upstream.md, "Forwarding to Nova") map to L{nova_tls_policy}'s arguments:

  - C{auth_ca_cert} → C{ca_file}: the CA bundle that verifies Nova, unless insecure;
  - C{nova_metadata_insecure} → C{insecure}: no verification at all (C{ca_file}
    ignored), the way C{requests} does C{verify=False};
  - neither → the system trust store;
  - C{nova_client_cert} and C{nova_client_priv_key} → C{client_cert}, C{client_key}
    (separate PEM files): a client certificate only when both are set.

Verification checks Nova's certificate against the host of the configured URL, which
may be an IP literal (service-identity matches IP addresses too).

Everything is read and checked once, here, so a bad file fails at start-up with a
C{ValueError} naming it. L{metaproxy.nova.client.NovaClient} asks the policy for its connection
creator once, at construction, and every connection (the first and each reconnection)
uses that creator, so the OpenSSL context is built once. The result is also wrapped in
L{twisted.web.client.HostnameCachingHTTPSPolicy}, so that any other user asking per
request (L{twisted.web.client.Agent} does) gets the same creator back for a host instead
of a new OpenSSL context each time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)
from OpenSSL import SSL
from OpenSSL.crypto import X509
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.web.client import HostnameCachingHTTPSPolicy
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from metaproxy.pem import read_pem_file

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot

__all__ = ["nova_tls_policy"]

_log = Logger()


def nova_tls_policy(
    *,
    ca_file: str | None,
    insecure: bool,
    client_cert: str | None,
    client_key: str | None,
    insecure_warning: str = "Nova's TLS certificate is not verified (nova_metadata_insecure).",
    tls_options: Mapping[str, object] | None = None,
) -> IPolicyForHTTPS:
    """The policy for L{metaproxy.nova.client.NovaClient}'s C{tls} argument.

    @param ca_file: PEM file of the CA certificates to trust (a bundle may hold several).
        Empty or C{None}: the system trust store.
    @param insecure: Do not verify Nova's certificate (C{ca_file} is then ignored). The
        server name is still sent (SNI) when the host is a name.
    @param client_cert: PEM file of the client certificate, optionally followed by its
        intermediate CA certificates, which are sent too.
    @param client_key: PEM file of the client certificate's private key, unencrypted.
    @param insecure_warning: the warning logged when C{insecure} (other users of the
        policy, e.g. the Neutron API backend, name their own option).
    @param tls_options: more C{CertificateOptions} keywords (e.g. C{raiseMinimumTo},
        C{acceptableCiphers}; the Neutron API backend's C{[neutron]} TLS options).

    @raise ValueError: A file cannot be read or holds no usable certificate or key, or
        the key does not belong to the certificate. The message names the file.
    """
    client: dict[str, object] = dict(tls_options or {})
    if client_cert and client_key:
        client.update(_load_client_certificate(client_cert, client_key))
    elif client_cert or client_key:
        # Upstream sends a client certificate only when both options are set.
        _log.warn(
            "Only one of the client certificate ({cert!r}) and its key ({key!r}) is "
            "configured: connecting to Nova without a client certificate.",
            cert=client_cert,
            key=client_key,
        )
    if insecure:
        _log.warn(insecure_warning)
        policy: IPolicyForHTTPS = _UnverifiedPolicy(
            CertificateOptions(verify=False, **client)  # type: ignore[arg-type]
        )
    else:
        trust = platformTrust() if not ca_file else _load_trust_root(ca_file)
        policy = _VerifyingPolicy(trust, client)
    return HostnameCachingHTTPSPolicy(policy)


@implementer(IPolicyForHTTPS)
@attrs.frozen(eq=False)
class _VerifyingPolicy:
    """Verify the server against C{trust_root} and the URL's host."""

    trust_root: IOpenSSLTrustRoot
    client: dict[str, object]

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        # One new OpenSSL context per call: HostnameCachingHTTPSPolicy calls this once
        # per host.
        return optionsForClientTLS(
            hostname.decode("ascii"),
            trustRoot=self.trust_root,
            extraCertificateOptions=dict(self.client),
        )


@implementer(IPolicyForHTTPS)
@attrs.frozen(eq=False)
class _UnverifiedPolicy:
    """Accept any server certificate; one OpenSSL context for all hosts."""

    options: CertificateOptions

    def __attrs_post_init__(self) -> None:
        self.options.getContext()  # Build it now, once, rather than on first use.

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        name = hostname.decode("ascii")
        is_name = not (isIPAddress(name) or isIPv6Address(name))
        return _UnverifiedCreator(self.options.getContext(), hostname if is_name else None)


@implementer(IOpenSSLClientConnectionCreator)
@attrs.frozen(eq=False)
class _UnverifiedCreator:
    """Connections from a shared, non-verifying context, with SNI for a host name."""

    context: SSL.Context
    server_name: bytes | None

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        connection.set_app_data(tlsProtocol)
        if self.server_name is not None:
            connection.set_tlsext_host_name(self.server_name)
        return connection


def _load_certificates(path: str, what: str) -> list[x509.Certificate]:
    data = read_pem_file(path, what)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise ValueError(f"{what} {path!r} holds no usable PEM certificate: {e}") from None
    return certificates


def _load_trust_root(ca_file: str) -> IOpenSSLTrustRoot:
    certificates = _load_certificates(ca_file, "CA file")
    return trustRootFromCertificates([Certificate(X509.from_cryptography(c)) for c in certificates])


def _load_client_certificate(cert_file: str, key_file: str) -> dict[str, object]:
    """C{CertificateOptions} keywords presenting this certificate, key and chain.

    The objects are cryptography's: pyOpenSSL (which Twisted hands them to unchanged)
    deprecates its own X509 and PKey types there.
    """
    chain = _load_certificates(cert_file, "client certificate file")
    data = read_pem_file(key_file, "client key file")
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"client key file {key_file!r} holds no usable unencrypted PEM private key: {e}"
        ) from None
    if _public_key(key) != _public_key(chain[0]):
        raise ValueError(
            f"the private key in {key_file!r} does not belong to the certificate in {cert_file!r}"
        )
    return {"privateKey": key, "certificate": chain[0], "extraCertChain": chain[1:]}


def _public_key(holder: object) -> bytes:
    public = holder.public_key()  # type: ignore[attr-defined]
    return public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
