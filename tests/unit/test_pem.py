"""metaproxy.pem: the one PEM file reader, and the messages its two users word from it."""

from __future__ import annotations

import pytest

from metaproxy.nova.tls import nova_tls_policy
from metaproxy.ovsdb.remote import RemoteError, TlsFiles, load_tls_options
from metaproxy.pem import UnreadablePemFile, read_pem_file


def test_reads_the_whole_file_unparsed(tmp_path) -> None:
    path = tmp_path / "a.pem"
    path.write_bytes(b"not PEM at all\x00\xff")
    assert read_pem_file(str(path), "CA file") == b"not PEM at all\x00\xff"


def test_missing_file_names_what_it_is_for_and_why(tmp_path) -> None:
    path = str(tmp_path / "missing.pem")
    with pytest.raises(UnreadablePemFile) as caught:
        read_pem_file(path, "CA file")
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.what, error.path, error.reason) == ("CA file", path, "No such file or directory")
    assert str(error) == f"cannot read CA file '{path}': No such file or directory"


def test_directory_is_unreadable(tmp_path) -> None:
    with pytest.raises(UnreadablePemFile, match=r": Is a directory\Z"):
        read_pem_file(str(tmp_path), "client key file")


def test_ovsdb_remote_words_it_its_own_way(tmp_path) -> None:
    missing = str(tmp_path / "none")
    with pytest.raises(RemoteError) as caught:
        load_tls_options(TlsFiles(missing, missing, missing))
    assert str(caught.value) == f"private key '{missing}' cannot be read: No such file or directory"


def test_nova_tls_words_it_its_own_way(tmp_path) -> None:
    missing = str(tmp_path / "none")
    with pytest.raises(ValueError) as caught:
        nova_tls_policy(ca_file=missing, insecure=False, client_cert=None, client_key=None)
    assert str(caught.value) == f"cannot read CA file '{missing}': No such file or directory"
