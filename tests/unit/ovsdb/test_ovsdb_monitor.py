"""metaproxy.ovsdb.monitor: schema check, monitor_cond (or monitor), notifications,
reconnecting with backoff and resynchronising, on an in-memory reactor."""

import json

from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from metaproxy.ovsdb.framing import JsonSplitter
from metaproxy.ovsdb.monitor import OvsdbMonitor
from metaproxy.ovsdb.remote import parse_remotes

SCHEMA = {
    "name": "DB",
    "version": "2.0",
    "tables": {
        "T": {
            "columns": {
                "name": {"type": "string"},
                "ref": {"type": {"key": "uuid", "min": 0, "max": 1}},
            }
        }
    },
}


class Harness:
    def __init__(self, remotes="tcp:127.0.0.1:6642", **kw):
        self.reactor = MemoryReactorClock()
        self.syncs, self.changes, self.downs = [], [], []
        self.monitor = OvsdbMonitor(
            self.reactor,
            parse_remotes(remotes),
            "DB",
            {"T": ["name", "ref"]},
            conditions={"T": [["ref", "!=", ["set", []]]]},
            on_sync=self.syncs.append,
            on_changes=self.changes.append,
            on_down=self.downs.append,
            timeout=10,
            probe_interval=0,
            **kw,
        )
        self.transport = None
        self.protocol = None

    def accept(self, index=-1):
        factory = self.reactor.tcpClients[index][2]
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def refuse(self, index=-1):
        self.reactor.tcpClients[index][2].clientConnectionFailed(
            None, Failure(ConnectionRefusedError())
        )

    def sent(self):
        values = [json.loads(v) for v in JsonSplitter().feed(self.transport.value())]
        self.transport.clear()
        return values

    def answer(self, msg_id, result=None, error=None):
        self.protocol.dataReceived(
            json.dumps({"id": msg_id, "result": result, "error": error}).encode()
        )

    def lose(self):
        self.protocol.connectionLost(Failure(ConnectionLost("server went away")))

    def synchronise(self, initial=None):
        self.accept()
        (request,) = self.sent()
        assert request["method"] == "get_schema" and request["params"] == ["DB"]
        self.answer(request["id"], SCHEMA)
        (monitor,) = self.sent()
        self.answer(monitor["id"], initial or {"T": {"r1": {"initial": {"name": "a"}}}})
        return monitor


def test_monitor_cond_with_conditions_then_update2() -> None:
    h = Harness()
    h.monitor.start()
    monitor = h.synchronise()
    assert monitor["method"] == "monitor_cond"
    assert monitor["params"] == [
        "DB",
        "metaproxy",
        {"T": {"columns": ["name", "ref"], "where": [["ref", "!=", ["set", []]]]}},
    ]
    assert h.syncs[0].tables == {"T": {"r1": {"name": "a", "ref": ()}}}
    assert h.monitor.synchronised and h.monitor.syncs == 1
    h.protocol.dataReceived(
        json.dumps(
            {
                "id": None,
                "method": "update2",
                "params": ["metaproxy", {"T": {"r1": {"modify": {"name": "b"}}}}],
            }
        ).encode()
    )
    assert h.changes[0][0].new == {"name": "b", "ref": ()}


def test_a_server_without_monitor_cond_gets_monitor_and_update() -> None:
    h = Harness()
    h.monitor.start()
    h.accept()
    (request,) = h.sent()
    h.answer(request["id"], SCHEMA)
    (cond,) = h.sent()
    h.answer(cond["id"], error={"error": "unknown method"})
    (plain,) = h.sent()
    assert plain["method"] == "monitor"
    assert plain["params"] == ["DB", "metaproxy", {"T": {"columns": ["name", "ref"]}}]
    h.answer(plain["id"], {"T": {"r1": {"new": {"name": "a"}}}})
    assert h.syncs[0].tables["T"]["r1"]["name"] == "a"
    h.protocol.dataReceived(
        json.dumps(
            {
                "id": None,
                "method": "update",
                "params": ["metaproxy", {"T": {"r1": {"old": {"name": "a"}}}}],
            }
        ).encode()
    )
    assert h.changes[0][0].new is None


def test_a_schema_without_the_columns_closes_and_retries() -> None:
    h = Harness()
    h.monitor.start()
    h.accept()
    (request,) = h.sent()
    h.answer(request["id"], {"name": "Other", "tables": {"T": {"columns": {}}}})
    assert h.transport.disconnecting and h.syncs == []
    h.lose()
    h.reactor.advance(0.5)
    assert len(h.reactor.tcpClients) == 2


def test_refused_connections_back_off_up_to_the_maximum_over_the_remotes() -> None:
    h = Harness("tcp:127.0.0.1:1,tcp:127.0.0.2:2", retry_max_interval=3)
    h.monitor.start()
    waits = []
    for _ in range(6):
        h.refuse()
        (call,) = h.reactor.getDelayedCalls()
        waits.append(call.getTime() - h.reactor.seconds())
        h.reactor.advance(waits[-1])
    hosts = [c[0] for c in h.reactor.tcpClients]
    assert hosts[:4] == ["127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2"]
    # 0.5, 1, 2, 3, 3, 3 s, each shortened by up to 20 % of jitter
    for wait, full in zip(waits, [0.5, 1, 2, 3, 3, 3], strict=False):
        assert 0.8 * full <= wait <= full


def test_lost_connection_reports_down_reconnects_and_resynchronises_fully() -> None:
    h = Harness()
    h.monitor.start()
    h.synchronise()
    h.lose()
    assert h.downs and "server went away" in h.downs[0] and not h.monitor.synchronised
    h.reactor.advance(0.5)
    h.synchronise({"T": {"r2": {"initial": {"name": "c"}}}})
    assert len(h.syncs) == 2 and h.syncs[1].tables == {"T": {"r2": {"name": "c", "ref": ()}}}
    # notifications of the old connection's store no longer apply
    assert h.monitor.syncs == 2


def test_stop_closes_and_does_not_reconnect() -> None:
    h = Harness()
    h.monitor.start()
    h.synchronise()
    d = h.monitor.stop()
    assert h.transport.disconnecting
    h.lose()
    stopped = []
    d.addCallback(stopped.append)
    assert stopped == [None]
    h.reactor.advance(100)
    assert len(h.reactor.tcpClients) == 1 and h.downs == []


def test_a_bad_notification_closes_the_connection_with_one_line() -> None:
    from twisted.logger import formatEvent, globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    self_remove = lambda: globalLogPublisher.removeObserver(events.append)  # noqa: E731
    h = Harness()
    h.monitor.start()
    h.synchronise()
    h.protocol.dataReceived(
        json.dumps(
            {
                "id": None,
                "method": "update2",
                "params": ["metaproxy", {"T": {"r9": {"modify": {"name": "x"}}}}],
            }
        ).encode()
    )
    self_remove()
    assert h.transport.disconnecting
    lines = [formatEvent(e) for e in events if "could not be applied" in formatEvent(e)]
    assert len(lines) == 1 and "modify of a row never inserted" in lines[0]
    assert not any(e.get("log_failure") for e in events)


def test_transact_before_synchronisation_fails_at_once() -> None:
    from metaproxy.ovsdb.monitor import NotConnected

    h = Harness()
    h.monitor.start()
    failures = []
    h.monitor.transact([{"op": "comment", "comment": "x"}]).addErrback(failures.append)
    assert failures and failures[0].check(NotConnected)


def test_transact_goes_on_the_monitors_connection_and_checks_results() -> None:
    from metaproxy.ovsdb.operations import TransactError

    h = Harness()
    h.monitor.start()
    h.synchronise()
    ops = [{"op": "mutate", "table": "T", "where": [["name", "==", "a"]], "mutations": []}]
    results, failures = [], []
    h.monitor.transact(ops, must_match=[0]).addCallbacks(results.append, failures.append)
    (request,) = h.sent()
    assert request["method"] == "transact" and request["params"] == ["DB", *ops]
    h.answer(request["id"], [{"count": 1}])
    assert results == [[{"count": 1}]] and not failures

    h.monitor.transact(ops, must_match=[0]).addCallbacks(results.append, failures.append)
    (request,) = h.sent()
    h.answer(request["id"], [{"count": 0}])
    assert failures and failures[0].check(TransactError)
    assert "matched no row" in str(failures[0].value)


def test_transact_after_the_connection_is_lost_fails() -> None:
    from metaproxy.ovsdb.monitor import NotConnected

    h = Harness()
    h.monitor.start()
    h.synchronise()
    h.lose()
    failures = []
    h.monitor.transact([]).addErrback(failures.append)
    assert failures and failures[0].check(NotConnected)
