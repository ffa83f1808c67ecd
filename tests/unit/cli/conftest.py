"""Fixtures of the ``metaproxy`` command's tests: a short directory, a config file."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from tests.unit.cli.samples import SECRET


@pytest.fixture
def short_dir():
    """A directory with a short path: Unix socket paths are limited to 107 bytes."""
    path = tempfile.mkdtemp(prefix="mp-cli-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def config_file(short_dir):
    """A complete configuration file, as an operator would write it."""
    table = os.path.join(short_dir, "ports.json")
    with open(table, "w") as f:
        f.write("[]\n")
    path = os.path.join(short_dir, "metadata_agent.ini")
    with open(path, "w") as f:
        f.write(
            "[DEFAULT]\n"
            f"state_path = {short_dir}/state\n"
            "metadata_proxy_socket = $state_path/metadata_proxy\n"
            "metadata_proxy_user = root\n"
            "metadata_proxy_group = 0\n"
            "metadata_proxy_socket_mode = group\n"
            "nova_metadata_host = fd00::5\n"
            "nova_metadata_port = 8775\n"
            f"metadata_proxy_shared_secret = {SECRET}\n"
            "[metaproxy]\n"
            f"lookup_table = {table}\n"
            f"namespace_socket_dir = {short_dir}/ns\n"
            f"control_socket = {short_dir}/control.sock\n"
        )
    return path
