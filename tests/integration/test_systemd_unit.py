"""contrib/metaproxy.service: systemd accepts it, and its hardening holds.

C{systemd-analyze verify} reads the unit as systemd would (unknown keys, bad values,
a missing executable are reported on stderr); C{systemd-analyze security --offline}
scores its sandboxing without a running systemd. The unit's C{ExecStart} names
/opt/metaproxy, so the copy checked here points at this interpreter's twistd, and at root
instead of the neutron user that this machine may not have.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "contrib" / "metaproxy.service"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _local_copy(tmp_path: Path, text: str) -> Path:
    twistd = Path(sys.executable).with_name("twistd")
    text = text.replace("/opt/metaproxy/bin/twistd", str(twistd))
    text = text.replace("User=neutron", "User=root").replace("Group=neutron", "Group=root")
    path = tmp_path / "metaproxy.service"
    path.write_text(text)
    return path


def _verify(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60
    )


def test_systemd_reads_the_unit_without_a_complaint(tmp_path):
    result = _verify(_local_copy(tmp_path, UNIT.read_text()))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


def test_the_check_would_see_a_mistake(tmp_path):
    """The same check on the unit with one misspelt value: systemd says so."""
    broken = UNIT.read_text().replace("Type=notify", "Type=notfy")
    result = _verify(_local_copy(tmp_path, broken))
    assert "notfy" in result.stderr


def test_notify_and_no_capabilities_in_proxy_mode():
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    assert settings["Type"] == ["notify"] and settings["NotifyAccess"] == ["main"]
    assert settings["CapabilityBoundingSet"] == [""] and settings["AmbientCapabilities"] == [""]
    assert settings["NoNewPrivileges"] == ["yes"] and settings["PrivateTmp"] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "@system-service" in settings["SystemCallFilter"]


def test_exposure_is_low(tmp_path):
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(_local_copy(tmp_path, UNIT.read_text()))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    if match is None:
        pytest.skip(f"this systemd-analyze cannot score offline: {result.stderr.strip()[:200]}")
    assert float(match.group(1)) <= 2.5, result.stdout


ROUTERS_DROP_IN = UNIT.with_name("metaproxy-routers.conf")


def _with_drop_in(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    unit = _local_copy(tmp_path, UNIT.read_text())
    (tmp_path / "metaproxy.service.d").mkdir()
    (tmp_path / "metaproxy.service.d" / "routers.conf").write_text(text)
    return subprocess.run(
        [ANALYZE, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"},
    )


def test_the_router_namespaces_drop_in_is_read_without_a_complaint(tmp_path):
    result = _with_drop_in(tmp_path, ROUTERS_DROP_IN.read_text())
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


# ---- contrib/metaproxy-ovn.service: the ML2/OVN chassis mode ---------------------------

OVN_UNIT = UNIT.with_name("metaproxy-ovn.service")


def _settings(text: str) -> dict:
    settings: dict = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def _ovn_local_copy(tmp_path: Path, text: str) -> Path:
    twistd = Path(sys.executable).with_name("twistd")
    path = tmp_path / "metaproxy-ovn.service"
    path.write_text(text.replace("/opt/metaproxy/bin/twistd", str(twistd)))
    return path


def test_systemd_reads_the_ovn_unit_without_a_complaint(tmp_path):
    result = _verify(_ovn_local_copy(tmp_path, OVN_UNIT.read_text()))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


def test_the_drop_in_check_would_see_a_mistake(tmp_path):
    broken = ROUTERS_DROP_IN.read_text().replace("RestrictNamespaces=net", "RestrictNamespace=net")
    assert "RestrictNamespace" in _with_drop_in(tmp_path, broken).stderr


def test_the_drop_in_grants_what_serving_router_namespaces_needs_and_no_more():
    settings = {}
    for line in ROUTERS_DROP_IN.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.split()
    wanted = ["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"]
    assert settings["CapabilityBoundingSet"] == wanted == settings["AmbientCapabilities"]
    assert settings["RestrictNamespaces"] == ["net"]
    assert "AF_NETLINK" in settings["RestrictAddressFamilies"]
    assert set(settings) == {
        "CapabilityBoundingSet",
        "AmbientCapabilities",
        "RestrictNamespaces",
        "RestrictAddressFamilies",
    }


def test_the_ovn_check_would_see_a_mistake(tmp_path):
    broken = OVN_UNIT.read_text().replace("RestrictNamespaces=net mnt", "RestrictNamespaces=nett")
    result = _verify(_ovn_local_copy(tmp_path, broken))
    assert "nett" in result.stderr


def test_the_ovn_unit_keeps_only_the_capabilities_the_chassis_needs():
    """setns and the /run/netns bind mounts, netlink, port 80, iptables' raw socket,
    root writing the neutron user's directories, signalling the replaced agent's leftover
    haproxy (it runs as the neutron user): nothing else; namespaces of kind net
    (and mnt, for ip netns exec); netlink sockets; and no private mount namespace, which
    would hide the ovnmeta- namespaces from the host."""
    settings = _settings(OVN_UNIT.read_text())
    assert settings["Type"] == ["notify"] and settings["NotifyAccess"] == ["main"]
    assert set(settings["CapabilityBoundingSet"][0].split()) == {
        "CAP_SYS_ADMIN",
        "CAP_NET_ADMIN",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_RAW",
        "CAP_DAC_OVERRIDE",
        "CAP_KILL",
    }
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["RestrictNamespaces"] == ["net mnt"]
    assert "AF_NETLINK" in settings["RestrictAddressFamilies"][0].split()
    assert settings["SystemCallFilter"] == ["@system-service @mount"]
    assert "neutron-ovn-metadata-agent.service" in settings["Conflicts"][0].split()
    assert "/etc/neutron/neutron_ovn_metadata_agent.ini" in OVN_UNIT.read_text()
    for private_mounts in ("ProtectSystem", "ReadWritePaths", "PrivateTmp", "ProtectHome"):
        assert private_mounts not in settings
