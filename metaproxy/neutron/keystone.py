# -*- test-case-name: tests.unit.neutron.test_keystone -*-
"""Keystone v3 tokens for the Neutron API backend: the request, the answer, the catalog,
and L{KeystoneSession}, which keeps one token and renews it.

The plain parts take and return values (tested bytes-in/bytes-out):

  - L{Credentials}: keystoneauth's C{password} and C{v3applicationcredential} plugins'
    options (C{[neutron]} section), and L{token_request_body}, the JSON body of
    C{POST <auth_url>/v3/auth/tokens} they make (L{tokens_url});
  - L{parse_token}: Keystone's answer (C{201}, the token in the C{X-Subject-Token} header,
    C{token.expires_at} and C{token.catalog} in the body) into a L{Token};
  - L{find_endpoint}: a service's URL in the catalog, by type, interfaces in order of
    preference (keystoneauth's C{valid_interfaces}) and region.

L{KeystoneSession} is the thin shell: it keeps the current token and gets a new one when
there is none, when it expires within L{RENEW_BEFORE} seconds (keystoneauth's own margin),
or after a service refused it (L{KeystoneSession.invalidate}, on a 401). Concurrent
requests for a token share one Keystone call. Failures are L{KeystoneUnavailable} whose
text names Keystone's URL and what went wrong (the Neutron API backend answers them as a
lookup that cannot be made now); the token, the password and the application credential
secret are never in a message nor in a repr.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import treq
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

__all__ = [
    "Credentials",
    "Token",
    "KeystoneError",
    "KeystoneUnavailable",
    "RENEW_BEFORE",
    "tokens_url",
    "token_request_body",
    "parse_token",
    "find_endpoint",
    "KeystoneSession",
    "describe_error",
    "within",
]

#: Seconds before its expiry a token is replaced (keystoneauth's C{MIN_TOKEN_LIFE_SECONDS}).
RENEW_BEFORE = 120.0
#: A token is kept at least this long, even one that looks expired already (a clock
#: skewed against Keystone's): a 401 replaces it anyway.
MIN_KEEP = 10.0


class KeystoneError(ValueError):
    """Keystone's answer cannot be used; str() says why (never with a secret)."""


class KeystoneUnavailable(Exception):
    """No token now: Keystone refused, failed, answered something unusable or did not
    answer in time. str() names Keystone's URL and why (never with a secret)."""


@attrs.frozen
class Credentials:
    """What authenticates with Keystone (v3), by keystoneauth's option names."""

    auth_type: str
    auth_url: str
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    user_domain_name: str | None = None
    user_domain_id: str | None = None
    project_name: str | None = None
    project_id: str | None = None
    project_domain_name: str | None = None
    project_domain_id: str | None = None
    application_credential_id: str | None = None
    application_credential_secret: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Any) -> Credentials:
        """From L{metaproxy.config.Settings}' C{neutron_*} fields."""
        names = [f.name for f in attrs.fields(cls)]
        return cls(**{name: getattr(settings, f"neutron_{name}") for name in names})


def tokens_url(auth_url: str) -> str:
    """C{<auth_url>/auth/tokens} for a C{/v3} URL, C{<auth_url>/v3/auth/tokens} for
    Keystone's root (keystoneauth finds v3 there by discovery; metaproxy only speaks v3)."""
    base = auth_url.rstrip("/")
    if not base.endswith("/v3"):
        base += "/v3"
    return base + "/auth/tokens"


def _domain(name: str | None, id_: str | None) -> dict[str, str]:
    return {"id": id_} if id_ else {"name": name or ""}


def token_request_body(credentials: Credentials) -> dict[str, Any]:
    """The JSON body of C{POST /v3/auth/tokens} (Keystone's v3 API reference).

    A password authentication is scoped to the project; an application credential
    carries its own scope and gets none.
    """
    c = credentials
    if c.auth_type == "v3applicationcredential":
        return {
            "auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": {
                        "id": c.application_credential_id,
                        "secret": c.application_credential_secret,
                    },
                }
            }
        }
    user = {
        "name": c.username,
        "password": c.password,
        "domain": _domain(c.user_domain_name, c.user_domain_id),
    }
    if c.project_id:
        project: dict[str, Any] = {"id": c.project_id}
    else:
        project = {
            "name": c.project_name,
            "domain": _domain(c.project_domain_name, c.project_domain_id),
        }
    return {
        "auth": {
            "identity": {"methods": ["password"], "password": {"user": user}},
            "scope": {"project": project},
        }
    }


@attrs.frozen
class Token:
    """A Keystone token and what came with it.

    @ivar value: the C{X-Subject-Token}; secret.
    @ivar expires_at: its expiry, POSIX seconds.
    @ivar renew_at: when to replace it, on the same clock (see L{parse_token}).
    @ivar catalog: the services of the token's catalog, as Keystone sent them.
    """

    value: str = attrs.field(repr=False)
    expires_at: float
    renew_at: float
    catalog: tuple[Mapping[str, Any], ...] = attrs.field(repr=False, default=())


def _expiry(text: object) -> float:
    if not isinstance(text, str):
        raise KeystoneError(f"token.expires_at is {text!r}, not a time")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise KeystoneError(f"token.expires_at {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # Keystone's times are UTC
    return moment.timestamp()


def _keystone_message(body: bytes) -> str:
    """Keystone's own explanation ({"error": {"message": ...}}), short, if any."""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return ""
    return f": {str(message)[:200]}" if message else ""


def parse_token(status: int, subject_token: str | None, body: bytes, now: float) -> Token:
    """Keystone's answer to L{token_request_body} as a L{Token}.

    @param now: the time the answer came (POSIX seconds): the token is renewed
        L{RENEW_BEFORE} seconds before it expires, or half-way through a shorter life,
        and kept at least L{MIN_KEEP} seconds.
    @raise KeystoneError: not a 201 with a token, or an unusable body.
    """
    if status != 201:
        if status == 401:
            raise KeystoneError(
                f"refused the credentials (HTTP 401{_keystone_message(body)}); check "
                "[neutron] auth_type and its credentials"
            )
        raise KeystoneError(f"answered HTTP {status}{_keystone_message(body)}")
    if not subject_token:
        raise KeystoneError("answered 201 without an X-Subject-Token header")
    try:
        document = json.loads(body)
        token = document["token"]
        catalog = token.get("catalog", [])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KeystoneError("answered 201 without a JSON token object") from None
    if not isinstance(catalog, list) or not all(isinstance(s, dict) for s in catalog):
        raise KeystoneError("token.catalog is not a list of services")
    expires_at = _expiry(token.get("expires_at"))
    life = expires_at - now
    renew_at = now + max(life - RENEW_BEFORE, life / 2, MIN_KEEP)
    return Token(subject_token, expires_at, renew_at, tuple(catalog))


def find_endpoint(
    catalog: Sequence[Mapping[str, Any]],
    service_type: str,
    interfaces: Sequence[str],
    region: str | None,
) -> str:
    """The URL of C{service_type}'s endpoint: the first of C{interfaces} (keystoneauth's
    names; C{internalURL} is C{internal}) that the catalog has, in C{region} if given.

    @raise KeystoneError: none; the message lists what the catalog has for the type.
    """
    wanted = [i.removesuffix("URL") for i in interfaces]
    found: dict[str, str] = {}
    offered = []
    for service in catalog:
        if service.get("type") != service_type:
            continue
        for endpoint in service.get("endpoints") or ():
            if not isinstance(endpoint, Mapping):
                continue
            interface, url = endpoint.get("interface"), endpoint.get("url")
            where = endpoint.get("region_id") or endpoint.get("region")
            offered.append(f"{interface} in {where or 'no region'}")
            if region and region not in (endpoint.get("region_id"), endpoint.get("region")):
                continue
            if isinstance(interface, str) and isinstance(url, str) and url:
                found.setdefault(interface, url)
    for interface in wanted:
        if interface in found:
            return found[interface]
    has = ", ".join(offered) if offered else "none"
    in_region = f" in region {region}" if region else ""
    raise KeystoneError(
        f"the catalog has no {service_type!r} endpoint with interface "
        f"{' or '.join(wanted)}{in_region} (it has: {has}); check [neutron] "
        "valid_interfaces and region_name, or set endpoint_override"
    )


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


@implementer(IBodyProducer)
class _Body:
    """A small request body, written at once (treq's default producer for bytes goes
    through Twisted's global cooperator, that is, the global reactor)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class KeystoneSession:
    """The current token for C{credentials}, from Keystone through C{http}.

    @param reactor: C{IReactorTime}: the clock of expiries and timeouts.
    @param http: a C{treq.client.HTTPClient} (its agent holds the connection pool).
    @param timeout: seconds one token request may take.

    Counters: C{fetches} (token requests made), C{failures} (those that failed).
    """

    def __init__(
        self, reactor: IReactorTime, http: Any, credentials: Credentials, *, timeout: float
    ) -> None:
        self._reactor = reactor
        self._http = http
        self._credentials = credentials
        self._timeout = timeout
        self.url = tokens_url(credentials.auth_url)
        self._token: Token | None = None
        self._waiters: list[Deferred[Token]] | None = None  # a fetch in flight
        self.fetches = 0
        self.failures = 0

    @property
    def current(self) -> Token | None:
        """The token kept now (maybe due for renewal)."""
        return self._token

    def token(self) -> Deferred[Token]:
        """A token that is not due for renewal: the kept one, or a new one.

        Every caller gets its own Deferred: cancelling it leaves the Keystone call (and
        the other callers) alone. Fails with L{KeystoneUnavailable}.
        """
        kept = self._token
        if kept is not None and self._reactor.seconds() < kept.renew_at:
            return succeed(kept)
        waiter: Deferred[Token] = Deferred()
        if self._waiters is None:
            self._waiters = [waiter]
            self._fetch()
        else:
            self._waiters.append(waiter)
        return waiter

    def invalidate(self, token: Token) -> None:
        """A service refused C{token} (401): the next L{token} call gets a new one. A token
        already replaced (by another caller's 401) is not forgotten twice."""
        if self._token is token:
            self._token = None

    def _fetch(self) -> None:
        self.fetches += 1
        body = json.dumps(token_request_body(self._credentials)).encode("utf-8")
        d = self._http.post(
            self.url,
            data=_Body(body),
            allow_redirects=False,
            headers={"Accept": ["application/json"], "Content-Type": ["application/json"]},
            reactor=self._reactor,
        )
        d.addCallback(self._read)
        within(self._reactor, d, self._timeout).addBoth(self._landed)

    def _read(self, response: Any) -> Deferred[Token]:
        def parse(body: bytes) -> Token:
            subject = response.headers.getRawHeaders(b"X-Subject-Token", [b""])[0]
            return parse_token(
                response.code, subject.decode("latin-1") or None, body, self._reactor.seconds()
            )

        return treq.content(response).addCallback(parse)

    def _landed(self, result: Token | Failure) -> None:
        waiters, self._waiters = self._waiters or [], None
        if isinstance(result, Token):
            self._token = result
            for waiter in waiters:
                if not waiter.called:
                    waiter.callback(result)
            return
        self.failures += 1
        if result.check(KeystoneError):
            why = str(result.value)
        elif result.check(TimeoutError, CancelledError):
            why = f"did not answer within {self._timeout:g} s ([neutron] timeout)"
        else:
            why = f"is unreachable ({describe_error(result)})"
        error = KeystoneUnavailable(f"Keystone at {self.url} {why}")
        for waiter in waiters:
            if not waiter.called:
                waiter.errback(error)
