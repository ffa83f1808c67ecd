"""A reconnecting OVSDB monitor: connect, read the schema, monitor some columns of some
tables, keep them in a L{RowStore}, and start again from nothing after every disconnect.

On each connection (remotes are tried in turn, with exponential backoff between failed
attempts up to C{retry_max_interval}):

  1. C{get_schema}: the monitored columns must exist (else the server is not the
     database we want: logged, retried);
  2. C{monitor_cond} with the conditions (the server sends C{update2} notifications);
     a server without it (an error answer) gets C{monitor} (C{update} notifications)
     and every row of the tables;
  3. the reply is a full copy of the monitored rows: a new store, handed to
     C{on_sync(store)}; every notification after it goes to C{on_changes(changes)}.

A lost connection calls C{on_down(reason)} and reconnects. Echo requests from the server
are answered, and the protocol probes a silent server (L{metaproxy.ovsdb.jsonrpc}).

L{OvsdbMonitor.transact} sends a transaction on the same connection once it is
synchronised (the writer's view of the rows is the replica it was given); before that,
or after the connection is lost, it fails at once with L{NotConnected}: the caller
retries on the next C{on_sync}, which brings the rows as they are then.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from metaproxy.ovsdb.data import DataError, RowChange, RowStore, Schema
from metaproxy.ovsdb.jsonrpc import JsonRpcProtocol, RpcError
from metaproxy.ovsdb.operations import check_results
from metaproxy.ovsdb.remote import Remote, endpoint_for

__all__ = ["OvsdbMonitor", "NotConnected"]

log = Logger("metaproxy.ovsdb")

_MONITOR_ID = "metaproxy"


class _SchemaMismatch(Exception):
    pass


class NotConnected(Exception):
    """A transaction was asked for while the monitor is not synchronised."""


class OvsdbMonitor:
    """Keeps a replica of some columns of some tables of one database.

    @param reactor: provides time and connections.
    @param remotes: tried in turn.
    @param database: e.g. C{OVN_Southbound}.
    @param columns: table -> monitored columns.
    @param conditions: table -> C{monitor_cond} conditions (a row is monitored when any
        holds); a table not given is monitored whole.
    @param tls_options: for C{ssl:} remotes (L{metaproxy.ovsdb.remote.load_tls_options}).
    @param timeout: seconds to connect, and for each request to be answered.
    @param probe_interval: seconds of silence before an echo probe (0: none).
    @param retry_max_interval: the longest wait between connection attempts.
    @param min_retry_interval: the first wait.
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
        conditions: Mapping[str, list[Any]] | None = None,
        tls_options: Any = None,
        timeout: float = 180.0,
        probe_interval: float = 60.0,
        retry_max_interval: float = 180.0,
        min_retry_interval: float = 0.5,
    ) -> None:
        self._reactor = reactor
        self.remotes = tuple(remotes)
        self._database = database
        self._columns = {table: list(cols) for table, cols in columns.items()}
        self._conditions = dict(conditions or {})
        self._on_sync = on_sync
        self._on_changes = on_changes
        self._on_down = on_down
        self._tls = tls_options
        self._timeout = timeout
        self._probe_interval = probe_interval
        self._retry_max = max(retry_max_interval, min_retry_interval)
        self._retry_min = min_retry_interval
        self._next_remote = 0
        self._failures = 0
        self._running = False
        self._retry_call: Any = None
        self._connecting: Deferred[Any] | None = None
        self._protocol: JsonRpcProtocol | None = None
        self._store: RowStore | None = None
        self._update_method = ""
        self._stopped: Deferred[None] | None = None
        #: the remote of the current (or last) connection
        self.remote: Remote | None = None
        #: synchronised on the current connection
        self.synchronised = False
        #: full synchronisations done (one per connection)
        self.syncs = 0

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

    # connecting

    def _connect(self) -> None:
        self._retry_call = None
        if not self._running:
            return
        remote = self.remotes[self._next_remote % len(self.remotes)]
        self._next_remote += 1
        self.remote = remote
        try:
            endpoint = endpoint_for(self._reactor, remote, self._timeout, self._tls)
        except Exception as e:
            self._failed(remote, str(e))
            return
        factory = Factory.forProtocol(self._new_protocol)
        d = endpoint.connect(factory)
        self._connecting = d
        d.addCallbacks(
            self._connected, self._connect_failed, callbackArgs=(remote,), errbackArgs=(remote,)
        )

    def _new_protocol(self) -> JsonRpcProtocol:
        return JsonRpcProtocol(
            self._reactor, self._timeout, self._probe_interval, self._notification
        )

    def _connect_failed(self, failure: Failure, remote: Remote) -> None:
        self._connecting = None
        if not self._running:
            return
        self._failed(remote, f"cannot connect: {failure.getErrorMessage()}")

    def _failed(self, remote: Remote, why: str) -> None:
        delay = min(self._retry_max, self._retry_min * (2 ** min(self._failures, 30)))
        delay *= random.uniform(0.8, 1.0)
        self._failures += 1
        log.warn(
            "OVSDB {database} at {remote}: {why}; retrying in {delay:.1f} s",
            database=self._database,
            remote=str(remote),
            why=why,
            delay=delay,
        )
        if self._running:
            self._retry_call = self._reactor.callLater(delay, self._connect)

    def _connected(self, protocol: JsonRpcProtocol, remote: Remote) -> None:
        self._connecting = None
        self._protocol = protocol
        protocol.on_lost = lambda reason: self._lost(protocol, remote, reason)
        if not self._running:
            protocol.transport.abortConnection()
            return
        d = protocol.request("get_schema", [self._database])
        d.addCallback(self._got_schema, protocol)
        d.addErrback(self._setup_failed, protocol, remote)

    def _got_schema(self, result: Any, protocol: JsonRpcProtocol) -> Deferred[Any]:
        schema = Schema.from_json(result)
        missing = schema.missing(self._columns)
        if missing:
            raise _SchemaMismatch(
                f"database {schema.name} {schema.version} lacks {', '.join(missing)}; is "
                f"this the {self._database} database of a supported OVN version?"
            )
        store = RowStore(schema, self._columns)
        requests = {}
        for table, columns in self._columns.items():
            request: dict[str, Any] = {"columns": columns}
            if table in self._conditions:
                request["where"] = self._conditions[table]
            requests[table] = request
        d = protocol.request("monitor_cond", [self._database, _MONITOR_ID, requests])
        d.addCallback(self._initial, protocol, store, "update2")
        d.addErrback(self._without_conditions, protocol, store)
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
        d.addCallback(self._initial, protocol, store, "update")
        return d

    def _initial(
        self, updates: Any, protocol: JsonRpcProtocol, store: RowStore, method: str
    ) -> None:
        if method == "update2":
            store.apply_update2(updates)
        else:
            store.apply_update(updates)
        if protocol.closed:
            return
        self._store = store
        self._update_method = method
        self._failures = 0
        self.synchronised = True
        self.syncs += 1
        self._on_sync(store)

    def _setup_failed(self, failure: Failure, protocol: JsonRpcProtocol, remote: Remote) -> None:
        if protocol.closed:
            return  # _lost reports it
        if failure.check(_SchemaMismatch, DataError, RpcError):
            why = str(failure.value)
        else:
            why = f"{failure.type.__name__}: {failure.getErrorMessage()}"
        protocol.close(f"cannot monitor {self._database}: {why}")

    # running

    def _notification(self, method: str, params: Any) -> None:
        store = self._store
        if store is None or method != self._update_method:
            return  # not ours (or a "locked"/"stolen"/... we did not ask for)
        if not isinstance(params, list) or len(params) != 2 or params[0] != _MONITOR_ID:
            return
        if method == "update2":
            changes = store.apply_update2(params[1])
        else:
            changes = store.apply_update(params[1])
        self._on_changes(changes)

    def _lost(self, protocol: JsonRpcProtocol, remote: Remote, reason: Failure) -> None:
        if protocol is self._protocol:
            self._protocol = None
            self._store = None
            self._update_method = ""
        was_synchronised = self.synchronised
        self.synchronised = False
        if self._stopped is not None:
            stopped, self._stopped = self._stopped, None
            stopped.callback(None)
        if not self._running:
            return
        why = reason.getErrorMessage() if reason is not None else "closed"
        if was_synchronised:
            self._on_down(f"connection to {remote} lost: {why}")
            # a connection that worked: reconnect soon, to the same remote first
            self._next_remote -= 1
            self._failures = 0
        self._failed(remote, f"disconnected ({why})")
