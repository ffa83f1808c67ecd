"""A real OVN chassis for the chassis tests (bench.ovnsandbox); skipped, with one line
saying what is missing, on a host without root or the OVS/OVN packages."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from twisted.internet import reactor
from twisted.internet.task import deferLater

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


#: How often a sandbox test is tried again after a failure. The sandbox is a whole OVN
#: chassis on two shared cores: ovn-controller 23.03 dies in a few per cent of its starts
#: here, and on the userspace datapath a veth that was just re-created may not forward
#: for a moment. A failure that repeats three times in a row is still a failure.
SANDBOX_RERUNS = 2


def pytest_collection_modifyitems(config, items):
    """Give every test of this directory L{SANDBOX_RERUNS} more tries."""
    here = str(Path(__file__).parent)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.flaky(reruns=SANDBOX_RERUNS, reruns_delay=1))


async def until(predicate, timeout: float = 20.0, step: float = 0.01) -> float:
    """Wait on the reactor until C{predicate()} holds; the seconds it took.

    @raise AssertionError: it did not hold within C{timeout} seconds.
    """
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not true within {timeout} s")
        await deferLater(reactor, step, lambda: None)
    return time.monotonic() - began
