"""A real OVN chassis for the chassis tests (bench.ovnsandbox); skipped, with one line
saying what is missing, on a host without root or the OVS/OVN packages."""

from __future__ import annotations

import pytest

from bench.ovnsandbox import Cloud, OvnSandbox, missing

MISSING = missing()
needs_ovn = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))


@pytest.fixture
def sandbox():
    """A started sandbox, cleaned up whatever the test did."""
    if MISSING is not None:
        pytest.skip(MISSING)
    box = OvnSandbox.start()
    try:
        yield box
        if not box.stopped:  # a daemon death is the sandbox's failure, reported as such
            box.check_alive()
    finally:
        box.stop()


@pytest.fixture
def cloud(sandbox):
    return Cloud(sandbox)
