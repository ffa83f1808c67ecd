"""metaproxy.ovsdb.remote: OVN connection strings and their endpoints."""

import pytest
from twisted.internet import endpoints
from twisted.internet.task import Clock

from metaproxy.ovsdb.remote import (
    Remote,
    RemoteError,
    TlsFiles,
    endpoint_for,
    load_tls_options,
    parse_remote,
    parse_remotes,
)


@pytest.mark.parametrize(
    "text, remote",
    [
        ("tcp:127.0.0.1:6642", Remote("tcp", host="127.0.0.1", port=6642)),
        ("ssl:192.0.2.7:6642", Remote("ssl", host="192.0.2.7", port=6642)),
        ("tcp:[fd00::1]:6642", Remote("tcp", host="fd00::1", port=6642)),
        ("unix:/run/ovn/ovnsb_db.sock", Remote("unix", path="/run/ovn/ovnsb_db.sock")),
    ],
)
def test_parse_and_print_back(text, remote) -> None:
    assert parse_remote(text) == remote
    assert str(remote) == text


@pytest.mark.parametrize(
    "text, reason",
    [
        ("http:1.2.3.4:80", "unknown connection method"),
        ("tcp:127.0.0.1", "no port"),
        ("tcp:ovn-sb.example:6642", "'ovn-sb.example' is not an IP address"),
        ("tcp:127.0.0.1:0", "is not a port number"),
        ("tcp:127.0.0.1:x", "is not a port number"),
        ("tcp:[fd00::1:6642", "an IPv6 address is written"),
        ("unix:", "no socket path"),
    ],
)
def test_bad_connection_strings_say_why(text, reason) -> None:
    with pytest.raises(RemoteError, match=reason):
        parse_remote(text)


def test_several_remotes_comma_separated() -> None:
    assert parse_remotes("tcp:10.0.0.1:6642, tcp:10.0.0.2:6642,") == (
        Remote("tcp", "10.0.0.1", 6642),
        Remote("tcp", "10.0.0.2", 6642),
    )
    with pytest.raises(RemoteError, match="no connection string"):
        parse_remotes(" , ")


def test_endpoints_by_kind() -> None:
    clock = Clock()
    assert isinstance(
        endpoint_for(clock, parse_remote("unix:/x.sock"), 5), endpoints.UNIXClientEndpoint
    )
    assert isinstance(
        endpoint_for(clock, parse_remote("tcp:127.0.0.1:1"), 5), endpoints.TCP4ClientEndpoint
    )
    assert isinstance(
        endpoint_for(clock, parse_remote("tcp:[::1]:1"), 5), endpoints.TCP6ClientEndpoint
    )
    with pytest.raises(RemoteError, match="needs the private key"):
        endpoint_for(clock, parse_remote("ssl:127.0.0.1:1"), 5)


def test_tls_files_are_loaded_and_checked(tmp_path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("client")
    key_path, cert_path, ca_path = tmp_path / "k.pem", tmp_path / "c.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    ca.cert_pem.write_to_path(str(ca_path))
    options = load_tls_options(TlsFiles(str(key_path), str(cert_path), str(ca_path)))
    assert options.verify and options.requireCertificate
    assert isinstance(
        endpoint_for(Clock(), parse_remote("ssl:127.0.0.1:1"), 5, options),
        endpoints.SSL4ClientEndpoint,
    )
    with pytest.raises(RemoteError, match="CA certificate .* cannot be read"):
        load_tls_options(TlsFiles(str(key_path), str(cert_path), str(tmp_path / "none")))
    with pytest.raises(RemoteError, match="cannot be loaded as a PEM pair"):
        load_tls_options(TlsFiles(str(ca_path), str(cert_path), str(ca_path)))
