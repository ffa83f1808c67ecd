"""An OVSDB (RFC 7047) client on the Twisted reactor: what the OVN lookup backend and the
chassis mode need.

- L{metaproxy.ovsdb.framing}: splitting a byte stream into the JSON values it carries.
- L{metaproxy.ovsdb.remote}: OVN's connection strings (C{tcp:}, C{ssl:}, C{unix:}) and the
  endpoints they name.
- L{metaproxy.ovsdb.data}: the schema's column types, the wire form of values, and a row
  store that applies C{monitor} (C{update}) and C{monitor_cond} (C{update2}) changes.
- L{metaproxy.ovsdb.jsonrpc}: the JSON-RPC protocol (request ids, echo both ways,
  notifications, the inactivity probe).
- L{metaproxy.ovsdb.monitor}: connect, monitor, resynchronise after every reconnect;
  C{transact} on the same connection.
- L{metaproxy.ovsdb.operations}: C{transact} operations (map mutations) and the check
  of their results.
- L{metaproxy.ovsdb.cluster}: whether a server may be used (its C{_Server} row: a
  cluster member connected to its cluster and not behind).
- L{metaproxy.ovsdb.members}: the remotes in a client's own order, their states, the
  jittered backoff.
- L{metaproxy.ovsdb.samples}: a monitor's counts as metric samples.
"""
