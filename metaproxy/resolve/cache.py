"""A coalescing TTL cache in front of any port backend.

L{CachingBackend} is itself a L{PortBackend}: wrap a backend in it and hand it to the
resolver. Its three methods take one more, optional, keyword: C{fresh=True} ignores a kept
answer (the resolver passes it after Nova answered 404: the address may belong to a new
instance now). A backend that takes C{fresh} says so with C{accepts_fresh = True}; the
resolver only passes the keyword to such a backend.

What it does, per key (the method and its arguments: C{("router_networks", router_id)},
C{("ports_by_ip", networks, ip)}, C{("ports_by_mac", networks, mac)}):

  - B{Single flight.} Lookups of a key while a backend call for it is in progress wait
    for that call instead of making their own (one instance boot is ~28 requests for the
    same key). Every waiter gets its own Deferred, fired with the same answer or error;
    cancelling one waiter's Deferred affects no other waiter and does not cancel the
    backend call (its answer is still kept for the retry that usually follows). A
    backend call must therefore time out by itself (the backend's job): a call that
    never ends holds its waiters for ever.
  - B{Young flights only.} A backend with a C{join_within} attribute (seconds; the RPC
    backend's first call's bound) is joined only while its call is younger than that:
    an older call is in trouble (its first answer did not come in time) and would end
    sooner than a new one, so a later lookup makes a new call instead of inheriting the
    old one's fate. The new call becomes the key's current one; the old one still
    answers its own waiters.
  - B{TTL.} When C{enabled}, an answer is kept for C{ttl} seconds of C{clock.seconds()}
    and later lookups get it without a backend call. A clock that jumps back makes
    answers stored "in the future" count as expired. When not enabled nothing is kept:
    only in-flight lookups are shared. Errors are never kept.
  - B{Fresh.} C{fresh=True} skips the kept answer and makes a new backend call (sharing
    it with other fresh lookups already in flight, never with an older ordinary call);
    its answer replaces the kept one. Ordinary lookups may share a fresh call. Only the
    newest call for a key stores its answer, so an older, slower call never overwrites
    a newer answer.
  - B{Bounded.} At most C{max_entries} answers are kept. Answers are kept in the order
    they were stored, which with one TTL is the order they expire in: each store first
    drops the expired answers at the front, then, if still full, the oldest one. An
    expired answer found by a lookup is dropped at once. No timer is needed.

Answers are shared between waiters and with later hits: treat them as read-only.

B{Answers now.} C{router_networks_now}, C{ports_by_ip_now} and C{ports_by_mac_now} give
the answer without a Deferred when there is one at hand: a kept answer, or the backend's
own C{*_now} answer for a backend that has one in memory (the table, OVN's replica).
They return C{None} when the answer needs a backend call (or one is in flight: the
caller then uses the Deferred methods and joins it). The request path tries them first:
most requests are answered from memory, and a Deferred chain per lookup costs more than
the lookup.

Counters (plain ints, for metrics): C{hits} (answered from a kept answer), C{misses}
(a backend call was made), C{coalesced} (joined a call in flight), C{failures} (backend
calls that failed).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from metaproxy.resolve.base import Port, PortBackend

__all__ = ["CachingBackend"]

_ROUTER_NETWORKS = "router_networks"
_PORTS_BY_IP = "ports_by_ip"
_PORTS_BY_MAC = "ports_by_mac"


class _Flight:
    """One backend call in progress and the Deferreds waiting for it."""

    __slots__ = ("waiters", "fresh", "started")

    def __init__(self, fresh: bool, started: float) -> None:
        self.waiters: list[Deferred[Any]] = []
        self.fresh = fresh
        self.started = started


class CachingBackend:
    """Coalescing, TTL-bounded cache around C{backend} (see the module docstring).

    @param backend: any L{PortBackend}.
    @param clock: C{IReactorTime}; only C{seconds()} is used.
    @param ttl: seconds an answer is kept (C{0} keeps nothing).
    @param enabled: keep answers at all; when C{False} only in-flight lookups are shared.
    @param max_entries: most answers kept at once.
    """

    accepts_fresh = True

    def __init__(
        self,
        backend: PortBackend,
        clock: IReactorTime,
        ttl: float,
        enabled: bool = True,
        max_entries: int = 100_000,
    ) -> None:
        if not ttl >= 0:
            raise ValueError(f"cache ttl must be a number of seconds >= 0, not {ttl!r}")
        if max_entries < 1:
            raise ValueError(f"cache max_entries must be at least 1, not {max_entries!r}")
        self._backend = backend
        self._clock = clock
        self._ttl = ttl
        self._keep = bool(enabled) and ttl > 0
        self._max_entries = max_entries
        # key -> (time stored, answer), in storage order; an OrderedDict because dropping
        # from the front of a plain dict makes finding the new front slower and slower
        self._answers: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._flights: dict[Hashable, _Flight] = {}
        join_within = getattr(backend, "join_within", None)
        self._join_within: float = float("inf") if join_within is None else float(join_within)
        self.name: str = getattr(backend, "name", None) or type(backend).__name__
        self._router_networks_now = getattr(backend, "router_networks_now", None)
        self._ports_by_ip_now = getattr(backend, "ports_by_ip_now", None)
        self._ports_by_mac_now = getattr(backend, "ports_by_mac_now", None)
        self.hits = 0
        self.misses = 0
        self.coalesced = 0
        self.failures = 0

    @property
    def backend(self) -> PortBackend:
        """The backend behind the cache."""
        return self._backend

    @property
    def enabled(self) -> bool:
        """Whether answers are kept (C{enabled} and a positive C{ttl})."""
        return self._keep

    @property
    def ttl(self) -> float:
        return self._ttl

    def __len__(self) -> int:
        """Answers kept now (expired ones not yet dropped included)."""
        return len(self._answers)

    @property
    def in_flight(self) -> int:
        """Keys with a backend call in progress."""
        return len(self._flights)

    def clear(self) -> None:
        """Forget every kept answer (after a reload, say).

        Calls in flight still answer their waiters, but their answers are not kept: they
        may come from before the reload. Lookups from now on make new calls.
        """
        self._answers.clear()
        self._flights.clear()

    def router_networks(self, router_id: str, fresh: bool = False) -> Deferred[tuple[str, ...]]:
        return self._lookup(
            (_ROUTER_NETWORKS, router_id), self._backend.router_networks, (router_id,), fresh
        )

    def ports_by_ip(
        self, networks: Sequence[str], ip: str, fresh: bool = False
    ) -> Deferred[list[Port]]:
        networks = tuple(networks)
        return self._lookup(
            (_PORTS_BY_IP, networks, ip), self._backend.ports_by_ip, (networks, ip), fresh
        )

    def ports_by_mac(
        self, networks: Sequence[str], mac: str, fresh: bool = False
    ) -> Deferred[list[Port]]:
        networks = tuple(networks)
        return self._lookup(
            (_PORTS_BY_MAC, networks, mac), self._backend.ports_by_mac, (networks, mac), fresh
        )

    def router_networks_now(self, router_id: str) -> tuple[str, ...] | None:
        return self._now((_ROUTER_NETWORKS, router_id), self._router_networks_now, (router_id,))

    def ports_by_ip_now(self, networks: tuple[str, ...], ip: str) -> list[Port] | None:
        return self._now((_PORTS_BY_IP, networks, ip), self._ports_by_ip_now, (networks, ip))

    def ports_by_mac_now(self, networks: tuple[str, ...], mac: str) -> list[Port] | None:
        return self._now((_PORTS_BY_MAC, networks, mac), self._ports_by_mac_now, (networks, mac))

    def _now(self, key: Hashable, call: Callable[..., Any] | None, args: tuple[Any, ...]) -> Any:
        if self._keep:
            entry = self._answers.get(key)
            if entry is not None:
                if 0 <= self._clock.seconds() - entry[0] < self._ttl:
                    self.hits += 1
                    return entry[1]
                del self._answers[key]
        if call is None or key in self._flights:
            return None
        try:
            answer = call(*args)
        except Exception:
            return None  # the Deferred path makes the call again and reports the error
        if answer is not None:
            self.misses += 1
            if self._keep:
                self._store(key, answer)
        return answer

    def _lookup(
        self,
        key: Hashable,
        call: Callable[..., Deferred[Any]],
        args: tuple[Any, ...],
        fresh: bool,
    ) -> Deferred[Any]:
        if self._keep and not fresh:
            entry = self._answers.get(key)
            if entry is not None:
                if 0 <= self._clock.seconds() - entry[0] < self._ttl:
                    self.hits += 1
                    return succeed(entry[1])
                del self._answers[key]
        flight = self._flights.get(key)
        waiter: Deferred[Any] = Deferred()
        now = self._clock.seconds()
        if (
            flight is not None
            and (flight.fresh or not fresh)
            and 0 <= now - flight.started < self._join_within
        ):
            self.coalesced += 1
            flight.waiters.append(waiter)
            return waiter
        self.misses += 1
        flight = _Flight(fresh, now)
        flight.waiters.append(waiter)
        self._flights[key] = flight
        try:
            result = call(*args)
        except Exception:
            result = fail()
        # an already-fired result lands right here, firing the waiter before it is returned
        result.addBoth(self._land, key, flight)
        return waiter

    def _land(self, result: object, key: Hashable, flight: _Flight) -> None:
        current = self._flights.get(key) is flight
        if current:
            del self._flights[key]
        waiters = flight.waiters
        if isinstance(result, Failure):
            self.failures += 1
            for waiter in waiters:
                if not waiter.called:  # a cancelled waiter has failed already
                    waiter.errback(result)
            return None
        if current and self._keep:
            self._store(key, result)
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(result)
        return None

    def _store(self, key: Hashable, answer: object) -> None:
        answers = self._answers
        now = self._clock.seconds()
        if key in answers:  # re-inserted at the end: storage order stays expiry order
            del answers[key]
        ttl = self._ttl
        while answers:  # drop the expired answers at the front
            first = next(iter(answers))
            if 0 <= now - answers[first][0] < ttl:
                break
            del answers[first]
        while len(answers) >= self._max_entries:
            answers.popitem(last=False)
        answers[key] = (now, answer)
