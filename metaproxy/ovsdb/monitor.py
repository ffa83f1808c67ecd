"""A reconnecting OVSDB monitor: connect, check the server may be used, read the schema,
monitor some columns of some tables, keep them in a L{RowStore}, and catch up after
every disconnect.

On each connection (remotes are tried in turn, in an order of this client's own, with a
jittered exponential backoff between failed attempts up to C{retry_max_interval}: see
L{metaproxy.ovsdb.members}):

  1. C{monitor_cond} on the server's C{_Server.Database} row of the database: a cluster
     member that is not connected to its cluster, or that is behind what this client
     has already read, is refused and the next remote is tried
     (L{metaproxy.ovsdb.cluster}); a server without C{_Server} is used as it is. The
     row stays monitored: when the member loses its cluster later, C{on_down} is
     called at once and the client moves on;
  2. C{get_schema}: the monitored columns must exist (else the server is not the
     database we want: logged, retried);
  3. C{monitor_cond_since} with the conditions and the id of the last transaction
     seen (the server sends C{update3} notifications, each with its transaction's
     id). When the server still has the changes since that transaction it sends only
     them, applied to the replica kept from the last connection and handed to
     C{on_resumed(changes)}; otherwise (C{found} false, or the first connection) it
     sends a full copy: a new store, filled a slice of rows per reactor turn
     (L{metaproxy.ovsdb.slices}; the notifications that arrive meanwhile are held and
     applied in order after it), then handed to C{on_sync(store)}. A server without
     C{monitor_cond_since} gets C{monitor_cond} (C{update2}), and one without that
     C{monitor} (C{update}, whole tables): a full copy on every connection;
  4. every notification after it goes to C{on_changes(changes)}.

L{OvsdbMonitor.set_conditions} changes the conditions of the live session
(C{monitor_cond_change}, one request at a time): the server sends the rows that enter
and leave the monitored set as one notification (C{on_changes}) before its reply. The
replica reflects the I{acknowledged} conditions (those of the last reply, or of the
last full copy); a reconnect that resumes (C{monitor_cond_since} with the last
transaction id) asks with those, since the server sends only the rows changed after
that transaction that match what is asked, so rows matching newer conditions only
would never arrive; the newer conditions follow in a C{monitor_cond_change} once the
replica is current. A reconnect that takes a full copy asks with the newest
conditions at once.

C{synchronised} is true only while the replica is the current copy of a usable
member: from step 3 until the connection is lost or the member refused, which call
C{on_down(reason)}. Echo requests from the server are answered, and the protocol probes
a silent server (L{metaproxy.ovsdb.jsonrpc}).

L{OvsdbMonitor.resynchronise} drops the replica and the connection, for an owner that
could not use what it was given: the next connection takes a full copy.

L{OvsdbMonitor.transact} sends a transaction on the same connection once it is
synchronised (the writer's view of the rows is the replica it was given); before that,
or after the connection is lost, it fails at once with L{NotConnected}: the caller
retries on the next C{on_sync}, which brings the rows as they are then.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from metaproxy.ovsdb.cluster import (
    SERVER_COLUMNS,
    SERVER_DATABASE,
    SERVER_SCHEMA,
    USABLE,
    ClusterView,
    Verdict,
)
from metaproxy.ovsdb.data import DataError, RowChange, RowStore, Schema
from metaproxy.ovsdb.jsonrpc import JsonRpcProtocol, RpcError
from metaproxy.ovsdb.members import Members
from metaproxy.ovsdb.operations import check_results
from metaproxy.ovsdb.remote import Remote, endpoint_for
from metaproxy.ovsdb.slices import (
    ROWS_PER_SLICE,
    hold_full_collections,
    run_in_slices,
    slice_updates,
)

__all__ = ["OvsdbMonitor", "NotConnected"]

log = Logger("metaproxy.ovsdb")

_MONITOR_ID = "metaproxy"
_SERVER_MONITOR_ID = "metaproxy-server"
#: the transaction id that asks for a full copy
NO_TRANSACTION = "00000000-0000-0000-0000-000000000000"


class _SchemaMismatch(Exception):
    pass


class NotConnected(Exception):
    """A transaction was asked for while the monitor is not synchronised."""


class _Refused(Exception):
    """The member's C{_Server} row says it must not be used."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.why)
        self.verdict = verdict


class OvsdbMonitor:
    """Keeps a replica of some columns of some tables of one database.

    @param reactor: provides time and connections.
    @param remotes: tried in turn, in an order of this monitor's own (C{shuffle}).
    @param database: e.g. C{OVN_Southbound}.
    @param columns: table -> monitored columns.
    @param on_sync: C{(store)}: a full copy arrived (the first, or after a reconnect
        the server could not resume).
    @param on_changes: C{(changes)}: a notification changed rows.
    @param on_down: C{(reason)}: the replica is no longer the current copy of a usable
        member (connection lost, member refused).
    @param on_resumed: C{(changes)}: after a reconnect, the changes since the last
        transaction seen were applied to the same store: it is current again. Not given:
        C{on_sync(store)} is called instead.
    @param on_conditions: C{()}: the server acknowledged a C{monitor_cond_change} (the
        rows that entered and left came to C{on_changes} before).
    @param conditions: table -> C{monitor_cond} conditions (a row is monitored when any
        holds); a table not given is monitored whole.
    @param tls_options: for C{ssl:} remotes (L{metaproxy.ovsdb.remote.load_tls_options}).
    @param timeout: seconds to connect, and for each request to be answered.
    @param probe_interval: seconds of silence before an echo probe (0: none).
    @param retry_max_interval: the longest wait between connection attempts.
    @param min_retry_interval: the first wait.
    @param resume: ask for the changes since the last transaction on reconnects
        (C{monitor_cond_since}); False: a full copy every time (C{monitor_cond}).
    @param shuffle: try the remotes in a random order of this monitor's own.
    @param rng: the random source of the order and the jitter (tests pass their own).
    @param rows_per_slice: the rows of a full copy applied per reactor turn
        (L{metaproxy.ovsdb.slices}).
    """

    def __init__(
        self,
        reactor: Any,
        remotes: Sequence[Remote],
        database: str,
        columns: Mapping[str, Sequence[str]],
        *,
        on_sync: Callable[[RowStore], None],
        on_changes: Callable[[list[RowChange]], None],
        on_down: Callable[[str], None] = lambda reason: None,
        on_resumed: Callable[[list[RowChange]], None] | None = None,
        on_conditions: Callable[[], None] = lambda: None,
        conditions: Mapping[str, list[Any]] | None = None,
        tls_options: Any = None,
        timeout: float = 180.0,
        probe_interval: float = 60.0,
        retry_max_interval: float = 180.0,
        min_retry_interval: float = 0.5,
        resume: bool = True,
        shuffle: bool = True,
        rng: random.Random | None = None,
        rows_per_slice: int = ROWS_PER_SLICE,
    ) -> None:
        self._reactor = reactor
        self.remotes = tuple(remotes)
        self._database = database
        self._columns = {table: list(cols) for table, cols in columns.items()}
        #: the conditions wanted (the newest L{set_conditions})
        self._conditions = dict(conditions or {})
        #: the conditions the replica reflects (acknowledged by the server)
        self._acked_conditions = dict(self._conditions)
        self._changing = False  # a monitor_cond_change awaits its reply
        self._on_sync = on_sync
        self._on_changes = on_changes
        self._on_down = on_down
        self._on_resumed = on_resumed
        self._on_conditions = on_conditions
        self._tls = tls_options
        self._timeout = timeout
        self._probe_interval = probe_interval
        self._resume = resume
        self._rows_per_slice = rows_per_slice
        #: the remotes in this monitor's order, their states and counts
        self.members = Members(
            database,
            self.remotes,
            retry_min=min_retry_interval,
            retry_max=retry_max_interval,
            rng=rng,
            shuffle=shuffle,
        )
        self._cluster = ClusterView()
        self._running = False
        self._retry_call: Any = None
        self._connecting: Deferred[Any] | None = None
        self._protocol: JsonRpcProtocol | None = None
        self._server_rows: RowStore | None = None  # the _Server row, this connection
        self._refusal: Verdict | None = None  # why this connection is being closed
        self._store: RowStore | None = None  # the replica, kept across connections
        self._last_txn = NO_TRANSACTION
        self._update_method = ""
        # notifications received while a full copy is applied in slices, else None;
        # the slicing itself (cancelled when the connection is lost)
        self._held: list[tuple[str, Any]] | None = None
        self._slicing: Deferred[None] | None = None
        self._stopped: Deferred[None] | None = None
        #: the remote of the current (or last) connection
        self.remote: Remote | None = None
        #: the replica is the current copy of a usable member
        self.synchronised = False
        #: synchronisations done: full copies and resumptions
        self.syncs = 0
        #: synchronisations by kind: C{"full"} (a whole copy) or C{"changes"} (resumed)
        self.sync_kinds: dict[str, int] = {"full": 0, "changes": 0}
        #: synchronised connections lost or dropped, by cause (C{"lost"} or the
        #: member's state when it was refused)
        self.reconnects: dict[str, int] = {}

    def start(self) -> None:
        if not self._running:
            self._running = True
            self._connect()

    def stop(self) -> Deferred[None]:
        """Stop reconnecting and close the connection; fires when it is closed."""
        self._running = False
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        if self._connecting is not None:
            self._connecting.cancel()
        protocol = self._protocol
        if protocol is None or protocol.closed:
            return succeed(None)
        self._stopped = Deferred()
        protocol.transport.abortConnection()
        return self._stopped

    def transact(
        self, operations: Sequence[Mapping[str, Any]], must_match: Sequence[int] = ()
    ) -> Deferred[list[Any]]:
        """Run one transaction on the current connection.

        @param must_match: indexes of operations whose C{where} must match a row.
        @return: fires with the results; fails with L{NotConnected},
            L{metaproxy.ovsdb.operations.TransactError} (an operation failed),
            L{metaproxy.ovsdb.jsonrpc.RpcError}, C{RpcTimeout} or C{ConnectionLost}.
        """
        protocol = self._protocol
        if protocol is None or protocol.closed or not self.synchronised:
            return fail(
                NotConnected(f"OVSDB {self._database} is not connected; transaction not sent")
            )
        operations = list(operations)
        d = protocol.request("transact", [self._database, *operations])
        d.addCallback(lambda results: check_results(operations, results, must_match))
        return d

    @property
    def conditions(self) -> dict[str, list[Any]]:
        """The conditions wanted: the newest given (the replica follows once the
        server has acknowledged them)."""
        return dict(self._conditions)

    @property
    def conditions_acknowledged(self) -> bool:
        """The replica is synchronised and reflects the newest conditions (no change is
        waiting to be sent or for its reply). A server without conditions (C{monitor})
        sends whole tables: every condition's rows are there."""
        if self._update_method == "update":
            return self.synchronised
        return (
            self.synchronised and not self._changing and self._acked_conditions == self._conditions
        )

    def set_conditions(self, conditions: Mapping[str, list[Any]]) -> None:
        """Monitor the rows of C{conditions} from now on (tables not given keep theirs).

        On a synchronised connection a C{monitor_cond_change} is sent (or queued behind
        the one awaiting its reply); otherwise they are used from the next connection.
        The rows that enter or leave come to C{on_changes}.
        """
        wanted = {**self._conditions, **conditions}
        if wanted == self._conditions:
            return
        self._conditions = wanted
        self._send_condition_change()

    def _send_condition_change(self) -> None:
        protocol = self._protocol
        if (
            self._changing
            or protocol is None
            or protocol.closed
            or not self.synchronised
            or self._update_method not in ("update2", "update3")
        ):
            return  # sent after the reply, or on the next connection
        changed = {
            table: where
            for table, where in self._conditions.items()
            if self._acked_conditions.get(table) != where
        }
        if not changed:
            return
        requests = {table: [{"where": where}] for table, where in changed.items()}
        asked = dict(self._conditions)
        self._changing = True
        d = protocol.request("monitor_cond_change", [_MONITOR_ID, _MONITOR_ID, requests])
        d.addCallbacks(
            self._condition_changed,
            self._condition_change_failed,
            callbackArgs=(protocol, asked),
            errbackArgs=(protocol,),
        )

    def _condition_changed(self, result: Any, protocol: JsonRpcProtocol, asked: dict) -> None:
        if protocol is not self._protocol:
            return  # the connection it was sent on is gone: _lost reset the state
        self._changing = False
        # the rows that entered or left came before this reply, in a notification
        self._acked_conditions = asked
        self._send_condition_change()
        self._on_conditions()

    def _condition_change_failed(self, failure: Failure, protocol: JsonRpcProtocol) -> None:
        if protocol is not self._protocol or protocol.closed:
            return
        self._changing = False
        log.error(
            "OVSDB {database} at {remote} refused new monitor conditions ({error}); "
            "reconnecting for a full copy with them",
            database=self._database,
            remote=str(self.remote),
            error=failure.getErrorMessage(),
        )
        self.resynchronise(f"cannot change the monitor conditions of {self._database}")

    def resynchronise(self, why: str) -> None:
        """Drop the replica and close the connection: the next one asks for a full
        copy (for an owner that could not use the last one it was given)."""
        self._store = None
        self._last_txn = NO_TRANSACTION
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            protocol.close(why)

    # connecting

    def _connect(self) -> None:
        self._retry_call = None
        if not self._running:
            return
        remote = self.members.next_remote()
        self.remote = remote
        try:
            endpoint = endpoint_for(self._reactor, remote, self._timeout, self._tls)
        except Exception as e:
            self._failed(remote, "failed", str(e))
            return
        factory = Factory.forProtocol(self._new_protocol)
        d = endpoint.connect(factory)
        self._connecting = d
        d.addCallbacks(
            self._connected, self._connect_failed, callbackArgs=(remote,), errbackArgs=(remote,)
        )

    def _new_protocol(self) -> JsonRpcProtocol:
        protocol: JsonRpcProtocol

        def notified(method: str, params: Any) -> None:
            self._notification(protocol, method, params)

        protocol = JsonRpcProtocol(self._reactor, self._timeout, self._probe_interval, notified)
        return protocol

    def _connect_failed(self, failure: Failure, remote: Remote) -> None:
        self._connecting = None
        if not self._running:
            return
        self._failed(remote, "unreachable", f"cannot connect: {failure.getErrorMessage()}")

    def _failed(self, remote: Remote, state: str, why: str) -> None:
        self.members.set_state(remote, state, why)
        delay = self.members.next_delay()
        log.debug(
            "OVSDB {database}: next attempt in {delay:.1f} s",
            database=self._database,
            delay=delay,
        )
        if self._running:
            self._retry_call = self._reactor.callLater(delay, self._connect)

    def _connected(self, protocol: JsonRpcProtocol, remote: Remote) -> None:
        self._connecting = None
        self._protocol = protocol
        self._server_rows = None
        self._refusal = None
        protocol.on_lost = lambda reason: self._lost(protocol, remote, reason)
        if not self._running:
            protocol.transport.abortConnection()
            return
        request = {
            "Database": {"columns": SERVER_COLUMNS, "where": [["name", "==", self._database]]}
        }
        d = protocol.request("monitor_cond", [SERVER_DATABASE, _SERVER_MONITOR_ID, request])
        d.addCallbacks(
            self._server_row,
            self._without_server,
            callbackArgs=(protocol, remote),
            errbackArgs=(protocol, remote),
        )
        d.addCallback(lambda _: protocol.request("get_schema", [self._database]))
        d.addCallback(self._got_schema, protocol)
        d.addErrback(self._setup_failed, protocol, remote)

    def _server_row(self, updates: Any, protocol: JsonRpcProtocol, remote: Remote) -> None:
        rows = RowStore(SERVER_SCHEMA, {"Database": SERVER_COLUMNS})
        rows.apply_update2(updates)
        self._server_rows = rows
        verdict = self._cluster.judge(self._database, rows.tables["Database"])
        if not verdict.usable:
            raise _Refused(verdict)

    def _without_server(self, failure: Failure, protocol: JsonRpcProtocol, remote: Remote) -> None:
        failure.trap(RpcError)
        log.info(
            "OVSDB {database} at {remote} has no {server} database ({error}); using it "
            "without knowing its cluster state",
            database=self._database,
            remote=str(remote),
            server=SERVER_DATABASE,
            error=failure.value.error,
        )

    def _got_schema(self, result: Any, protocol: JsonRpcProtocol) -> Deferred[Any]:
        schema = Schema.from_json(result)
        missing = schema.missing(self._columns)
        if missing:
            raise _SchemaMismatch(
                f"database {schema.name} {schema.version} lacks {', '.join(missing)}; is "
                f"this the {self._database} database of a supported OVN version?"
            )
        fresh = RowStore(schema, self._columns)
        kept = self._store
        since = (
            self._last_txn
            if self._resume and kept is not None and kept.column_kinds == fresh.column_kinds
            else NO_TRANSACTION
        )
        # resuming: the conditions the kept replica reflects (newer ones follow in a
        # monitor_cond_change); a full copy: the newest
        if since == NO_TRANSACTION:
            self._acked_conditions = dict(self._conditions)
        requests = {}
        for table, columns in self._columns.items():
            request: dict[str, Any] = {"columns": columns}
            if table in self._acked_conditions:
                request["where"] = self._acked_conditions[table]
            requests[table] = request
        # the reply may be a full copy: its decoding makes most of its objects, so the
        # collector's full collections are held off from the request on, until the copy
        # is applied (L{metaproxy.ovsdb.slices})
        release = hold_full_collections()
        if not self._resume:
            d = self._monitor_cond(protocol, fresh, requests)
        else:
            d = protocol.request(
                "monitor_cond_since", [self._database, _MONITOR_ID, requests, since]
            )
            d.addCallback(self._since_reply, protocol, fresh, since)
            d.addErrback(self._without_since, protocol, fresh, requests)
        d.addBoth(_released, release)
        return d

    def _since_reply(
        self, result: Any, protocol: JsonRpcProtocol, fresh: RowStore, since: str
    ) -> Deferred[None] | None:
        if not (isinstance(result, list) and len(result) == 3 and isinstance(result[1], str)):
            raise DataError(f"monitor_cond_since answered {str(result)[:200]!r}")
        found, last_txn, updates = result
        kept = self._store
        if protocol.closed:
            return None
        if found is True and since != NO_TRANSACTION and kept is not None:
            changes = self._apply(kept, "update3", updates)
            self._synchronised(protocol, kept, "update3", last_txn, changes)
            return None
        # a full copy, with the conditions asked (newer ones follow)
        d = self._apply_full_copy(protocol, fresh, "update3", updates)
        d.addCallback(lambda _: self._synchronised(protocol, fresh, "update3", last_txn, None))
        return d

    def _without_since(
        self,
        failure: Failure,
        protocol: JsonRpcProtocol,
        fresh: RowStore,
        requests: dict[str, Any],
    ) -> Deferred[Any]:
        failure.trap(RpcError)
        log.info(
            "OVSDB {database} at {remote} has no monitor_cond_since ({error}); a full copy "
            "on every reconnect",
            database=self._database,
            remote=str(self.remote),
            error=failure.value.error,
        )
        return self._monitor_cond(protocol, fresh, requests)

    def _monitor_cond(
        self, protocol: JsonRpcProtocol, fresh: RowStore, requests: dict[str, Any]
    ) -> Deferred[Any]:
        d = protocol.request("monitor_cond", [self._database, _MONITOR_ID, requests])
        d.addCallback(self._full_copy, protocol, fresh, "update2")
        d.addErrback(self._without_conditions, protocol, fresh)
        return d

    def _without_conditions(
        self, failure: Failure, protocol: JsonRpcProtocol, store: RowStore
    ) -> Deferred[Any]:
        failure.trap(RpcError)
        log.info(
            "OVSDB {database} at {remote} has no monitor_cond ({error}); monitoring whole tables",
            database=self._database,
            remote=str(self.remote),
            error=failure.value.error,
        )
        requests = {table: {"columns": columns} for table, columns in self._columns.items()}
        d = protocol.request("monitor", [self._database, _MONITOR_ID, requests])
        d.addCallback(self._full_copy, protocol, store, "update")
        return d

    def _full_copy(
        self, updates: Any, protocol: JsonRpcProtocol, store: RowStore, method: str
    ) -> Deferred[None]:
        d = self._apply_full_copy(protocol, store, method, updates)
        d.addCallback(lambda _: self._synchronised(protocol, store, method, NO_TRANSACTION, None))
        return d

    def _apply_full_copy(
        self, protocol: JsonRpcProtocol, store: RowStore, method: str, updates: Any
    ) -> Deferred[None]:
        """Apply a full copy to C{store} (a new one, handed to nobody yet) a slice of
        rows per reactor turn (L{metaproxy.ovsdb.slices}), so that a large one does not
        hold the reactor. The notifications that arrive meanwhile are held, and applied
        in order once the copy is in place (L{_synchronised}). The connection lost
        midway: the slices stop, and the copy is dropped."""
        apply = store.apply_update if method == "update" else store.apply_update2

        def steps() -> Iterator[None]:
            for number, part in enumerate(slice_updates(updates, self._rows_per_slice)):
                if number:
                    yield
                    if protocol.closed:
                        return
                apply(part)

        self._held = []
        d = run_in_slices(self._reactor, steps())
        if not d.called:
            self._slicing = d
            d.addBoth(self._sliced, d)
        return d

    def _sliced(self, result: Any, d: Deferred[None]) -> Any:
        if self._slicing is d:
            self._slicing = None
        return result

    def _synchronised(
        self,
        protocol: JsonRpcProtocol,
        store: RowStore,
        method: str,
        last_txn: str,
        changes: list[RowChange] | None,
    ) -> None:
        """The replica is current: C{changes} None for a full copy in C{store}."""
        if protocol.closed or self._refusal is not None:
            # closed, or being closed: a member refused while the copy was applied
            # (its connection ends a turn later) gives no replica
            return
        self._store = store
        self._last_txn = last_txn
        self._update_method = method
        self.members.succeeded()
        if self.remote is not None:
            self.members.set_state(self.remote, USABLE, self._usable_why())
        self.synchronised = True
        self.syncs += 1
        if changes is None:
            self.sync_kinds["full"] += 1
            self._on_sync(store)
            if not self._apply_held(protocol):
                return
        else:
            self.sync_kinds["changes"] += 1
            if self._on_resumed is not None:
                self._on_resumed(changes)
            else:
                self._on_sync(store)
        self._send_condition_change()  # set while disconnected, or newer than resumed

    def _apply_held(self, protocol: JsonRpcProtocol) -> bool:
        """The notifications held while a full copy was applied, in order; False when
        one could not be applied (the connection is closed, to resynchronise)."""
        held, self._held = self._held, None
        for method, params in held or ():
            if protocol.closed:
                return False
            try:
                self._notification(protocol, method, params)
            except Exception as e:
                protocol.close(
                    f"notification {method} could not be applied "
                    f"({type(e).__name__}: {e}); resynchronising"
                )
                return False
        return True

    def _usable_why(self) -> str:
        rows = self._server_rows
        if rows is None:
            return "no cluster state (a server without _Server)"
        verdict = self._cluster.judge(self._database, rows.tables["Database"])
        return f"{verdict.why} ({verdict.role})"

    def _setup_failed(self, failure: Failure, protocol: JsonRpcProtocol, remote: Remote) -> None:
        if protocol.closed:
            return  # _lost reports it
        if failure.check(_Refused):
            self._refusal = failure.value.verdict
            protocol.transport.abortConnection()
            return
        if failure.check(_SchemaMismatch, DataError, RpcError):
            why = str(failure.value)
        else:
            why = f"{failure.type.__name__}: {failure.getErrorMessage()}"
        self._refusal = Verdict("failed", why)
        protocol.close(f"cannot monitor {self._database}: {why}")

    # running

    def _notification(self, protocol: JsonRpcProtocol, method: str, params: Any) -> None:
        if protocol is not self._protocol or not isinstance(params, list) or not params:
            return
        if params[0] == _SERVER_MONITOR_ID:
            if method == "update2" and len(params) == 2 and self._server_rows is not None:
                self._server_rows.apply_update2(params[1])
                self._server_changed(protocol)
            return
        if self._held is not None:
            if params[0] == _MONITOR_ID:
                self._held.append((method, params))  # a full copy is being applied
            return
        store = self._store
        if not self.synchronised or store is None or method != self._update_method:
            return  # not ours (or a "locked"/"stolen"/... we did not ask for)
        if params[0] != _MONITOR_ID:
            return
        if method == "update3":
            if len(params) != 3:
                return
            changes = self._apply(store, method, params[2])
            self._last_txn = params[1]
        elif len(params) != 2:
            return
        else:
            changes = self._apply(store, method, params[1])
        self._on_changes(changes)

    def _apply(self, store: RowStore, method: str, updates: Any) -> list[RowChange]:
        """Apply changes to the replica. When they cannot be, the replica may be half
        changed: the next connection asks for a full copy (and this one is closed by
        the caller)."""
        try:
            if method == "update":
                return store.apply_update(updates)
            return store.apply_update2(updates)
        except Exception:
            self._store = None
            self._last_txn = NO_TRANSACTION
            raise

    def _server_changed(self, protocol: JsonRpcProtocol) -> None:
        assert self._server_rows is not None
        verdict = self._cluster.judge(self._database, self._server_rows.tables["Database"])
        if verdict.usable or self._refusal is not None:
            return
        self._refusal = verdict
        protocol.transport.abortConnection()

    def _lost(self, protocol: JsonRpcProtocol, remote: Remote, reason: Failure) -> None:
        if protocol is self._protocol:
            self._protocol = None
            self._server_rows = None
            self._update_method = ""
            self._held = None
            if self._slicing is not None:
                # a full copy half applied to a store nobody has: dropped
                slicing, self._slicing = self._slicing, None
                slicing.cancel()
            # a change without its reply may or may not have reached the replica: the
            # next connection resumes with the acknowledged conditions, then changes
            self._changing = False
        refusal, self._refusal = self._refusal, None
        was_synchronised = self.synchronised
        self.synchronised = False
        if self._stopped is not None:
            stopped, self._stopped = self._stopped, None
            stopped.callback(None)
        if not self._running:
            return
        if refusal is not None:
            state, why = refusal.state, refusal.why
            if refusal.role:
                why = f"{why} ({refusal.role})"
            down = f"member {remote} refused: {why}"
        else:
            lost = reason.getErrorMessage() if reason is not None else "closed"
            state, why = "unreachable", f"disconnected ({lost})"
            down = f"connection to {remote} lost: {lost}"
        if was_synchronised:
            cause = state if refusal is not None else "lost"
            self.reconnects[cause] = self.reconnects.get(cause, 0) + 1
            self._on_down(down)
            self.members.succeeded()
            if refusal is None:
                # a connection that worked: reconnect soon, to the same remote first
                self.members.again()
        self._failed(remote, state, why)


def _released(result: Any, release: Callable[[], None]) -> Any:
    release()
    return result
