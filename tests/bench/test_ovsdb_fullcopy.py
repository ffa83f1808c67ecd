"""bench.scale.ovsdb_fullcopy's plain parts: the per-slice timing of a sliced fill, the
garbage collector's pauses and the report."""

from __future__ import annotations

from bench.scale.ovsdb_fullcopy import GcPauses, PhaseTimer, fullcopy_markdown


def test_each_step_of_a_sliced_fill_is_one_timed_call() -> None:
    timer = PhaseTimer()

    def fill(done, slices):
        for n in range(slices):
            if n:
                yield n
            done.append(n)

    done: list[int] = []
    assert list(timer.wrap_steps("fill", fill)(done, 3)) == [1, 2]
    assert done == [0, 1, 2]
    assert timer.figures()["fill"]["calls"] == 3  # the last one ends the iterator


def test_only_the_oldest_generations_collections_are_counted() -> None:
    pauses = GcPauses()
    pauses("start", {"generation": 0})
    pauses("stop", {"generation": 0})
    pauses("start", {"generation": 2})
    pauses("stop", {"generation": 2})
    assert pauses.count == 1 and pauses.longest == pauses.total >= 0


def _result(**measured):
    return {
        "ports": 100_000,
        "networks": 1000,
        "measured": {
            "bound_ports": 100_000,
            "seconds": 8.0,
            "cpu_seconds": 6.0,
            "longest_stall_s": 1.8,
            "stalls_over_50ms": 6,
            "phases": {"json.loads": {"total_s": 1.6, "calls": 3, "longest_s": 1.6}},
            **measured,
        },
    }


def test_the_report_has_the_peak_rss_and_the_collections_when_measured() -> None:
    text = fullcopy_markdown(
        _result(max_rss_mib=352.4, gc_oldest={"count": 12, "total_s": 1.84, "longest_s": 0.412})
    )
    assert "| peak RSS of the process taking the copy | 352 MiB |" in text
    assert "| 12, 1.84 s, longest 412 ms |" in text
    assert "| longest reactor stall (10 ms probe's lateness) | 1800 ms (6 over 50 ms) |" in text
    older = fullcopy_markdown(_result())  # a result written before they were measured
    assert "RSS" not in older and "garbage" not in older


def test_the_report_has_what_followed_the_copy_when_measured() -> None:
    after = {
        "seconds": 2.0,
        "longest_stall_s": 0.431,
        "gc_oldest": {"count": 1, "total_s": 0.42, "longest_s": 0.42},
    }
    text = fullcopy_markdown(_result(after=after))
    assert "then 2 s of allocating as serving does" in text
    assert "| 431 ms; 1, 0.42 s, longest 420 ms |" in text
    assert "allocating" not in fullcopy_markdown(_result())
