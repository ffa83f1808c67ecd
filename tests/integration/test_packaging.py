"""Packaging, for real: what an operator gets from the sdist and the wheel.

From a clean copy of the repository (the files git tracks, plus new ones it does not
ignore: never .venv, build output or bench results), an sdist is built; the wheel is
built from that unpacked sdist, as ``python -m build`` does, so a file missing from the
sdist fails here. The wheel is installed by pip into a fresh virtualenv, then: twistd
finds the ``metaproxy`` plugin, the ``metaproxy`` console script runs, the samples and
the service files are under ``share/metaproxy/``, and the metadata carries the licence.
The editable install (``pip install -e .``) must give twistd the plugin too: daphne lost
its Twisted plugin once when it moved to pyproject, and this guards ours.

Dependencies: the fresh venv sees this test venv's site-packages through a ``.pth``
line instead of installing Twisted, oslo.messaging and their forty-odd dependencies.
Installing them would take minutes and the network, and this test runs in ``make test``
in CI on 2 cores, offline-capable, in well under a minute. What that leaves unchecked:
a dependency missing from ``install_requires`` (this venv has it anyway). What is still
checked: pip installs the wheel itself for real (``--no-deps --no-index``), and every
``Requires-Dist`` must be satisfied by a distribution the fresh interpreter can see, so
a misspelt name or an impossible bound fails. Building uses this venv's setuptools and
wheel (no build isolation, so no download; ``make venv`` installs both).
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROUTER = "qrouter-3f5d8c3a-1b2c-4d5e-8f90-a1b2c3d4e5f6"
#: The files the wheel installs under <prefix>/share/metaproxy/, as in the repository.
DATA_FILES = (
    "etc/metadata_agent.ini.sample",
    "etc/metaproxy.conf.sample",
    "etc/metaproxy-config-generator.conf",
    "etc/ports.json.sample",
    "contrib/metaproxy.service",
    "contrib/metaproxy-ovn.service",
    "contrib/metaproxy.logrotate",
    "contrib/metaproxy-routers.conf",
)

pytestmark = pytest.mark.slow


def declared(field: str) -> str:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config["metadata"][field]


def run(args, **kwargs) -> subprocess.CompletedProcess:
    """Run with no PYTHONPATH (nothing of the source tree leaks in); text output."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    kwargs.setdefault("cwd", "/")
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, timeout=120, **kwargs
    )


def checked(args, **kwargs) -> subprocess.CompletedProcess:
    result = run(args, **kwargs)
    assert result.returncode == 0, f"{args}: {result.returncode}\n{result.stdout}{result.stderr}"
    return result


def clean_copy(where: Path) -> Path:
    """The repository's own files, as a commit would take them, copied to C{where}."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist?): no list of the project's files")
    # safe.directory: a checkout owned by another user than root (CI) still answers
    git = ["git", "-c", f"safe.directory={ROOT}", "-C", str(ROOT)]
    listing = subprocess.run(
        [*git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
    )
    assert listing.returncode == 0, listing.stderr.decode(errors="replace")
    listed = listing.stdout
    for name in listed.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():  # deleted but not yet committed: skip
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, where / name)
    return where


def build(backend_call: str, source: Path, out: Path) -> Path:
    """Call setuptools' PEP 517 backend in C{source}; the one file it writes to C{out}."""
    out.mkdir(parents=True, exist_ok=True)
    code = f"from setuptools import build_meta; print(build_meta.{backend_call}({str(out)!r}))"
    name = checked([sys.executable, "-c", code], cwd=source).stdout.strip().splitlines()[-1]
    return out / name


def fresh_venv(where: Path) -> Path:
    """A virtualenv without pip that sees this venv's site-packages for the dependencies."""
    venv.EnvBuilder(with_pip=False, clear=True).create(where)
    python = where / "bin" / "python"
    site = checked(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    ).stdout.strip()
    Path(site, "_deps_from_test_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def pip_install(python: Path, *args) -> None:
    """This venv's pip, installing into C{python}'s environment, offline, no dependencies."""
    checked(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet"]
        + ["--no-index", "--no-deps", *args]
    )


def twistd(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """twistd's entry point run by C{python}: the fresh venv has no twistd script of its
    own (Twisted comes from this venv), and the plugin must be found from its install."""
    argv = ["twistd", *args]
    code = f"import sys; from twisted.scripts.twistd import run; sys.argv = {argv!r}; run()"
    return run([python, "-c", code], cwd=cwd)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(the sdist, the wheel built from the unpacked sdist)."""
    root = tmp_path_factory.mktemp("packaging")
    source = clean_copy(root / "src")
    sdist = build("build_sdist", source, root / "dist")
    with tarfile.open(sdist) as archive:
        # the "data" filter (refuse links and paths outside) exists from Python 3.11.4
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(root / "unpacked", **safe)
    [unpacked] = (root / "unpacked").iterdir()
    wheel = build("build_wheel", unpacked, root / "dist")
    return sdist, wheel


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory):
    """A fresh venv with the wheel installed; (its python, a directory outside the source)."""
    root = tmp_path_factory.mktemp("installed")
    python = fresh_venv(root / "venv")
    pip_install(python, built[1])
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return python, elsewhere


def test_sdist_holds_the_package_plugin_samples_and_licence(built):
    sdist, _ = built
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    expected = {
        "LICENSE",
        "README.md",
        "MANIFEST.in",
        "setup.cfg",
        "pyproject.toml",
        "twisted/plugins/metaproxy_plugin.py",
        "metaproxy/__main__.py",
        "metaproxy/cli/__init__.py",
        "metaproxy/tap.py",
        *DATA_FILES,
    }
    assert expected <= names, sorted(expected - names)
    assert not [n for n in names if n.startswith((".venv/", "bench/results/", "build/"))]


def test_twistd_finds_the_plugin_of_the_installed_wheel(installed):
    """`twistd --help` lists metaproxy and `twistd metaproxy --help` shows its options,
    from a directory outside the source, with the metaproxy of the fresh venv."""
    python, elsewhere = installed
    listing = twistd(python, "--help", cwd=elsewhere)
    assert "metaproxy" in listing.stdout, listing.stdout + listing.stderr
    options = twistd(python, "metaproxy", "--help", cwd=elsewhere)
    assert options.returncode == 0, options.stdout + options.stderr
    assert "--config-file" in options.stdout
    where = checked(
        [python, "-c", "import metaproxy; print(metaproxy.__file__)"], cwd=elsewhere
    ).stdout.strip()
    assert where.startswith(str(python.parent.parent)), where


def test_console_script_and_python_m_run(installed):
    python, elsewhere = installed
    script = python.parent / "metaproxy"
    version = f"metaproxy {declared('version')}\n"
    assert checked([script, "--version"], cwd=elsewhere).stdout == version
    assert checked([python, "-m", "metaproxy", "--version"], cwd=elsewhere).stdout == version
    config = checked([script, "haproxy-config", ROUTER, "--socket", "/run/m.sock"], cwd=elsewhere)
    assert "    server metadata /run/m.sock\n" in config.stdout


def test_oslo_config_generator_finds_the_options_of_the_installed_wheel(installed, tmp_path):
    """Packagers generate the sample from the installed package: the wheel carries the
    C{oslo.config.opts} entry point, and the result is the repository's sample."""
    python, elsewhere = installed
    out = tmp_path / "generated.conf"
    checked(
        [
            python,
            "-m",
            "oslo_config.generator",
            "--config-file",
            ROOT / "etc" / "metaproxy-config-generator.conf",
            "--output-file",
            out,
        ],
        cwd=elsewhere,
    )
    assert out.read_text() == (ROOT / "etc" / "metaproxy.conf.sample").read_text()


def test_samples_and_service_files_are_under_share_metaproxy(installed):
    python, _ = installed
    share = python.parent.parent / "share" / "metaproxy"
    for name in DATA_FILES:
        assert (share / name).read_bytes() == (ROOT / name).read_bytes(), name


def test_licence_in_the_metadata_and_the_dist_info(installed):
    python, elsewhere = installed
    code = (
        "import importlib.metadata as m, json; d = m.distribution('metaproxy'); "
        "print(json.dumps({'path': str(d._path), 'license': d.metadata.get('License'), "
        "'expression': d.metadata.get('License-Expression'), "
        "'files': d.metadata.get_all('License-File')}))"
    )
    meta = json.loads(checked([python, "-c", code], cwd=elsewhere).stdout)
    dist_info = Path(meta["path"])
    assert dist_info.is_relative_to(python.parent.parent), dist_info
    assert "Apache-2.0" in (meta["license"], meta["expression"]), meta
    assert declared("license") == "Apache-2.0"
    assert meta["files"] == ["LICENSE"]
    text = (dist_info / "licenses" / "LICENSE").read_text()
    assert text == (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_every_requirement_is_satisfied_where_the_wheel_runs(installed):
    """Each Requires-Dist of the installed wheel names a distribution the fresh
    interpreter sees, at a version inside the bound."""
    python, elsewhere = installed
    code = (
        "import importlib.metadata as m\n"
        "from packaging.requirements import Requirement\n"
        "requirements = [Requirement(r) for r in m.requires('metaproxy')]\n"
        "runtime = [r for r in requirements if r.marker is None]\n"
        "assert runtime, 'no runtime requirement at all'\n"
        "for r in runtime:\n"
        "    try:\n"
        "        have = m.version(r.name)\n"
        "    except m.PackageNotFoundError:\n"
        "        print(f'{r}: not installed'); continue\n"
        "    if not r.specifier.contains(have, prereleases=True):\n"
        "        print(f'{r}: {have} installed')\n"
        "print(len(runtime), 'checked')\n"
    )
    result = checked([python, "-c", code], cwd=elsewhere)
    lines = result.stdout.splitlines()
    assert lines[-1].endswith(" checked") and int(lines[-1].split()[0]) >= 5, result.stdout
    assert lines[:-1] == [], result.stdout


def test_editable_install_gives_twistd_the_plugin(tmp_path):
    """`pip install -e` of a clean copy: twistd lists metaproxy from any cwd, and the
    metaproxy imported is the copy's source."""
    source = clean_copy(tmp_path / "src")
    python = fresh_venv(tmp_path / "venv")
    pip_install(python, "--no-build-isolation", "-e", source)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listing = twistd(python, "--help", cwd=elsewhere)
    assert "metaproxy" in listing.stdout, listing.stdout + listing.stderr
    where = checked(
        [python, "-c", "import metaproxy; print(metaproxy.__file__)"], cwd=elsewhere
    ).stdout.strip()
    assert where.startswith(str(source)), where
