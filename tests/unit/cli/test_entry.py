"""The ways in: ``metaproxy --version`` and ``python -m metaproxy``."""

from __future__ import annotations

import configparser
import importlib.metadata
import subprocess
import sys
from pathlib import Path

from metaproxy.cli import main

ROOT = Path(__file__).resolve().parents[3]
ROUTER = "qrouter-3f5d8c3a-1b2c-4d5e-8f90-a1b2c3d4e5f6"


def declared_version() -> str:
    """The version setup.cfg declares (what pip installed)."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config["metadata"]["version"]


def test_version_prints_the_installed_version(capsys):
    assert main(["--version"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"metaproxy {declared_version()}\n"
    assert captured.err == ""


def test_version_of_a_package_that_is_not_installed_says_so(capsys, monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == (
        "metaproxy unknown (the metaproxy package is not installed: pip install it)\n"
    )


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "metaproxy", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_python_m_metaproxy_is_the_command():
    """The same answers, status and usage as the console script's main()."""
    version = run_module("--version")
    assert (version.returncode, version.stdout) == (0, f"metaproxy {declared_version()}\n")

    config = run_module("haproxy-config", ROUTER, "--socket", "/run/m.sock")
    assert config.returncode == 0, config.stderr
    assert "    server metadata /run/m.sock\n" in config.stdout

    usage = run_module()
    assert usage.returncode == 2 and usage.stdout == ""
    assert usage.stderr.startswith("usage: metaproxy ")
    assert "the following arguments are required: COMMAND" in usage.stderr
