"""metaproxy.neutron.buslog: oslo.messaging's records as one line per change of the bus's
state, the rest throttled, nothing on standard error (a Clock; records sent through the
real loggers)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from metaproxy.neutron.buslog import BUS_LOGGERS, BusLog

#: oslo.messaging's own format strings and arguments (impl_rabbit).
UNREACHABLE = (
    "[%(connection_id)s] AMQP server on %(hostname)s:%(port)s is unreachable: "
    "%(err_str)s. Trying again in %(sleep_time)d seconds."
)
RECONNECTED = (
    "[%(connection_id)s] Reconnected to AMQP server on %(hostname)s:%(port)s via "
    "[%(transport)s] client with port %(client_port)s."
)
INFO = {"connection_id": "c1", "hostname": "127.0.0.1", "port": 5672}


class Reactor(Clock):
    """A Clock whose callFromThread runs at once (records come from this thread)."""

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)


@pytest.fixture
def bus():
    reactor = Reactor()
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    handler = BusLog.install(reactor)
    yield reactor, handler, events
    globalLogPublisher.removeObserver(events.append)
    BusLog.uninstall()


def lines(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (e["log_level"].name, formatEvent(e))
        for e in events
        if e.get("log_namespace") == "metaproxy.bus"
    ]


def rabbit() -> logging.Logger:
    # oslo.log's name for oslo_messaging._drivers.impl_rabbit's logger
    return logging.getLogger("oslo.messaging._drivers.impl_rabbit")


def test_an_outage_is_one_line_when_lost_and_one_when_back(bus, capsys) -> None:
    reactor, handler, events = bus
    back: list[float] = []
    handler.add_listener(back.append)
    reactor.advance(100)
    for _ in range(30):
        rabbit().error(
            UNREACHABLE, dict(INFO, err_str="[Errno 111] Connection refused", sleep_time=1)
        )
        logging.getLogger("oslo_messaging._drivers.impl_rabbit").error(
            "Connection failed: %s (retrying in %s seconds)", "refused", 1.0
        )
        reactor.advance(0.5)
    rabbit().info(RECONNECTED, dict(INFO, transport="amqp", client_port=4000))
    assert lines(events) == [
        (
            "warn",
            "Message bus (transport_url) unreachable: [c1] AMQP server on 127.0.0.1:5672 is "
            "unreachable: [Errno 111] Connection refused. Trying again in 1 seconds. "
            "oslo.messaging keeps reconnecting by itself; its messages are left out until "
            "it has.",
        ),
        (
            "info",
            "Message bus (transport_url) reachable again after 15.0 s (59 message(s) of "
            "oslo.messaging left out)",
        ),
    ]
    assert back == [100]  # the listener hears when the outage began
    assert capsys.readouterr().err == ""  # nothing reached standard error


def test_a_connection_that_fails_and_comes_back_at_once_writes_nothing(bus) -> None:
    reactor, handler, events = bus
    back: list[float] = []
    handler.add_listener(back.append)
    rabbit().error(UNREACHABLE, dict(INFO, err_str="Socket closed", sleep_time=1))
    reactor.advance(1.9)
    rabbit().info(RECONNECTED, dict(INFO, transport="amqp", client_port=4000))
    reactor.advance(10)
    assert lines(events) == [] and back == []


def test_a_connection_error_attached_to_any_record_is_an_outage(bus) -> None:
    reactor, handler, events = bus
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except ConnectionResetError:
        logging.getLogger("oslo.messaging._drivers.impl_rabbit").exception(
            "Failed to process message ... skipping it."
        )
    reactor.advance(2)
    assert lines(events)[0][0] == "warn"
    assert (
        "unreachable: Failed to process message ... skipping it. (ConnectionResetError"
        in (lines(events)[0][1])
    )


def test_other_messages_are_throttled_per_level_and_info_is_debug(bus) -> None:
    reactor, handler, events = bus
    amqp_driver = logging.getLogger("oslo.messaging._drivers.amqpdriver")
    for n in range(5):
        amqp_driver.warning("Number of call queues is %s, greater than warning threshold", n)
    amqp_driver.info("No calling threads waiting for msg_id : %s", "m1")
    reactor.advance(30)
    amqp_driver.warning("Number of call queues is %s, greater than warning threshold", 9)
    assert lines(events) == [
        ("warn", "oslo.messaging: Number of call queues is 0, greater than warning threshold"),
        ("debug", "oslo.messaging: No calling threads waiting for msg_id : m1"),
        (
            "warn",
            "oslo.messaging: Number of call queues is 9, greater than warning threshold "
            "(4 more line(s) left out)",
        ),
    ]


def test_installed_once_on_every_bus_logger_and_uninstalled(bus) -> None:
    reactor, handler, _ = bus
    assert BusLog.install(Reactor()) is handler
    for name in BUS_LOGGERS:
        logger = logging.getLogger(name)
        assert handler in logger.handlers and not logger.propagate
    BusLog.uninstall()
    for name in BUS_LOGGERS:
        assert handler not in logging.getLogger(name).handlers
