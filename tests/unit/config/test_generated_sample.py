"""etc/metaproxy.conf.sample is what oslo-config-generator makes of metaproxy's options.

The sample is generated, never edited: `oslo-config-generator --config-file
etc/metaproxy-config-generator.conf` rewrites it. This test runs the generator the way an
operator or a packager would, through the C{oslo.config.opts} entry point, and fails
when an option changed without the sample being regenerated.
"""

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "etc" / "metaproxy.conf.sample"


def test_the_entry_point_lists_every_section():
    (point,) = [p for p in entry_points(group="oslo.config.opts") if p.name == "metaproxy"]
    sections = [group for group, _ in point.load()()]
    assert sections == [
        "DEFAULT",
        "AGENT",
        "cache",
        "metadata_rate_limiting",
        "metaproxy",
        "neutron",
        "ovn",
        "ovs",
    ]


def test_sample_is_current(tmp_path):
    out = tmp_path / "metaproxy.conf.sample"
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("oslo-config-generator")),
            "--config-file",
            str(ROOT / "etc" / "metaproxy-config-generator.conf"),
            "--output-file",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text() == SAMPLE.read_text(), (
        "etc/metaproxy.conf.sample is stale: run "
        "oslo-config-generator --config-file etc/metaproxy-config-generator.conf"
    )
    assert "#metadata_proxy_shared_secret =" in SAMPLE.read_text()
