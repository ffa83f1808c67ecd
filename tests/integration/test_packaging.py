"""Packaging: both `pip install .` and `pip install -e .` make twistd list the plugin.

daphne lost its Twisted plugin once when it moved to pyproject (its packaging no longer
installed twisted/plugins/); this guards ours. Each install goes into a fresh virtualenv.
To keep the test off the network, the fresh venv sees this venv's site-packages for the
dependencies (a .pth line), and the project itself is built and installed with pip for
real (no build isolation, no dependencies fetched).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def fresh_venv(where: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    python = where / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # dependencies (Twisted, oslo.config, ...) come from the test venv, read-only
    Path(site, "_deps_from_test_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_twistd_lists_metaproxy(tmp_path, editable):
    """After installing into a fresh venv, `twistd --help` lists metaproxy, from any cwd."""
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv",
            ".git",
            "__pycache__",
            "*.egg-info",
            "build",
            ".pytest_cache",
            ".hypothesis",
            "dropin.cache",
            "results",
        ),
    )
    python = fresh_venv(tmp_path / "venv")
    args = [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    args += ["-e", str(source)] if editable else [str(source)]
    subprocess.run(args, check=True, capture_output=True, cwd=str(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # twistd's console script lives in the test venv; run its entry point with the fresh
    # venv's interpreter so the plugin is found from the fresh install only
    twistd_help = (
        "import sys; from twisted.scripts.twistd import run; sys.argv = ['twistd', '--help']; run()"
    )
    result = subprocess.run(
        [str(python), "-c", twistd_help],
        capture_output=True,
        text=True,
        cwd=str(elsewhere),
        env=env,
    )
    assert "metaproxy" in result.stdout, result.stdout + result.stderr
    # and the installed metaproxy is the one in the fresh venv or its source, not ours
    where = subprocess.run(
        [str(python), "-c", "import metaproxy; print(metaproxy.__file__)"],
        capture_output=True,
        text=True,
        cwd=str(elsewhere),
        env=env,
        check=True,
    ).stdout.strip()
    expected = str(source) if editable else str(tmp_path / "venv")
    assert where.startswith(expected), where
