"""The load-shape bench's plain parts: context switches read from /proc, the figures per
storm, the table, and the options it refuses."""

from __future__ import annotations

from pathlib import Path

from bench.ovnsandbox.loadshape import (
    StormFigures,
    context_switches,
    main,
    markdown,
    run_time_ns,
)

STATUS = """Name:\ttwistd
State:\tS (sleeping)
voluntary_ctxt_switches:\t1200
nonvoluntary_ctxt_switches:\t34
"""


def test_context_switches_add_voluntary_and_involuntary(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "status").write_text(STATUS)
    assert context_switches(42, proc=str(tmp_path)) == 1234


def test_context_switches_of_a_process_gone_are_none(tmp_path: Path) -> None:
    assert context_switches(42, proc=str(tmp_path)) == 0


def test_figures_per_answered_request() -> None:
    storm = StormFigures(20, 1, 5600, 5600, 0.84, 2.4, 5880)
    assert round(storm.cpu_per_answer_us) == 150
    assert storm.switches_per_request == 1.05
    empty = StormFigures(20, 1, 5600, 0, 0.1, 2.4, 10)
    assert empty.cpu_per_answer_us is None and empty.switches_per_request is None


def test_the_table_has_a_row_per_storm_and_the_idle_window() -> None:
    table = markdown(
        0.0012,
        2.5,
        [
            StormFigures(5, 1, 5600, 5600, 1.12, 2.8, 7560),
            StormFigures(60, 1, 5600, 5599, 0.7, 2.0, 2800),
        ],
    )
    assert (
        table.splitlines()[0] == "Idle window of 2.5 s (as long as a storm): 1.20 ms of agent CPU."
    )
    assert "| 5 | 1 | 5600/5600 | 200 us | 1.35 | 2,000 |" in table
    assert "| 60 | 1 | 5599/5600 | 125 us | 0.50 | 2,800 |" in table


def test_bad_concurrency_is_refused(capsys) -> None:
    assert main(["--concurrency", "5,0"]) == 2
    assert "at least 1" in capsys.readouterr().err
    assert main(["--concurrency", "five"]) == 2


def test_run_time_adds_every_thread(tmp_path: Path) -> None:
    for task, line in (("42", "1500 200 3\n"), ("43", "2500 100 7\n")):
        (tmp_path / "42" / "task" / task).mkdir(parents=True)
        (tmp_path / "42" / "task" / task / "schedstat").write_text(line)
    assert run_time_ns(42, proc=str(tmp_path)) == 4000
    assert run_time_ns(7, proc=str(tmp_path)) == 0
