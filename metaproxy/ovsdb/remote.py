"""OVN's connection strings and the Twisted endpoints they name.

C{ovn_sb_connection} is one remote or several separated by commas (tried in turn):

  - C{tcp:IP:PORT} (an IPv6 address in brackets: C{tcp:[fd00::1]:6642});
  - C{ssl:IP:PORT}: TLS with this node's private key and certificate, the server's
    certificate checked against the CA certificate (as OVSDB does: the chain, not the
    host name);
  - C{unix:PATH}.

L{parse_remotes} is pure; L{endpoint_for} builds the endpoint on a reactor.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs

from metaproxy.pem import UnreadablePemFile, read_pem_file

__all__ = [
    "RemoteError",
    "Remote",
    "TlsFiles",
    "parse_remote",
    "parse_remotes",
    "endpoint_for",
    "load_tls_options",
]


class RemoteError(ValueError):
    """A connection string cannot be used; str() says why and what is expected."""


_EXPECTED = "expected tcp:IP:PORT, ssl:IP:PORT or unix:PATH"


@attrs.frozen
class Remote:
    """One remote: C{kind} is C{tcp}, C{ssl} or C{unix}; C{host}/C{port} for the first two,
    C{path} for C{unix}."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}:{host}:{self.port}"


@attrs.frozen
class TlsFiles:
    """The three PEM files of an C{ssl:} remote."""

    private_key: str
    certificate: str
    ca_cert: str


def parse_remote(text: str) -> Remote:
    """One connection string. @raise RemoteError: with the reason."""
    text = text.strip()
    kind, sep, rest = text.partition(":")
    if not sep or kind not in ("tcp", "ssl", "unix"):
        raise RemoteError(f"{text!r}: unknown connection method; {_EXPECTED}")
    if kind == "unix":
        if not rest:
            raise RemoteError(f"{text!r}: no socket path; {_EXPECTED}")
        return Remote("unix", path=rest)
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or not tail.startswith(":"):
            raise RemoteError(f"{text!r}: an IPv6 address is written [ADDRESS]:PORT")
        port_text = tail[1:]
    else:
        host, sep, port_text = rest.rpartition(":")
        if not sep:
            raise RemoteError(f"{text!r}: no port; {_EXPECTED}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise RemoteError(
            f"{text!r}: {host!r} is not an IP address; {_EXPECTED} "
            "(OVSDB remotes take addresses, not names)"
        ) from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RemoteError(f"{text!r}: {port_text!r} is not a port number (1-65535)")
    return Remote(kind, host=host, port=int(port_text))


def parse_remotes(text: str) -> tuple[Remote, ...]:
    """A comma-separated list of connection strings (at least one).

    @raise RemoteError: naming the first bad entry.
    """
    entries = [entry for entry in text.split(",") if entry.strip()]
    if not entries:
        raise RemoteError(f"no connection string; {_EXPECTED}")
    return tuple(parse_remote(entry) for entry in entries)


def load_tls_options(files: TlsFiles) -> Any:
    """TLS client options from the PEM files: present our key and certificate, accept a
    server whose certificate the CA signed.

    @raise RemoteError: a file cannot be read or is not PEM of the right kind.
    """
    from twisted.internet import ssl

    try:
        key = read_pem_file(files.private_key, "private key")
        cert = read_pem_file(files.certificate, "certificate")
        ca = read_pem_file(files.ca_cert, "CA certificate")
    except UnreadablePemFile as e:
        raise RemoteError(f"{e.what} {e.path!r} cannot be read: {e.reason}") from None
    try:
        private = ssl.PrivateCertificate.loadPEM(key + b"\n" + cert)
    except Exception as e:
        raise RemoteError(
            f"private key {files.private_key!r} and certificate "
            f"{files.certificate!r} cannot be loaded as a PEM pair: {e}"
        ) from None
    try:
        authority = ssl.Certificate.loadPEM(ca)
    except Exception as e:
        raise RemoteError(
            f"CA certificate {files.ca_cert!r} is not a PEM certificate: {e}"
        ) from None
    return private.options(authority)


def endpoint_for(reactor: Any, remote: Remote, timeout: float, tls_options: Any = None) -> Any:
    """The client endpoint of C{remote}; C{tls_options} (L{load_tls_options}) for C{ssl}."""
    from twisted.internet import endpoints

    if remote.kind == "unix":
        return endpoints.UNIXClientEndpoint(reactor, remote.path, timeout=timeout)
    if remote.kind == "tcp":
        return (
            endpoints.TCP4ClientEndpoint(reactor, remote.host, remote.port, timeout=timeout)
            if ":" not in remote.host
            else endpoints.TCP6ClientEndpoint(reactor, remote.host, remote.port, timeout=timeout)
        )
    if tls_options is None:
        raise RemoteError(
            f"{remote}: an ssl: remote needs the private key, certificate and CA certificate"
        )
    return endpoints.SSL4ClientEndpoint(
        reactor, remote.host, remote.port, tls_options, timeout=timeout
    )
