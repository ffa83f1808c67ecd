"""metaproxy.ovsdb.monitor: the member's _Server row, schema check, monitor_cond_since
(or monitor_cond, or monitor), notifications, reconnecting with backoff and catching up
or resynchronising, on an in-memory reactor."""

import gc
import json

import pytest
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


#: the _Server.Database row of a standalone database, and of cluster members
STANDALONE = {"name": "DB", "model": "standalone", "connected": True, "leader": True}
CID = ["uuid", "c1d00000-0000-0000-0000-000000000001"]


def member(connected=True, leader=False, index=10, cid=CID):
    return {
        "name": "DB",
        "model": "clustered",
        "connected": connected,
        "leader": leader,
        "index": index,
        "cid": cid,
    }


NO_TXN = "00000000-0000-0000-0000-000000000000"


class Harness:
    def __init__(self, remotes="tcp:127.0.0.1:6642", **kw):
        self.reactor = MemoryReactorClock()
        self.syncs, self.changes, self.downs = [], [], []
        kw.setdefault("shuffle", False)
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

    def notify(self, method, params):
        self.protocol.dataReceived(
            json.dumps({"id": None, "method": method, "params": params}).encode()
        )

    def server_row(self, row=STANDALONE):
        """Answer the _Server monitor of a new connection with C{row}."""
        (request,) = self.sent()
        assert request["method"] == "monitor_cond"
        assert request["params"] == [
            "_Server",
            "metaproxy-server",
            {
                "Database": {
                    "columns": ["name", "model", "connected", "leader", "index", "cid"],
                    "where": [["name", "==", "DB"]],
                }
            },
        ]
        self.answer(request["id"], {"Database": {"s1": {"initial": row}}})

    def synchronise(self, initial=None, server=STANDALONE, found=False, last="txn-1"):
        self.accept()
        self.server_row(server)
        (request,) = self.sent()
        assert request["method"] == "get_schema" and request["params"] == ["DB"]
        self.answer(request["id"], SCHEMA)
        (monitor,) = self.sent()
        updates = initial or {"T": {"r1": {"initial": {"name": "a"}}}}
        if monitor["method"] == "monitor_cond_since":
            self.answer(monitor["id"], [found, last, updates])
        else:
            self.answer(monitor["id"], updates)
        return monitor


def test_monitor_cond_since_with_conditions_then_update3() -> None:
    h = Harness()
    h.monitor.start()
    monitor = h.synchronise(last="txn-1")
    assert monitor["method"] == "monitor_cond_since"
    assert monitor["params"] == [
        "DB",
        "metaproxy",
        {"T": {"columns": ["name", "ref"], "where": [["ref", "!=", ["set", []]]]}},
        NO_TXN,
    ]
    assert h.syncs[0].tables == {"T": {"r1": {"name": "a", "ref": ()}}}
    assert h.monitor.synchronised and h.monitor.syncs == 1
    assert h.monitor.sync_kinds == {"full": 1, "changes": 0}
    h.notify("update3", ["metaproxy", "txn-2", {"T": {"r1": {"modify": {"name": "b"}}}}])
    assert h.changes[0][0].new == {"name": "b", "ref": ()}


def test_a_server_without_monitor_cond_since_gets_monitor_cond_and_update2() -> None:
    h = Harness()
    h.monitor.start()
    h.accept()
    h.server_row()
    (request,) = h.sent()
    h.answer(request["id"], SCHEMA)
    (since,) = h.sent()
    assert since["method"] == "monitor_cond_since"
    h.answer(since["id"], error="unknown method")
    (cond,) = h.sent()
    assert cond["method"] == "monitor_cond"
    assert cond["params"] == [
        "DB",
        "metaproxy",
        {"T": {"columns": ["name", "ref"], "where": [["ref", "!=", ["set", []]]]}},
    ]
    h.answer(cond["id"], {"T": {"r1": {"initial": {"name": "a"}}}})
    assert h.syncs[0].tables == {"T": {"r1": {"name": "a", "ref": ()}}}
    h.notify("update2", ["metaproxy", {"T": {"r1": {"modify": {"name": "b"}}}}])
    assert h.changes[0][0].new == {"name": "b", "ref": ()}
    # after a reconnect it is asked for a full copy with monitor_cond_since again
    h.lose()
    h.reactor.advance(0.5)
    monitor = h.synchronise({"T": {"r2": {"initial": {"name": "c"}}}})
    assert monitor["params"][3] == NO_TXN


def test_a_server_without_monitor_cond_gets_monitor_and_update() -> None:
    h = Harness(resume=False)
    h.monitor.start()
    h.accept()
    h.server_row()
    (request,) = h.sent()
    h.answer(request["id"], SCHEMA)
    (cond,) = h.sent()
    assert cond["method"] == "monitor_cond"
    h.answer(cond["id"], error={"error": "unknown method"})
    (plain,) = h.sent()
    assert plain["method"] == "monitor"
    assert plain["params"] == ["DB", "metaproxy", {"T": {"columns": ["name", "ref"]}}]
    h.answer(plain["id"], {"T": {"r1": {"new": {"name": "a"}}}})
    assert h.syncs[0].tables["T"]["r1"]["name"] == "a"
    h.notify("update", ["metaproxy", {"T": {"r1": {"old": {"name": "a"}}}}])
    assert h.changes[0][0].new is None


def test_a_server_without_the_server_database_is_used_as_it_is() -> None:
    h = Harness()
    h.monitor.start()
    h.accept()
    (request,) = h.sent()
    h.answer(request["id"], error={"error": "unknown database", "details": "_Server"})
    (schema,) = h.sent()
    assert schema["method"] == "get_schema"
    h.answer(schema["id"], SCHEMA)
    (monitor,) = h.sent()
    h.answer(monitor["id"], [False, NO_TXN, {"T": {"r1": {"initial": {"name": "a"}}}}])
    assert h.monitor.synchronised and len(h.syncs) == 1


def test_reconnect_resumes_from_the_last_transaction_on_the_same_store() -> None:
    resumed = []
    h = Harness(on_resumed=resumed.append)
    h.monitor.start()
    h.synchronise({"T": {"r1": {"initial": {"name": "a"}}, "r2": {"initial": {"name": "b"}}}})
    store = h.syncs[0]
    h.notify("update3", ["metaproxy", "txn-2", {"T": {"r1": {"modify": {"name": "a2"}}}}])
    h.lose()
    assert h.downs and not h.monitor.synchronised
    h.reactor.advance(0.5)
    monitor = h.synchronise(
        {"T": {"r2": {"delete": None}, "r3": {"insert": {"name": "c"}}}},
        found=True,
        last="txn-5",
    )
    assert monitor["params"][3] == "txn-2"  # the last one notified
    assert len(h.syncs) == 1 and h.monitor.synchronised
    assert [(c.uuid, c.new) for c in resumed[0]] == [
        ("r2", None),
        ("r3", {"name": "c", "ref": ()}),
    ]
    assert store.tables == {"T": {"r1": {"name": "a2", "ref": ()}, "r3": {"name": "c", "ref": ()}}}
    assert h.monitor.sync_kinds == {"full": 1, "changes": 1}
    # and the next reconnect starts from the reply's transaction
    h.lose()
    h.reactor.advance(0.5)
    assert h.synchronise(found=True, last="txn-6")["params"][3] == "txn-5"


def test_resumed_without_on_resumed_hands_the_whole_store_to_on_sync() -> None:
    h = Harness()
    h.monitor.start()
    h.synchronise()
    h.lose()
    h.reactor.advance(0.5)
    h.synchronise({"T": {"r2": {"insert": {"name": "c"}}}}, found=True)
    assert len(h.syncs) == 2 and h.syncs[1] is h.syncs[0]
    assert set(h.syncs[1].tables["T"]) == {"r1", "r2"}


def test_not_found_replaces_the_store_with_the_full_copy() -> None:
    resumed = []
    h = Harness(on_resumed=resumed.append)
    h.monitor.start()
    h.synchronise()
    h.lose()
    h.reactor.advance(0.5)
    monitor = h.synchronise({"T": {"r9": {"initial": {"name": "z"}}}}, found=False)
    assert monitor["params"][3] == "txn-1"
    assert resumed == [] and len(h.syncs) == 2 and h.syncs[1] is not h.syncs[0]
    assert h.syncs[1].tables == {"T": {"r9": {"name": "z", "ref": ()}}}


def test_a_schema_without_the_columns_closes_and_retries() -> None:
    h = Harness()
    h.monitor.start()
    h.accept()
    h.server_row()
    (request,) = h.sent()
    h.answer(request["id"], {"name": "Other", "tables": {"T": {"columns": {}}}})
    assert h.transport.disconnecting and h.syncs == []
    h.lose()
    assert h.monitor.members.states[h.monitor.remotes[0]] == "failed"
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
    # 0.5, 1, 2, 3, 3, 3 s, each between half and all of it (jitter)
    for wait, full in zip(waits, [0.5, 1, 2, 3, 3, 3], strict=True):
        assert full / 2 <= wait <= full
    assert h.monitor.members.attempts == {r: 4 if r.port == 1 else 3 for r in h.monitor.remotes}


def test_each_monitor_has_its_own_order_and_spreads_its_waits() -> None:
    import random

    remotes = ",".join(f"tcp:127.0.0.{i}:6642" for i in range(1, 4))
    firsts, orders, waits = set(), set(), []
    for seed in range(30):
        h = Harness(remotes, shuffle=True, rng=random.Random(seed))
        h.monitor.start()
        for _ in range(3):
            h.refuse()
            (call,) = h.reactor.getDelayedCalls()
            waits.append(call.getTime() - h.reactor.seconds())
            h.reactor.advance(waits[-1])
        hosts = [c[0] for c in h.reactor.tcpClients]
        assert sorted(hosts[:3]) == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        assert hosts[3] == hosts[0]  # then round again, in the same order
        firsts.add(hosts[0])
        orders.add(tuple(hosts[:3]))
    assert firsts == {"127.0.0.1", "127.0.0.2", "127.0.0.3"} and len(orders) >= 4
    first_waits = waits[0::3]
    assert min(first_waits) < 0.3 and max(first_waits) > 0.45


def test_lost_connection_reports_down_reconnects_and_resynchronises_fully() -> None:
    h = Harness()
    h.monitor.start()
    h.synchronise()
    h.lose()
    assert h.downs and "server went away" in h.downs[0] and not h.monitor.synchronised
    assert h.monitor.reconnects == {"lost": 1}
    h.reactor.advance(0.5)
    h.synchronise({"T": {"r2": {"initial": {"name": "c"}}}})
    assert len(h.syncs) == 2 and h.syncs[1].tables == {"T": {"r2": {"name": "c", "ref": ()}}}
    # notifications of the old connection's store no longer apply
    assert h.monitor.syncs == 2


def test_a_disconnected_cluster_member_is_refused_and_the_next_one_tried() -> None:
    h = Harness("tcp:127.0.0.1:1,tcp:127.0.0.2:2")
    h.monitor.start()
    h.accept()
    h.server_row(member(connected=False))
    assert h.transport.disconnecting and h.syncs == []
    h.lose()
    members = h.monitor.members
    assert members.states[h.monitor.remotes[0]] == "cluster_disconnected"
    h.reactor.advance(0.5)
    assert h.reactor.tcpClients[-1][0] == "127.0.0.2"
    h.synchronise(server=member(index=12))
    assert h.monitor.synchronised and members.states[h.monitor.remotes[1]] == "usable"
    assert members.refusals == {(h.monitor.remotes[0], "cluster_disconnected"): 1}


def test_a_member_that_loses_its_cluster_is_dropped_at_once() -> None:
    h = Harness("tcp:127.0.0.1:1,tcp:127.0.0.2:2")
    h.monitor.start()
    h.synchronise(server=member(index=10))
    h.notify("update2", ["metaproxy-server", {"Database": {"s1": {"modify": {"index": 11}}}}])
    assert h.monitor.synchronised and not h.transport.disconnecting
    h.notify(
        "update2", ["metaproxy-server", {"Database": {"s1": {"modify": {"connected": False}}}}]
    )
    assert h.transport.disconnecting
    h.lose()
    assert not h.monitor.synchronised
    assert h.downs == [
        "member tcp:127.0.0.1:1 refused: disconnected from its cluster (no leader in "
        "reach, or not joined yet) (follower)"
    ]
    assert h.monitor.reconnects == {"cluster_disconnected": 1}
    h.reactor.advance(0.5)
    assert h.reactor.tcpClients[-1][0] == "127.0.0.2"  # not the same one again


def test_a_member_behind_what_was_read_is_stale() -> None:
    h = Harness("tcp:127.0.0.1:1,tcp:127.0.0.2:2")
    h.monitor.start()
    h.synchronise(server=member(index=10))
    h.notify("update2", ["metaproxy-server", {"Database": {"s1": {"modify": {"index": 20}}}}])
    h.lose()
    h.reactor.advance(0.5)
    h.accept()  # the same member first, now behind
    h.server_row(member(index=15))
    assert h.transport.disconnecting
    h.lose()
    assert h.monitor.members.states[h.monitor.remotes[0]] == "stale"
    h.reactor.advance(1.0)
    h.synchronise(server=member(index=20))
    assert h.monitor.synchronised


def test_state_changes_are_logged_once_each() -> None:
    from twisted.logger import formatEvent, globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        h = Harness(retry_max_interval=1)
        h.monitor.start()
        for _ in range(5):
            h.accept()
            h.server_row(member(connected=False))
            h.lose()
            h.reactor.advance(1)
        for _ in range(3):
            h.refuse()
            h.reactor.advance(1)
        h.synchronise(server=member(index=3))
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [formatEvent(e) for e in events if e.get("log_level").name != "debug"]
    lines = [line for line in lines if "tcp:127.0.0.1:6642" in line]
    assert lines == [
        "OVSDB DB at tcp:127.0.0.1:6642 refused (cluster_disconnected): disconnected from "
        "its cluster (no leader in reach, or not joined yet) (follower); trying it again "
        "with backoff",
        "OVSDB DB at tcp:127.0.0.1:6642 unreachable: cannot connect: Connection was "
        "refused by other side.; trying it again with backoff",
        "OVSDB DB at tcp:127.0.0.1:6642 is usable: connected to its cluster, index 3 (follower)",
    ]


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
    h.notify("update3", ["metaproxy", "txn-2", {"T": {"r9": {"modify": {"name": "x"}}}}])
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


def test_changes_that_cannot_be_applied_mean_a_full_copy_next_time() -> None:
    h = Harness()
    h.monitor.start()
    h.synchronise(last="txn-1")
    h.notify("update3", ["metaproxy", "txn-2", {"T": {"r9": {"modify": {"name": "x"}}}}])
    assert h.transport.disconnecting
    h.lose()
    h.reactor.advance(0.5)
    monitor = h.synchronise({"T": {"r1": {"initial": {"name": "a"}}}})
    assert monitor["params"][3] == NO_TXN
    assert len(h.syncs) == 2 and h.syncs[1] is not h.syncs[0]


# monitor_cond_change (ovsdb-server(7) 4.1.13): params [old id, new id, {table:
# [{"where": ...}]}]; the rows entering or leaving come in a notification before the
# reply {}; a resumed monitor_cond_since sends only rows changed after the transaction
# that match what is asked, so it must ask with what the replica reflects.

NARROW = {"T": [["name", "==", "a"]]}
WIDE = [["ref", "!=", ["set", []]]]


def test_set_conditions_sends_monitor_cond_change_and_applies_what_enters_and_leaves() -> None:
    h = Harness()
    h.monitor.start()
    h.synchronise({"T": {"r1": {"initial": {"name": "b"}}}})
    h.monitor.set_conditions(NARROW)
    (change,) = h.sent()
    assert change["method"] == "monitor_cond_change"
    assert change["params"] == ["metaproxy", "metaproxy", {"T": [{"where": [["name", "==", "a"]]}]}]
    # the server sends the difference first, then the reply
    h.notify(
        "update3",
        ["metaproxy", "txn-1", {"T": {"r1": {"delete": None}, "r2": {"insert": {"name": "a"}}}}],
    )
    assert [(c.uuid, c.new) for c in h.changes[0]] == [
        ("r1", None),
        ("r2", {"name": "a", "ref": ()}),
    ]
    h.answer(change["id"], {})
    assert h.monitor.conditions == NARROW
    # the same conditions again: nothing sent
    h.monitor.set_conditions(NARROW)
    assert h.sent() == []


def test_one_change_at_a_time_the_newest_sent_after_the_reply() -> None:
    h = Harness()
    h.monitor.start()
    h.synchronise()
    h.monitor.set_conditions({"T": [["name", "==", "a"]]})
    (first,) = h.sent()
    h.monitor.set_conditions({"T": [["name", "==", "b"]]})
    h.monitor.set_conditions({"T": [["name", "==", "c"]]})
    assert h.sent() == []  # waiting for the first reply
    h.answer(first["id"], {})
    (second,) = h.sent()
    assert second["params"][2] == {"T": [{"where": [["name", "==", "c"]]}]}
    h.answer(second["id"], {})
    assert h.sent() == []


def test_a_reconnect_after_the_reply_resumes_with_the_new_conditions() -> None:
    h = Harness(on_resumed=lambda changes: None)
    h.monitor.start()
    h.synchronise(last="txn-1")
    h.monitor.set_conditions(NARROW)
    (change,) = h.sent()
    h.answer(change["id"], {})
    h.lose()
    h.reactor.advance(0.5)
    monitor = h.synchronise({}, found=True, last="txn-2")
    assert monitor["method"] == "monitor_cond_since"
    assert monitor["params"][2]["T"]["where"] == [["name", "==", "a"]]
    assert monitor["params"][3] == "txn-1"
    assert h.sent() == []  # nothing left to change


def test_a_change_unanswered_when_the_connection_drops_is_resent_after_resuming() -> None:
    h = Harness(on_resumed=lambda changes: None)
    h.monitor.start()
    h.synchronise(last="txn-1")
    h.monitor.set_conditions(NARROW)
    h.sent()  # the change, never answered
    h.notify("update3", ["metaproxy", "txn-2", {"T": {"r1": {"modify": {"name": "a1"}}}}])
    h.lose()
    h.reactor.advance(0.5)
    # resumed from txn-2 with the conditions the replica reflects (the old ones): rows
    # that match only the new ones and did not change since txn-2 would be missed
    monitor = h.synchronise({}, found=True, last="txn-3")
    assert monitor["params"][2]["T"]["where"] == WIDE
    assert monitor["params"][3] == "txn-2"
    (change,) = h.sent()
    assert change["method"] == "monitor_cond_change"
    assert change["params"][2] == {"T": [{"where": [["name", "==", "a"]]}]}


def test_conditions_set_before_the_first_copy_are_asked_at_once() -> None:
    h = Harness()
    h.monitor.set_conditions(NARROW)
    h.monitor.start()
    monitor = h.synchronise()
    assert monitor["params"][2]["T"]["where"] == [["name", "==", "a"]]
    assert h.sent() == []


def test_a_full_copy_after_a_reconnect_asks_with_the_newest_conditions() -> None:
    h = Harness(resume=False)
    h.monitor.start()
    h.synchronise()
    h.monitor.set_conditions(NARROW)
    h.sent()  # unanswered
    h.lose()
    h.reactor.advance(0.5)
    monitor = h.synchronise()
    assert monitor["method"] == "monitor_cond"
    assert monitor["params"][2]["T"]["where"] == [["name", "==", "a"]]
    assert h.sent() == []


def test_a_refused_change_closes_for_a_full_copy_with_the_new_conditions() -> None:
    h = Harness()
    h.monitor.start()
    h.synchronise(last="txn-1")
    h.monitor.set_conditions(NARROW)
    (change,) = h.sent()
    h.answer(change["id"], error={"error": "syntax error"})
    assert h.transport.disconnecting or h.transport.disconnected
    h.lose()
    h.reactor.advance(0.5)
    monitor = h.synchronise()
    assert monitor["params"][2]["T"]["where"] == [["name", "==", "a"]]
    assert monitor["params"][3] == NO_TXN


def test_conditions_acknowledged_follows_the_replies_and_on_conditions_says_so() -> None:
    acked = []
    h = Harness(on_resumed=lambda changes: None, on_conditions=lambda: acked.append(1))
    assert not h.monitor.conditions_acknowledged  # no replica yet
    h.monitor.start()
    h.synchronise(last="txn-1")
    assert h.monitor.conditions_acknowledged and acked == []
    h.monitor.set_conditions(NARROW)
    (change,) = h.sent()
    # the rows entering come before the reply: not yet all of them known
    assert not h.monitor.conditions_acknowledged
    h.answer(change["id"], {})
    assert h.monitor.conditions_acknowledged and acked == [1]
    # conditions set while disconnected: not acknowledged until the change after resuming
    h.lose()
    assert not h.monitor.conditions_acknowledged
    h.monitor.set_conditions({"T": [["name", "==", "b"]]})
    h.reactor.advance(0.5)
    h.synchronise({}, found=True, last="txn-2")
    assert not h.monitor.conditions_acknowledged
    (change,) = h.sent()
    h.answer(change["id"], {})
    assert h.monitor.conditions_acknowledged and acked == [1, 1]


def test_without_monitor_cond_whole_tables_hold_every_conditions_rows() -> None:
    h = Harness()
    h.monitor.start()
    h.accept()
    h.server_row()
    (request,) = h.sent()
    h.answer(request["id"], SCHEMA)
    (since,) = h.sent()
    h.answer(since["id"], error={"error": "unknown method"})
    (cond,) = h.sent()
    h.answer(cond["id"], error={"error": "unknown method"})
    (plain,) = h.sent()
    h.answer(plain["id"], {"T": {"r1": {"new": {"name": "a"}}}})
    h.monitor.set_conditions(NARROW)
    assert h.sent() == []  # cannot be changed: whole tables come anyway
    assert h.monitor.conditions_acknowledged


def test_a_large_full_copy_is_applied_a_slice_per_turn_holding_notifications() -> None:
    from tests.doubles import reactor_turn

    h = Harness(rows_per_slice=2)
    h.monitor.start()
    rows = {f"r{n}": {"initial": {"name": f"n{n}"}} for n in range(5)}
    h.synchronise(initial={"T": rows}, last="txn-1")
    # 2 of 5 rows applied: nobody has the store, the monitor is not synchronised
    assert not h.syncs and not h.monitor.synchronised
    assert h.monitor.transact([]).called  # refused at once (NotConnected)
    # notifications that come meanwhile wait for the copy, in order
    h.notify("update3", ["metaproxy", "txn-2", {"T": {"r0": {"modify": {"name": "x"}}}}])
    h.notify("update3", ["metaproxy", "txn-3", {"T": {"r4": {"delete": None}}}])
    assert not h.changes
    assert reactor_turn(h.reactor) == 1
    assert not h.syncs
    assert reactor_turn(h.reactor) == 1
    (store,) = h.syncs
    assert h.monitor.synchronised and h.monitor.sync_kinds == {"full": 1, "changes": 0}
    assert [(c[0].uuid, c[0].new) for c in h.changes] == [
        ("r0", {"name": "x", "ref": ()}),
        ("r4", None),
    ]
    assert sorted(store.tables["T"]) == ["r0", "r1", "r2", "r3"]
    assert h.monitor._last_txn == "txn-3"
    h.notify("update3", ["metaproxy", "txn-4", {"T": {"r1": {"modify": {"name": "y"}}}}])
    assert h.changes[-1][0].new == {"name": "y", "ref": ()}


def test_the_connection_lost_while_a_full_copy_is_applied_drops_it() -> None:
    from tests.doubles import reactor_turn

    h = Harness(rows_per_slice=2)
    h.monitor.start()
    rows = {f"r{n}": {"initial": {"name": f"n{n}"}} for n in range(5)}
    h.synchronise(initial={"T": rows})
    h.lose()
    while reactor_turn(h.reactor):
        pass
    assert not h.syncs and not h.monitor.synchronised
    assert h.downs == []  # it was never synchronised
    assert h.monitor._held is None
    # the next connection asks for a full copy again
    h.reactor.advance(60)
    monitor = h.synchronise(initial={"T": {"r9": {"initial": {"name": "z"}}}})
    assert monitor["params"][3] == NO_TXN
    assert h.syncs[0].tables == {"T": {"r9": {"name": "z", "ref": ()}}}


def test_stopped_while_a_full_copy_is_applied_no_slice_is_left_on_the_reactor() -> None:
    h = Harness(rows_per_slice=2)
    h.monitor.start()
    rows = {f"r{n}": {"initial": {"name": f"n{n}"}} for n in range(5)}
    h.synchronise(initial={"T": rows})
    h.monitor.stop()
    h.lose()
    assert h.reactor.getDelayedCalls() == []
    assert not h.syncs and not h.monitor.synchronised


def test_resynchronise_drops_the_replica_the_next_connection_takes_a_full_copy() -> None:
    h = Harness()
    h.monitor.start()
    h.synchronise(last="txn-1")
    h.monitor.resynchronise("the owner could not use it")
    assert h.transport.disconnecting
    h.lose()
    h.reactor.advance(60)
    monitor = h.synchronise(initial={"T": {"r2": {"initial": {"name": "b"}}}}, last="txn-5")
    assert monitor["params"][3] == NO_TXN  # not "txn-1": a full copy
    assert [store.tables for store in h.syncs] == [
        {"T": {"r1": {"name": "a", "ref": ()}}},
        {"T": {"r2": {"name": "b", "ref": ()}}},
    ]


def test_conditions_set_while_a_full_copy_is_applied_are_sent_once_it_is_whole() -> None:
    from tests.doubles import reactor_turn

    h = Harness(rows_per_slice=2)
    h.monitor.start()
    rows = {f"r{n}": {"initial": {"name": f"n{n}"}} for n in range(5)}
    h.synchronise(initial={"T": rows}, last="txn-1")
    h.monitor.set_conditions(NARROW)
    assert h.sent() == [] and not h.monitor.conditions_acknowledged
    reactor_turn(h.reactor)
    assert h.sent() == [] and not h.syncs
    reactor_turn(h.reactor)
    assert len(h.syncs) == 1
    (change,) = h.sent()  # after the copy, with the newest conditions
    assert change["method"] == "monitor_cond_change"
    assert change["params"][2] == {"T": [{"where": NARROW["T"]}]}
    h.answer(change["id"], {})
    assert h.monitor.conditions_acknowledged


@pytest.fixture
def oldest_threshold():
    """The collector's thresholds as the test found them, given back after it."""
    saved = gc.get_threshold()
    yield saved[2]
    gc.set_threshold(*saved)


def held_off() -> bool:
    return gc.get_threshold()[2] > 10**9


def until_monitor_request(h: Harness) -> dict:
    h.accept()
    h.server_row()
    (request,) = h.sent()
    h.answer(request["id"], SCHEMA)
    (monitor,) = h.sent()
    return monitor


def test_full_collections_are_held_off_from_the_monitor_request_until_the_copy_is_in(
    oldest_threshold,
) -> None:
    from tests.doubles import reactor_turn

    h = Harness(rows_per_slice=2)
    h.monitor.start()
    assert not held_off()
    monitor = until_monitor_request(h)
    assert held_off()  # the reply, a full copy, is decoded meanwhile
    rows = {f"r{n}": {"initial": {"name": f"n{n}"}} for n in range(5)}
    h.answer(monitor["id"], [False, "txn-1", {"T": rows}])
    assert held_off() and not h.syncs
    reactor_turn(h.reactor)
    assert held_off()
    reactor_turn(h.reactor)
    assert len(h.syncs) == 1
    assert gc.get_threshold()[2] == oldest_threshold


def test_the_hold_is_given_back_when_the_connection_is_lost_before_the_reply(
    oldest_threshold,
) -> None:
    h = Harness()
    h.monitor.start()
    until_monitor_request(h)
    assert held_off()
    h.lose()
    assert gc.get_threshold()[2] == oldest_threshold


def test_a_member_refused_while_its_full_copy_is_applied_gives_no_replica() -> None:
    from tests.doubles import reactor_turn

    h = Harness("tcp:127.0.0.1:1,tcp:127.0.0.2:2", rows_per_slice=2)
    h.monitor.start()
    rows = {f"r{n}": {"initial": {"name": f"n{n}"}} for n in range(5)}
    h.synchronise(initial={"T": rows}, server=member(index=10))
    assert not h.syncs  # the copy is being applied, a slice per turn
    h.notify(
        "update2", ["metaproxy-server", {"Database": {"s1": {"modify": {"connected": False}}}}]
    )
    assert h.transport.disconnecting  # the connection ends a turn later
    reactor_turn(h.reactor)
    reactor_turn(h.reactor)
    assert not h.syncs and not h.monitor.synchronised
    h.lose()
    assert not h.syncs
    assert h.monitor.members.states[h.monitor.remotes[0]] == "cluster_disconnected"
    h.reactor.advance(0.5)
    assert h.reactor.tcpClients[-1][0] == "127.0.0.2"  # the other member next
