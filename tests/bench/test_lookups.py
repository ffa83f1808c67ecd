"""bench.lookups: the --lookup choices of the storm."""

from pathlib import Path

import pytest

from bench.lookups import LOOKUPS, start_lookup
from bench.processes import write_agent_config


def test_table_lookup_needs_no_service_and_no_extra_config(tmp_path: Path) -> None:
    running = start_lookup("table", tmp_path / "ports.json", tmp_path / "lookup")
    assert "table" in LOOKUPS
    assert (running.extra_default, running.extra_metaproxy, running.extra_sections) == ("", "", "")
    assert running.pids == []
    running.stop()


def test_unknown_lookup_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown lookup 'nope'; one of .*table"):
        start_lookup("nope", tmp_path / "ports.json", tmp_path)


def test_extra_sections_are_appended_after_metaproxy(tmp_path: Path) -> None:
    path = write_agent_config(
        tmp_path / "a.ini",
        state_path=tmp_path,
        nova_port=1,
        secret="s",
        table="t.json",
        extra_metaproxy="x = 1\n",
        extra_sections="[ovn]\novn_sb_connection = unix:/x\n",
    )
    text = path.read_text()
    assert text.endswith("x = 1\n\n[ovn]\novn_sb_connection = unix:/x\n")
