"""Shared pytest fixtures: a log observer that fails a test on unhandled errors, and the
events logged during a test (C{logged}). The doubles themselves are in
L{metaproxy.testing} (public) and L{tests.doubles} (the test suite's own)."""

from __future__ import annotations

import pytest
from twisted.logger import capturedLogs, globalLogPublisher


@pytest.fixture(autouse=True)
def no_logged_errors(request):
    """Fail the test if anything logged a Failure (an unhandled error in a Deferred, say).

    pytest-twisted, unlike trial, has no dirty-reactor or logged-error checks;
    tests that expect an error logged mark themselves with ``@pytest.mark.logged_errors``.
    """
    errors = []

    def observe(event):
        if event.get("isError") and event.get("log_failure") is not None:
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    yield errors
    globalLogPublisher.removeObserver(observe)
    if errors and request.node.get_closest_marker("logged_errors") is None:
        first = errors[0]["log_failure"]
        pytest.fail(f"{len(errors)} unhandled error(s) logged; first: {first.getTraceback()}")


@pytest.fixture
def logged():
    """The events logged while the test runs (Twisted's log events, unformatted)."""
    with capturedLogs() as events:
        yield events


@pytest.fixture(autouse=True)
def no_bus_log_left():
    """A test that builds the RPC backend or the state reporter installs the process's
    oslo.messaging log handler on its fake reactor: take it away afterwards."""
    yield
    from metaproxy.neutron.buslog import BusLog

    BusLog.uninstall()


def pytest_configure(config):
    config.addinivalue_line("markers", "logged_errors: the test expects errors to be logged")
    config.addinivalue_line("markers", "slow: builds virtualenvs or starts processes")
