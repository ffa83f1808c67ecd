"""The RPC backend: ports from neutron-server, asked exactly as upstream's agent asks.

C{lookup_backend = rpc} (the default when C{transport_url} is set). Each lookup is a
C{get_ports} call (L{metaproxy.neutron.bus}) with upstream's filters (docs/upstream.md,
"Port lookup"):

  - a router's networks: C{{'device_id': [router], 'device_owner': [the three
    router-interface owners]}}, then the ports' C{network_id}s in order;
  - ports by address: C{{'fixed_ips': {'ip_address': [ip]}, 'network_id': [networks]}};
  - ports by MAC (IPv6 link-local callers): C{{'mac_address': [mac], 'network_id':
    [networks]}}.

B{Time.} A lookup has C{timeout} seconds (its budget, L{metaproxy.neutron.bus.rpc_timeout}:
C{rpc_response_timeout}, never more than C{nova_timeout}). It never spends them all
waiting on one call that may be lost (a call published just before the broker went
down, or after it came back but before neutron-server subscribed again, is never
answered): each call waits at most L{call_bound} of the budget (3.5 s of 28; at least
1 s, at most 5), then the lookup calls again while its budget lasts, each time allowing
twice as long (so a neutron-server that is slow, not gone, still answers: 3.5, 7, 14 s).
A call no queue takes comes back at once (RabbitMQ's C{mandatory} flag) and is sent
again C{retry_pause} seconds later. When the bus is back after an outage
(L{metaproxy.neutron.buslog.BusLog}), calls sent before it began are given up at once
and sent again. A bus that cannot be reached, an error from neutron-server, or an
answer that is not ports fails the lookup at once.

B{Threads.} oslo.messaging blocks, so calls run on a thread pool the backend owns
(started by C{start()}, stopped by C{stop()}); the reactor never waits. At most
C{threads} calls (C{rpc_lookup_threads}) wait for an answer at once; more wait their
turn, and one whose time is up before its turn is dropped without being sent. A call
given up (its time up, or sent before an outage) stops counting at once, while its
thread finishes in the background (within the call's own timeout): the pool has room
for as many again, so lost calls never hold every thread.

Every failure is L{LookupUnavailable} naming what failed and the limit that applied,
so the instance gets 503 with Retry-After. The cache in front (L{metaproxy.resolve.cache})
makes concurrent identical lookups one, joining a lookup only while its first call can
still be answered (L{RpcBackend.join_within}), and keeps answers for the TTL.

Not on the hot path: one log line when lookups start failing and one when they are
answered again, not one per failed lookup (the pipeline logs each 503). They alternate:
a lookup that began before the last answer does not say "failing" after it.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from metaproxy.resolve.base import ROUTER_INTERFACE_OWNERS, LookupUnavailable, Port

__all__ = [
    "router_filters",
    "ip_filters",
    "mac_filters",
    "port_from_dict",
    "call_bound",
    "RpcBackend",
]

log = Logger("metaproxy.resolve.rpc")

#: Seconds a call given up on by the backend may go on past its own timeout (oslo.messaging
#: times it out first; this only catches a thread stuck reconnecting).
GRACE = 1.0
#: A call is not sent with less than this many seconds left for its answer.
MIN_CALL = 0.2
#: Seconds before a call that came back undelivered (nothing consumes its topic) is sent
#: again.
RETRY_PAUSE = 0.25


def call_bound(budget: float) -> float:
    """Seconds the first call of a lookup with C{budget} seconds waits for its answer: an
    eighth of the budget, at least 1 s and at most 5 s, never more than the budget
    (3.5 s of the default 28)."""
    return min(budget, max(1.0, min(5.0, budget / 8)))


def router_filters(router_id: str) -> dict[str, Any]:
    """Upstream's filters for a router's interface ports (the gateway port is not one)."""
    return {"device_id": [router_id], "device_owner": list(ROUTER_INTERFACE_OWNERS)}


def ip_filters(networks: Sequence[str], ip: str) -> dict[str, Any]:
    """Upstream's filters for the ports on C{networks} with fixed IP C{ip}."""
    return {"fixed_ips": {"ip_address": [ip]}, "network_id": list(networks)}


def mac_filters(networks: Sequence[str], mac: str) -> dict[str, Any]:
    """Upstream's filters for the ports on C{networks} with MAC C{mac}."""
    return {"mac_address": [mac], "network_id": list(networks)}


def _ip(value: Any) -> str | None:
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        return None


def port_from_dict(port: dict[str, Any]) -> Port:
    """A L{Port} from a port dict as neutron-server returns it (C{fixed_ips} a list of
    C{{'subnet_id', 'ip_address'}}; C{project_id}, or C{tenant_id} from older servers).

    @raise ValueError: a field the lookups need is missing or of the wrong type.
    """
    try:
        fixed = tuple(
            ip
            for ip in (_ip(f.get("ip_address")) for f in port.get("fixed_ips") or ())
            if ip is not None
        )
        return Port(
            id=str(port.get("id", "")),
            network_id=str(port["network_id"]),
            mac_address=str(port.get("mac_address", "")).lower(),
            fixed_ips=fixed,
            device_id=port.get("device_id") or "",
            project_id=port.get("project_id") or port.get("tenant_id") or "",
            device_owner=port.get("device_owner") or "",
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"not a port ({type(e).__name__}: {e})") from None


class _BudgetSpent(Exception):
    """The lookup's time is up."""


class _NotSent(Exception):
    """A call given up on before its thread could send it."""


class _Lookup:
    """One lookup: its filters, its time, its Deferred, and what its calls met."""

    __slots__ = ("filters", "started", "deadline", "done", "calls", "timeouts", "undelivered")

    def __init__(self, filters: dict[str, Any], started: float, deadline: float) -> None:
        self.filters = filters
        self.started = started
        self.deadline = deadline
        self.done: Deferred[Any] = Deferred(lambda _: self._cancelled())
        self.calls = 0
        self.timeouts = 0
        self.undelivered = 0

    def _cancelled(self) -> None:
        self.deadline = float("-inf")  # no more calls


class _Call:
    """One call of a lookup, from the moment it is wanted to its outcome."""

    __slots__ = ("lookup", "bound", "sent", "expires", "holds_turn", "settled", "timer")

    def __init__(self, lookup: _Lookup, bound: float) -> None:
        self.lookup = lookup
        self.bound = bound
        self.sent: float | None = None
        self.expires = 0.0  # time.monotonic() by which the thread must have its answer
        self.holds_turn = False
        self.settled = False
        self.timer: Any = None


#: A call's outcomes other than an answer or an error of its own.
_TIMED_OUT = object()
_LOST = object()


class RpcBackend:
    """A L{metaproxy.resolve.base.ManagedBackend} over neutron-server's RPC (see the module
    docstring).

    @param reactor: the reactor (time and C{callFromThread}).
    @param rpc: has a blocking C{get_ports(filters, timeout) -> list[dict]} (a
        L{metaproxy.neutron.bus.NeutronRpc}, or a fake), and optionally
        C{timeout_errors} (exceptions meaning "no answer in time"),
        C{no_consumer_errors} ("nothing took the call"), C{on_reconnect(listener)} and
        C{close()}.
    @param timeout: seconds a lookup may take, its calls and their turns included.
    @param threads: most calls waiting for an answer at once.
    @param where: names the bus in messages (never the URL: it holds a password).
    @param limit: names the option C{timeout} comes from, in messages.
    @param run_in_thread: C{f(*args) -> Deferred} running C{f} off the reactor; default
        the backend's own thread pool (tests pass a synchronous fake).
    """

    def __init__(
        self,
        reactor: Any,
        rpc: Any,
        *,
        timeout: float,
        threads: int = 8,
        where: str = "neutron-server (topic q-plugin on transport_url)",
        limit: str = "rpc_response_timeout",
        run_in_thread: Callable[..., Deferred[Any]] | None = None,
        retry_pause: float = RETRY_PAUSE,
    ) -> None:
        self._reactor = reactor
        self._rpc = rpc
        self._timeout = timeout
        self._where = where
        self._limit = limit
        self._retry_pause = retry_pause
        #: seconds the first call of a lookup waits for its answer (L{call_bound})
        self.call_bound = call_bound(timeout)
        #: the cache joins a lookup in progress only this many seconds after it began:
        #: later, its first call is past answering, and a new lookup has the full budget
        self.join_within = self.call_bound
        self._timeout_errors = (_NotSent, *getattr(rpc, "timeout_errors", ()))
        self._no_consumer_errors = tuple(getattr(rpc, "no_consumer_errors", ()))
        self._pool: ThreadPool | None = None
        if run_in_thread is None:
            # room for a call given up on beside each of the calls waiting
            self._pool = ThreadPool(
                minthreads=0, maxthreads=2 * threads, name="metaproxy-rpc-lookups"
            )
            pool = self._pool
            run_in_thread = lambda f, *a: deferToThreadPool(reactor, pool, f, *a)  # noqa: E731
        self._run = run_in_thread
        self._threads = threads
        self._turns = threads
        self._waiting: deque[_Call] = deque()
        self._in_flight: set[_Call] = set()
        self._started = False
        self._watching = False
        self.name = f"rpc {where}"
        self.lookups = 0
        self.calls = 0
        self.failures = 0
        #: calls given up on before their thread came back (too slow, or sent before an
        #: outage)
        self.given_up = 0
        self._failing_since: int | None = None  # failures count when they began
        self._answered_at = float("-inf")

    def start(self) -> None:
        if self._pool is not None and not self._started:
            self._pool.start()
        self._started = True
        watch = getattr(self._rpc, "on_reconnect", None)
        if watch is not None and not self._watching:
            watch(self.bus_back)
            self._watching = True

    def stop(self) -> Deferred[None] | None:
        """Stop the threads and close the transport, off the reactor (a thread may be
        stuck in a call until its timeout)."""
        if not self._started:
            return None
        self._started = False
        from twisted.internet.threads import deferToThread

        def shut() -> None:
            if self._pool is not None:
                self._pool.stop()
            close = getattr(self._rpc, "close", None)
            if close is not None:
                close()

        return deferToThread(shut).addErrback(
            lambda f: log.warn(
                "Closing the RPC transport failed: {error}", error=f.getErrorMessage()
            )
        )

    def ready(self) -> bool:
        return self._started and self._failing_since is None

    def describe(self) -> str:
        return (
            f"rpc: get_ports from {self._where}, {self._timeout:g} s per lookup "
            f"({self._limit}), each call {self.call_bound:g} s at first"
        )

    def router_networks(self, router_id: str) -> Deferred[tuple[str, ...]]:
        d = self._call(router_filters(router_id))
        d.addCallback(lambda ports: tuple(p.network_id for p in ports))
        return d

    def ports_by_ip(self, networks: Sequence[str], ip: str) -> Deferred[list[Port]]:
        return self._call(ip_filters(networks, ip))

    def ports_by_mac(self, networks: Sequence[str], mac: str) -> Deferred[list[Port]]:
        return self._call(mac_filters(networks, mac))

    def bus_back(self, lost_since: float) -> None:
        """The bus is back after an outage that began at C{lost_since}: the calls sent
        before then went with it, so they are given up on and sent again at once."""
        for call in [c for c in self._in_flight if c.sent is not None and c.sent < lost_since]:
            self.given_up += 1
            self._settle(call)
            self._next_step(call, _LOST)

    # -- a lookup's calls ---------------------------------------------------------------

    def _call(self, filters: dict[str, Any]) -> Deferred[list[Port]]:
        now = self._reactor.seconds()
        lookup = _Lookup(filters, now, now + self._timeout)
        self.lookups += 1
        d = lookup.done
        d.addCallbacks(self._answered, self._failed, callbackArgs=(lookup,), errbackArgs=(lookup,))
        self._try(lookup, self.call_bound)
        return d

    def _try(self, lookup: _Lookup, bound: float) -> None:
        """One more call for C{lookup}, waiting at most C{bound} s, if time is left; it
        waits for a turn until the lookup's time is up."""
        if lookup.done.called:
            return
        now = self._reactor.seconds()
        left = lookup.deadline - now
        if left < MIN_CALL:
            lookup.done.errback(_BudgetSpent())
            return
        call = _Call(lookup, bound)
        if self._turns > 0:
            self._send(call)
        else:
            call.timer = self._reactor.callLater(left, self._timed_out, call)
            self._waiting.append(call)

    def _send(self, call: _Call) -> None:
        if call.timer is not None and call.timer.active():
            call.timer.cancel()
        now = self._reactor.seconds()
        left = min(call.bound, call.lookup.deadline - now)
        if left < MIN_CALL:  # the lookup's time went by waiting for a turn: not sent
            self._settle(call)
            self._next_step(call, _TIMED_OUT)
            return
        self._turns -= 1
        call.holds_turn = True
        call.bound = left
        call.sent = now
        call.expires = time.monotonic() + left
        call.timer = self._reactor.callLater(left + GRACE, self._timed_out, call)
        call.lookup.calls += 1
        self.calls += 1
        self._in_flight.add(call)
        get_ports = self._rpc.get_ports
        filters = call.lookup.filters

        def in_thread() -> Any:
            timeout = call.expires - time.monotonic()
            if call.settled or timeout < MIN_CALL:  # given up on while the pool was full
                raise _NotSent("dropped before sending: no thread free in time")
            return get_ports(filters, timeout)

        try:
            d = self._run(in_thread)
        except Exception:
            d = fail()
        d.addBoth(self._returned, call)

    def _release(self, call: _Call) -> None:
        if not call.holds_turn:
            return
        call.holds_turn = False
        self._turns += 1
        while self._turns > 0 and self._waiting:
            waiting = self._waiting.popleft()
            if not waiting.settled:
                self._send(waiting)

    def _settle(self, call: _Call) -> None:
        """The call's outcome is decided: it stops counting (its thread may go on)."""
        call.settled = True
        if call.timer is not None and call.timer.active():
            call.timer.cancel()
        call.timer = None
        self._in_flight.discard(call)
        self._release(call)

    def _returned(self, result: Any, call: _Call) -> None:
        lookup = call.lookup
        if not isinstance(result, Failure):
            if not call.settled:
                self._settle(call)
            if not lookup.done.called:  # even a call given up on may answer first
                lookup.done.callback(result)
            return None
        if call.settled:
            return None  # given up on already: its error is old news
        self._settle(call)
        self._next_step(call, result)
        return None

    def _timed_out(self, call: _Call) -> None:
        call.timer = None
        if call.settled:
            return
        if call.sent is not None:
            self.given_up += 1
        self._settle(call)
        self._next_step(call, _TIMED_OUT)

    def _next_step(self, call: _Call, outcome: Any) -> None:
        """Call again, later or now, or fail the lookup, after C{call}'s C{outcome}."""
        lookup = call.lookup
        if lookup.done.called:
            return
        if outcome is _LOST:
            self._try(lookup, call.bound)
        elif outcome is _TIMED_OUT or outcome.check(*self._timeout_errors):
            lookup.timeouts += 1
            self._try(lookup, 2 * call.bound)
        elif self._no_consumer_errors and outcome.check(*self._no_consumer_errors):
            lookup.undelivered += 1
            if lookup.deadline - self._reactor.seconds() < self._retry_pause + MIN_CALL:
                lookup.done.errback(_BudgetSpent())
            else:
                self._reactor.callLater(self._retry_pause, self._try, lookup, call.bound)
        else:
            lookup.done.errback(outcome)

    # -- a lookup's end -----------------------------------------------------------------

    def _answered(self, answer: Any, lookup: _Lookup) -> list[Port]:
        if not isinstance(answer, list):
            return self._failed(
                Failure(
                    ValueError(f"get_ports answered {type(answer).__name__}, not a list of ports")
                ),
                lookup,
            )
        try:
            ports = [port_from_dict(p) for p in answer]
        except ValueError as e:
            return self._failed(Failure(e), lookup)
        self._answered_at = self._reactor.seconds()
        if self._failing_since is not None:
            log.info(
                "RPC lookups answered again by {where} after {count} failed",
                where=self._where,
                count=self.failures - self._failing_since,
            )
            self._failing_since = None
        return ports

    def _reason(self, error: BaseException, lookup: _Lookup) -> str:
        if isinstance(error, _BudgetSpent):
            if not lookup.calls:
                return (
                    f"no call to {self._where} could be made within {self._timeout:g} s "
                    f"({self._limit}): all {self._threads} lookup threads "
                    "(rpc_lookup_threads) were waiting for answers"
                )
            if lookup.undelivered and not lookup.timeouts:
                return (
                    f"nothing consumes the calls to {self._where}: RabbitMQ returned each "
                    f"of {lookup.calls} undelivered within {self._timeout:g} s "
                    f"({self._limit}; neutron-server down, or not subscribed again yet "
                    "after a broker restart)"
                )
            return (
                f"no answer from {self._where} within {self._timeout:g} s "
                f"({self._limit}; {lookup.calls} call(s), the first waiting "
                f"{self.call_bound:g} s; neutron-server slow or the bus down)"
            )
        if type(error).__name__ == "RemoteError":
            return (
                f"{self._where} failed get_ports: "
                f"{getattr(error, 'exc_type', '')}: {getattr(error, 'value', error)}"
            )
        return f"get_ports to {self._where} failed: {type(error).__name__}: {error}"

    def _failed(self, failure: Failure, lookup: _Lookup) -> Any:
        if failure.check(CancelledError):
            return failure
        self.failures += 1
        reason = self._reason(failure.value, lookup)
        # a lookup begun before the last answer says nothing about the bus now
        if self._failing_since is None and lookup.started >= self._answered_at:
            self._failing_since = self.failures - 1
            log.warn(
                "RPC lookups failing: {reason}; instances get 503 until they work again",
                reason=reason,
            )
        raise LookupUnavailable(reason)
