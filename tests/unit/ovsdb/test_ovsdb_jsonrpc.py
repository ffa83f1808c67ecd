"""metaproxy.ovsdb.jsonrpc: requests and answers, echo both ways, notifications, the probe."""

import json

import pytest
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from metaproxy.ovsdb.jsonrpc import JsonRpcProtocol, RpcError, RpcTimeout


def connect(probe: float = 0.0, timeout: float = 10.0):
    clock = Clock()
    notes = []
    protocol = JsonRpcProtocol(clock, timeout, probe, lambda m, p: notes.append((m, p)))
    transport = StringTransport()
    protocol.makeConnection(transport)
    return clock, protocol, transport, notes


def sent(transport: StringTransport) -> list:
    from metaproxy.ovsdb.framing import JsonSplitter

    values = [json.loads(v) for v in JsonSplitter().feed(transport.value())]
    transport.clear()
    return values


def test_request_and_its_answer() -> None:
    clock, protocol, transport, _ = connect()
    d = protocol.request("get_schema", ["OVN_Southbound"])
    assert sent(transport) == [{"method": "get_schema", "params": ["OVN_Southbound"], "id": 1}]
    results = []
    d.addCallback(results.append)
    protocol.dataReceived(b'{"id": 1, "result": {"name": "x"}, "error": null}')
    assert results == [{"name": "x"}]
    assert not clock.getDelayedCalls()  # the request timer is gone


def test_error_answer_fails_the_request() -> None:
    _, protocol, transport, _ = connect()
    d = protocol.request("monitor_cond", [])
    protocol.dataReceived(b'{"id":1,"result":null,"error":"unknown method"}')
    failure = []
    d.addErrback(failure.append)
    assert failure[0].check(RpcError) and failure[0].value.error == "unknown method"


def test_echo_from_the_server_is_answered() -> None:
    _, protocol, transport, _ = connect()
    protocol.dataReceived(b'{"method":"echo","params":[],"id":"echo"}')
    assert sent(transport) == [{"id": "echo", "result": [], "error": None}]


def test_notifications_are_delivered_in_order() -> None:
    _, protocol, _, notes = connect()
    protocol.dataReceived(
        b'{"method":"update2","params":["m",{}],"id":null}'
        b'{"method":"update2","params":["m",{"T":{}}],"id":null}'
    )
    assert notes == [("update2", ["m", {}]), ("update2", ["m", {"T": {}}])]


def test_garbage_closes_the_connection() -> None:
    _, protocol, transport, _ = connect()
    protocol.dataReceived(b"hello")
    assert transport.disconnecting


def test_a_request_not_answered_in_time_fails_and_closes() -> None:
    clock, protocol, transport, _ = connect(timeout=5)
    d = protocol.request("transact", [])
    clock.advance(5)
    failure = []
    d.addErrback(failure.append)
    assert failure[0].check(RpcTimeout)
    assert transport.disconnecting


def test_connection_lost_fails_pending_requests() -> None:
    _, protocol, _, _ = connect()
    d = protocol.request("monitor", [])
    lost = []
    protocol.on_lost = lost.append
    protocol.connectionLost(Failure(ConnectionLost("bye")))
    failure = []
    d.addErrback(failure.append)
    assert failure[0].check(ConnectionLost) and len(lost) == 1
    with pytest.raises(ConnectionLost):
        protocol.request("monitor", [])


def test_probe_sends_echo_after_silence_and_closes_when_still_silent() -> None:
    clock, protocol, transport, _ = connect(probe=5)
    clock.advance(4)
    protocol.dataReceived(b'{"id":"x","result":[]}')  # traffic: no probe yet
    clock.advance(4)
    assert sent(transport) == []
    clock.advance(1)
    assert sent(transport) == [{"method": "echo", "params": [], "id": "echo"}]
    protocol.dataReceived(b'{"id":"echo","result":[],"error":null}')
    clock.advance(5)
    assert sent(transport) == [{"method": "echo", "params": [], "id": "echo"}]
    clock.advance(5)  # the second probe went unanswered
    assert transport.disconnecting
