"""The fake Nova's TLS: the server's certificate (a chain allowed) and, optionally, the
CA its clients' certificates must be issued by (L{tls_options})."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["tls_options"]

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _pem_certificates(data: bytes, path: str) -> list[bytes]:
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        raise ValueError(f"{path}: no PEM certificate")
    return blocks


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def tls_options(cert_path: str, key_path: str, client_ca_path: str | None = None) -> Any:
    """The server's C{CertificateOptions}; with a client CA, client certificates are
    required and checked against it."""
    from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate

    blocks = _pem_certificates(_read(cert_path), cert_path)
    leaf = PrivateCertificate.loadPEM(blocks[0] + b"\n" + _read(key_path))
    options: dict[str, Any] = {
        "privateKey": leaf.privateKey.original,
        "certificate": leaf.original,
        "extraCertChain": [Certificate.loadPEM(b).original for b in blocks[1:]],
    }
    if client_ca_path is not None:
        options["verify"] = True
        options["caCerts"] = [
            Certificate.loadPEM(b).original
            for b in _pem_certificates(_read(client_ca_path), client_ca_path)
        ]
        options["requireCertificate"] = True
    return CertificateOptions(**options)
