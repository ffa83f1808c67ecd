# -*- test-case-name: tests.unit.neutron.test_keystone -*-
"""Keystone for the Neutron API backend: keystoneauth1, kept off the reactor thread.

keystoneauth1 (loaded from C{[neutron]} by L{metaproxy.config.keystone}) does all the
talking to Keystone: the auth plugin's token request (and version discovery), the
catalog, Neutron's endpoint (or C{endpoint_override}). It blocks (it uses C{requests}),
so L{KeystoneSession} runs it on a thread and keeps in memory what a Neutron request
needs, an L{Access}: the plugin's auth headers and Neutron's URL. A lookup goes to a
thread only when a new token is needed: none yet, the kept one expiring within
keystoneauth's margin (L{RENEW_BEFORE}), or one a service refused
(L{KeystoneSession.invalidate}, on a 401). Concurrent needs share one fetch.

Failures are L{KeystoneUnavailable} whose text names Keystone's URL and what went wrong;
a token, a password or a secret is never in a message nor in a repr.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1.identity.base import BaseIdentityPlugin
from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

__all__ = [
    "Access",
    "KeystoneSession",
    "KeystoneUnavailable",
    "RENEW_BEFORE",
    "MIN_KEEP",
    "describe_error",
    "within",
]

#: Seconds before its expiry a token is replaced (keystoneauth's own margin).
RENEW_BEFORE = float(BaseIdentityPlugin.MIN_TOKEN_LIFE_SECONDS)
#: A token is kept at least this long, even one that looks expired already (a clock
#: skewed against Keystone's): a 401 replaces it anyway.
MIN_KEEP = 10.0

# keystoneauth's messages hold no password, but a URL could carry user:password@
_USERINFO = re.compile(r"//[^/@\s]+@")
_HTTP_SUFFIX = re.compile(r"\s*\(HTTP \d+\)(\s*\(Request-ID: [^)]*\))?$")


class KeystoneUnavailable(Exception):
    """No token or no endpoint for Neutron; str() names Keystone and why (no secret)."""


class _NoEndpoint(Exception):
    """The catalog has no endpoint the adapter accepts; str() says what it has."""


@attrs.frozen
class Access:
    """What a request to Neutron needs, from one token.

    @ivar headers: the auth plugin's headers (C{X-Auth-Token}), treq's shape; secret.
    @ivar endpoint: Neutron's URL (the catalog's, or C{endpoint_override}).
    @ivar renew_at: when to get a new token (the reactor's clock), or C{None} for a
        plugin whose credentials do not expire.
    """

    headers: Mapping[str, Sequence[str]] = attrs.field(repr=False)
    endpoint: str
    renew_at: float | None


def within(reactor: IReactorTime, d: Deferred[Any], seconds: float) -> Deferred[Any]:
    """C{d}, cancelled after C{seconds}: it then fails with C{defer.TimeoutError} whatever
    the cancellation turned into (Twisted's Agent reports a cancelled request as
    C{ResponseNeverReceived}, which C{Deferred.addTimeout} would let through)."""
    timed_out = []

    def expire() -> None:
        timed_out.append(True)
        d.cancel()

    call = reactor.callLater(seconds, expire)

    def settle(result: Any) -> Any:
        if call.active():
            call.cancel()
        if timed_out and isinstance(result, Failure):
            raise TimeoutError(seconds, "Deferred") from None
        return result

    return d.addBoth(settle)


def describe_error(failure: Failure) -> str:
    """A connection-level failure, in one line (no traceback)."""
    error = failure.value
    reasons = getattr(error, "reasons", None)  # ResponseNeverReceived and friends
    if reasons:
        inner = reasons[0].value
        return f"{type(error).__name__}: {type(inner).__name__}: {inner}"
    return f"{type(error).__name__}: {error}"


def _chain(error: BaseException) -> list[BaseException]:
    """C{error} and what it was raised from, outermost first."""
    chain = [error]
    while (inner := chain[-1].__cause__ or chain[-1].__context__) is not None:
        chain.append(inner)
    return chain


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _why(error: BaseException, timeout: float) -> str:
    """What went wrong with Keystone, to follow "Keystone at <url>": the most telling
    error of the chain (keystoneauth wraps a failed version discovery's cause)."""
    chain = _chain(error)

    def first(kind: type[BaseException]) -> Any:
        return next((e for e in chain if isinstance(e, kind)), None)

    if (http := first(ks_exceptions.HttpError)) is not None:
        message = _HTTP_SUFFIX.sub("", str(http.message or ""))  # keystoneauth adds them
        said = f": {_one_line(message, 200)}" if message else ""
        if http.http_status == 401:
            return (
                f" refused the credentials (HTTP 401{said}); check [neutron] auth_type "
                "and its credentials"
            )
        return f" answered HTTP {http.http_status}{said}"
    if first(ks_exceptions.ConnectTimeout) is not None:
        return f" did not answer within {timeout:g} s ([neutron] timeout)"
    if (failed := first(ks_exceptions.ConnectionError)) is not None:
        # keystoneauth's text ends with requests' long repr: keep its head and the cause
        head = str(failed).split(": ", 1)[0]
        root = chain[-1]
        cause = f"; {type(root).__name__}: {root}" if root is not failed else ""
        return f" is unreachable ({type(failed).__name__}: {_one_line(head + cause)})"
    if isinstance(error, _NoEndpoint):
        return f": {error}"
    return f" failed ({type(error).__name__}: {_one_line(str(error))})"


def _expiry(auth: Any) -> float | None:
    """When the plugin's token expires (POSIX seconds), if it has one."""
    access = getattr(auth, "auth_ref", None)
    expires = getattr(access, "expires", None)
    return expires.timestamp() if expires is not None else None


def _endpoints_offered(auth: Any, service_type: str | None) -> str:
    """The catalog's endpoints of C{service_type}, for a message."""
    try:
        catalog = auth.auth_ref.service_catalog
        found = catalog.get_endpoints_data(service_type=service_type).get(service_type, [])
    except Exception:  # no catalog (not an identity plugin, unscoped token)
        return "none"
    offered = [f"{e.interface} in {e.region_name or 'no region'}" for e in found]
    return ", ".join(offered) or "none"


def _interfaces(adapter: Any) -> list[str]:
    """The adapter's interfaces in order of preference (keystoneauth's default: public)."""
    wanted = (
        adapter.interface if isinstance(adapter.interface, (list, tuple)) else [adapter.interface]
    )
    return [i for i in wanted if i] or ["public"]


def _default_run_blocking(reactor: Any) -> Callable[[Callable[[], Any]], Deferred[Any]]:
    def run(work: Callable[[], Any]) -> Deferred[Any]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), work)

    return run


class KeystoneSession:
    """The current L{Access} for Neutron, from keystoneauth's session and adapter.

    @param reactor: C{IReactorTime}: the clock of renewals (POSIX seconds, as the
        token's expiry); without C{run_blocking}, also C{IReactorThreads}.
    @param session: a C{keystoneauth1.session.Session} holding the auth plugin.
    @param adapter: a C{keystoneauth1.adapter.Adapter} for Neutron on C{session}.
    @param url: Keystone's URL, for messages (the plugin's C{auth_url}).
    @param timeout: C{[neutron] timeout}, for messages (the session holds the bound).
    @param run_blocking: runs a blocking call off the reactor thread and returns a
        Deferred of its result; the reactor's thread pool by default.

    Counters: C{fetches} (token fetches made), C{failures} (those that failed).
    """

    def __init__(
        self,
        reactor: Any,
        session: Any,
        adapter: Any,
        *,
        url: str,
        timeout: float,
        run_blocking: Callable[[Callable[[], Any]], Deferred[Any]] | None = None,
    ) -> None:
        self._reactor = reactor
        self._session = session
        self._adapter = adapter
        self.url = url
        self._timeout = timeout
        self._run = run_blocking or _default_run_blocking(reactor)
        self._access: Access | None = None
        self._waiters: list[Deferred[Access]] | None = None  # a fetch in flight
        self.fetches = 0
        self.failures = 0

    @property
    def current(self) -> Access | None:
        """The access kept now (maybe due for renewal)."""
        return self._access

    def describe_endpoint(self) -> str:
        """Where Neutron's URL comes from, in words."""
        a = self._adapter
        if a.endpoint_override:
            return a.endpoint_override
        region = f", region {a.region_name}" if a.region_name else ""
        name = f" named {a.service_name}" if a.service_name else ""
        return (
            f"the catalog's {a.service_type} endpoint{name} ({', '.join(_interfaces(a))}{region})"
        )

    def access(self) -> Deferred[Access]:
        """An access that is not due for renewal: the kept one (no thread), or a new one.

        Every caller gets its own Deferred: cancelling it leaves the fetch (and the
        other callers) alone. Fails with L{KeystoneUnavailable}.
        """
        kept = self._access
        if kept is not None and (kept.renew_at is None or self._reactor.seconds() < kept.renew_at):
            return succeed(kept)
        waiter: Deferred[Access] = Deferred()
        if self._waiters is None:
            self._waiters = [waiter]
            self._fetch()
        else:
            self._waiters.append(waiter)
        return waiter

    def invalidate(self, access: Access) -> None:
        """A service refused C{access} (401): the next L{access} call gets a new token.
        An access already replaced (after another caller's 401) is not forgotten twice."""
        if self._access is access:
            self._access = None

    def _fetch(self) -> None:
        self.fetches += 1
        self._run(self._fetch_blocking).addBoth(self._landed)

    def _fetch_blocking(self) -> tuple[dict[str, str], str, float | None]:
        """On a thread: a new token (the kept one is gone, due or refused), its headers,
        Neutron's endpoint."""
        auth = self._session.auth
        auth.invalidate()
        headers = self._session.get_auth_headers() or {}
        try:
            endpoint = self._adapter.get_endpoint()
        except ks_exceptions.EndpointNotFound:
            endpoint = None
        if not endpoint:
            a = self._adapter
            region = f" in region {a.region_name}" if a.region_name else ""
            raise _NoEndpoint(
                f"the catalog has no {a.service_type!r} endpoint with interface "
                f"{' or '.join(_interfaces(a))}{region} (it has: "
                f"{_endpoints_offered(auth, a.service_type)}); check [neutron] "
                "valid_interfaces and region_name, or set endpoint_override"
            )
        return headers, endpoint, _expiry(auth)

    def _landed(self, result: tuple[dict[str, str], str, float | None] | Failure) -> None:
        waiters, self._waiters = self._waiters or [], None
        if isinstance(result, Failure):
            self.failures += 1
            why = _why(result.value, self._timeout)
            error = KeystoneUnavailable(_USERINFO.sub("//", f"Keystone at {self.url}{why}"))
            for waiter in waiters:
                if not waiter.called:
                    waiter.errback(error)
            return
        headers, endpoint, expires_at = result
        renew_at = None
        if expires_at is not None:
            now = self._reactor.seconds()
            life = expires_at - now
            renew_at = now + max(life - RENEW_BEFORE, life / 2, MIN_KEEP)
        access = Access({k: [v] for k, v in headers.items()}, endpoint, renew_at)
        self._access = access
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(access)
