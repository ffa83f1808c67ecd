# -*- test-case-name: tests.unit.resolve.test_neutron_api -*-
"""The Neutron API lookup backend (C{[metaproxy] lookup_backend = neutron_api}).

It asks Neutron's API what upstream asks over RPC (docs/upstream.md, "Port lookup"), as
C{GET <neutron>/v2.0/ports} with repeated query parameters:

  - a router's networks: C{device_id=<router>}, C{device_owner=} each of the three
    router-interface owners, C{fields=network_id};
  - ports by IP: C{network_id=} each network, C{fixed_ips=ip_address=<ip>};
  - ports by MAC (IPv6 link-local callers): C{network_id=} each network,
    C{mac_address=<mac>};

the last two with C{fields=} the port fields a lookup uses, so answers stay small. The
query builders and L{parse_ports} are plain functions.

Neutron's URL and the token come from keystoneauth1, loaded from C{[neutron]} as nova
loads it (L{metaproxy.config.keystone}): the catalog's endpoint (C{service_type},
C{valid_interfaces} in order, C{region_name}) or C{endpoint_override}. Keystone is asked
on a thread, rarely (L{metaproxy.neutron.keystone.KeystoneSession} keeps the token and the
endpoint); the port queries themselves are non-blocking (treq), with the session's TLS
options (C{cafile}, C{insecure}, C{certfile}/C{keyfile}, C{tls_min_version},
C{tls_ciphers}). Each carries the plugin's auth headers (C{X-Auth-Token}); on a 401 the
token is replaced once and the request made again.

Every call (a token from Keystone included) ends within C{[neutron] timeout} seconds:
otherwise it fails with L{LookupUnavailable} (the instance gets 503 with Retry-After)
whose text names the endpoint and what went wrong. The core's
L{metaproxy.resolve.cache.CachingBackend} in front of the backend shares concurrent
identical calls, and keeps answers when C{[cache] enabled}.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory

from metaproxy.neutron.keystone import (
    Access,
    KeystoneSession,
    KeystoneUnavailable,
    describe_error,
    within,
)
from metaproxy.resolve.base import ROUTER_INTERFACE_OWNERS, LookupUnavailable, Port

__all__ = [
    "NeutronApiBackend",
    "PORT_FIELDS",
    "router_ports_query",
    "ports_by_ip_query",
    "ports_by_mac_query",
    "parse_ports",
    "parse_router_networks",
    "ports_url",
    "build_neutron_api",
    "session_tls",
]

log = Logger("metaproxy.resolve.neutron_api")

#: The port fields a lookup uses (the C{fields=} of the port queries).
PORT_FIELDS = (
    "id",
    "network_id",
    "mac_address",
    "fixed_ips",
    "device_id",
    "device_owner",
    "project_id",
)

Query = list[tuple[str, str]]


def router_ports_query(router_id: str) -> Query:
    """The router's interface ports (not its gateway port): their networks only."""
    return (
        [("device_id", router_id)]
        + [("device_owner", owner) for owner in ROUTER_INTERFACE_OWNERS]
        + [("fields", "network_id")]
    )


def _networks(networks: Sequence[str]) -> Query:
    return [("network_id", n) for n in dict.fromkeys(networks)]  # once each, in order


def ports_by_ip_query(networks: Sequence[str], ip: str) -> Query:
    return (
        _networks(networks)
        + [("fixed_ips", f"ip_address={ip}")]
        + [("fields", f) for f in PORT_FIELDS]
    )


def ports_by_mac_query(networks: Sequence[str], mac: str) -> Query:
    return _networks(networks) + [("mac_address", mac)] + [("fields", f) for f in PORT_FIELDS]


def ports_url(endpoint: str) -> str:
    """C{<endpoint>/v2.0/ports}; an endpoint registered with C{/v2.0} already keeps it."""
    base = endpoint.rstrip("/")
    if not base.endswith("/v2.0"):
        base += "/v2.0"
    return base + "/ports"


def _port_list(body: bytes) -> list[Any]:
    try:
        ports = json.loads(body)["ports"]
    except (ValueError, KeyError, TypeError):
        raise ValueError('not a JSON object with a "ports" list') from None
    if not isinstance(ports, list) or not all(isinstance(p, dict) for p in ports):
        raise ValueError('"ports" is not a list of objects')
    return ports


def parse_router_networks(body: bytes) -> tuple[str, ...]:
    """The C{network_id}s of an answer to L{router_ports_query}, in order.

    @raise ValueError: not a port list with network ids.
    """
    networks = []
    for port in _port_list(body):
        network = port.get("network_id")
        if not isinstance(network, str) or not network:
            raise ValueError(f"a port has no network_id: {port!r:.200}")
        networks.append(network)
    return tuple(networks)


def _text(port: dict[str, Any], name: str) -> str:
    value = port.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"port {port.get('id')!r}: {name} is {value!r:.80}, not text")
    return value


def parse_ports(body: bytes) -> list[Port]:
    """The ports of an answer to L{ports_by_ip_query} or L{ports_by_mac_query}.

    IPs come out in C{ipaddress}' compressed form and the MAC in lower case, as the
    resolver compares them; the project is C{project_id} (C{tenant_id} on a Neutron that
    has no C{project_id}).

    @raise ValueError: not a port list, or a port with unusable fields.
    """
    ports = []
    for raw in _port_list(body):
        fixed = raw.get("fixed_ips") or []
        if not isinstance(fixed, list):
            raise ValueError(f"port {raw.get('id')!r}: fixed_ips is not a list")
        ips = []
        for entry in fixed:
            address = entry.get("ip_address") if isinstance(entry, dict) else None
            try:
                ips.append(ipaddress.ip_address(address).compressed)  # type: ignore[arg-type]
            except ValueError:
                raise ValueError(
                    f"port {raw.get('id')!r}: fixed_ips entry {entry!r:.80} has no IP address"
                ) from None
        ports.append(
            Port(
                id=_text(raw, "id"),
                network_id=_text(raw, "network_id"),
                mac_address=_text(raw, "mac_address").lower(),
                fixed_ips=tuple(ips),
                device_id=_text(raw, "device_id"),
                project_id=_text(raw, "project_id") or _text(raw, "tenant_id"),
                device_owner=_text(raw, "device_owner"),
            )
        )
    return ports


class _Stage:
    """Where a call is, for the message when its time is up."""

    __slots__ = ("where",)

    def __init__(self, where: str) -> None:
        self.where = where


class NeutronApiBackend:
    """Port lookups through Neutron's API (see the module docstring).

    @param reactor: C{IReactorTime}: the clock of timeouts.
    @param http: a C{treq.client.HTTPClient}.
    @param keystone: where tokens and Neutron's endpoint come from.
    @param pool: the connection pool behind C{http}, closed by L{stop} (if given).

    Counters: C{calls} (requests to Neutron), C{reauthentications} (401s that got a new
    token), C{failures} (calls that failed).
    """

    name = "Neutron API"

    def __init__(
        self,
        reactor: Any,
        http: Any,
        keystone: KeystoneSession,
        *,
        timeout: float,
        pool: HTTPConnectionPool | None = None,
    ) -> None:
        self._reactor = reactor
        self._http = http
        self._keystone = keystone
        self._timeout = timeout
        self._pool = pool
        # the ports URL and request headers of the current access, made once per token
        self._request: tuple[Access, str, dict[str, Sequence[str]]] | None = None
        self._waiting = f"waiting for a token from Keystone at {keystone.url}"
        self._last_ok: bool | None = None
        self.calls = 0
        self.reauthentications = 0
        self.failures = 0

    # -- lookups ------------------------------------------------------------------

    def router_networks(self, router_id: str) -> Deferred[tuple[str, ...]]:
        return self._get(router_ports_query(router_id), parse_router_networks)

    def ports_by_ip(self, networks: Sequence[str], ip: str) -> Deferred[list[Port]]:
        return self._get(ports_by_ip_query(networks, ip), parse_ports)

    def ports_by_mac(self, networks: Sequence[str], mac: str) -> Deferred[list[Port]]:
        return self._get(ports_by_mac_query(networks, mac), parse_ports)

    def _get(self, query: Query, parse: Any) -> Deferred[Any]:
        stage = _Stage(self._waiting)
        d = Deferred.fromCoroutine(self._call(query, parse, stage))
        return within(self._reactor, d, self._timeout).addBoth(self._ended, stage)

    def _prepared(self, access: Access) -> tuple[str, dict[str, Sequence[str]]]:
        known = self._request
        if known is not None and known[0] is access:
            return known[1], known[2]
        url = ports_url(access.endpoint)
        headers = dict(access.headers, Accept=["application/json"])
        self._request = (access, url, headers)
        return url, headers

    async def _call(self, query: Query, parse: Any, stage: _Stage) -> Any:
        for attempt in (1, 2):
            stage.where = self._waiting
            try:
                access = await self._keystone.access()
            except KeystoneUnavailable as e:
                raise LookupUnavailable(str(e)) from None
            url, headers = self._prepared(access)
            stage.where = f"Neutron API at {url}"
            self.calls += 1
            try:
                response = await self._http.get(
                    url,
                    params=query,
                    allow_redirects=False,
                    reactor=self._reactor,
                    headers=headers,
                )
                body = await treq.content(response)
            except CancelledError:
                raise
            except Exception:  # connection refused, reset, TLS failure, cancelled...
                raise LookupUnavailable(
                    f"Neutron API at {url} unreachable ({describe_error(Failure())})"
                ) from None
            if response.code == 401 and attempt == 1:
                # expired early, or revoked: one new token, one more try
                self.reauthentications += 1
                self._keystone.invalidate(access)
                continue
            if response.code != 200:
                again = " with a new token too" if attempt == 2 else ""
                raise LookupUnavailable(
                    f"Neutron API at {url} answered HTTP {response.code}{again}"
                    + _neutron_message(body)
                )
            try:
                return parse(body)
            except ValueError as e:
                raise LookupUnavailable(f"Neutron API at {url}: unusable answer: {e}") from None
        raise AssertionError("not reached")

    def _ended(self, result: Any, stage: _Stage) -> Any:
        if not isinstance(result, Failure):
            self._last_ok = True
            return result
        self.failures += 1
        self._last_ok = False
        if result.check(TimeoutError):
            raise LookupUnavailable(
                f"no answer within {self._timeout:g} s ([neutron] timeout) while "
                f"{'asking the ' if stage.where.startswith('Neutron') else ''}{stage.where}"
            )
        return result

    # -- lifecycle (metaproxy.resolve.base.ManagedBackend) ------------------------

    def start(self) -> None:
        """Get a first token now, so that bad credentials are in the log at start-up
        rather than at the first instance's boot."""
        d = self._keystone.access()

        def got(access: Access) -> None:
            log.info(
                "Neutron API lookups: token from Keystone at {keystone}; ports at {url}",
                keystone=self._keystone.url,
                url=ports_url(access.endpoint),
            )

        def failed(failure: Failure) -> None:
            log.error(
                "Neutron API lookups: no token yet ({error}); lookups answer 503 "
                "until Keystone answers",
                error=str(failure.value),
            )

        d.addCallbacks(got, failed)

    def stop(self) -> Deferred[None] | None:
        if self._pool is not None:
            return self._pool.closeCachedConnections()
        return None

    def ready(self) -> bool:
        """Whether the last call succeeded (or none failed yet)."""
        return self._last_ok is not False

    def describe(self) -> str:
        where = self._keystone.describe_endpoint()
        if "://" in where:  # endpoint_override
            where = ports_url(where)
        return f"Neutron API at {where}, tokens from Keystone at {self._keystone.url}"


def _neutron_message(body: bytes) -> str:
    """Neutron's explanation ({"NeutronError": {"message": ...}}), short, if any."""
    try:
        document = json.loads(body)
        error = document.get("NeutronError") or document.get("error") or {}
        message = error.get("message") if isinstance(error, dict) else None
    except (ValueError, AttributeError):
        return ""
    return f": {str(message)[:200]}" if message else ""


class _QuietClientFactory(_HTTP11ClientFactory):
    """No "Starting factory" / "Stopping factory" log line per connection."""

    noisy = False


def _tls_options(settings: Any) -> dict[str, object]:
    """C{[neutron] tls_min_version} and C{tls_ciphers} for Twisted's TLS options."""
    from twisted.internet.ssl import AcceptableCiphers, TLSVersion

    options: dict[str, object] = {}
    if settings.neutron_tls_min_version:
        options["raiseMinimumTo"] = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}[
            settings.neutron_tls_min_version
        ]
    if settings.neutron_tls_ciphers:
        options["acceptableCiphers"] = AcceptableCiphers.fromOpenSSLCipherString(
            settings.neutron_tls_ciphers
        )
    return options


def session_tls(session: Any) -> tuple[str | None, bool, str | None, str | None]:
    """(CA file, insecure, client certificate, its key) from a keystoneauth session, as
    C{requests} reads them: C{verify} False, True or a CA path; C{cert} a path holding
    the certificate and its key, or (certificate, key)."""
    verify, cert = session.verify, session.cert
    ca_file = verify if isinstance(verify, str) else None
    if isinstance(cert, (tuple, list)):
        client_cert, client_key = cert[0], cert[1]
    else:
        client_cert = client_key = cert or None
    return ca_file, verify is False, client_cert, client_key


def build_neutron_api(reactor: Any, settings: Any) -> NeutronApiBackend:
    """The backend for L{metaproxy.resolve.backends.BUILDERS}: keystoneauth's plugin,
    session and adapter from C{[neutron]} (the files read again,
    L{metaproxy.config.load.read_conf}), a keep-alive pool for the port queries with the
    session's TLS options."""
    from metaproxy.config import ConfigError
    from metaproxy.config.errors import Sources
    from metaproxy.config.keystone import load_keystone
    from metaproxy.config.load import read_conf
    from metaproxy.nova.tls import nova_tls_policy
    from metaproxy.resolve.base import BackendError

    try:
        keystone = load_keystone(read_conf(settings.config_files), Sources(settings.config_files))
    except ConfigError as e:
        raise BackendError(str(e)) from None
    ca_file, insecure, client_cert, client_key = session_tls(keystone.session)
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 20
    pool.cachedConnectionTimeout = 30
    pool._factory = _QuietClientFactory  # type: ignore[attr-defined]
    try:
        tls = nova_tls_policy(
            ca_file=ca_file,
            insecure=insecure,
            client_cert=client_cert,
            client_key=client_key,
            insecure_warning="Keystone's and Neutron's TLS certificates are not verified "
            "([neutron] insecure).",
            tls_options=_tls_options(settings),
        )
    except ValueError as e:
        text = str(e)
        if text.startswith("CA file"):
            name, fix = "cafile", "point cafile at a PEM CA bundle"
        else:
            name = "keyfile" if text.startswith("client key") else "certfile"
            fix = "point certfile and keyfile at the client certificate and its key (PEM)"
        raise BackendError(f"[neutron] {name}: {text}. Fix: {fix}.") from None
    agent = Agent(reactor, contextFactory=tls, pool=pool, connectTimeout=keystone.timeout)
    session = KeystoneSession(
        reactor,
        keystone.session,
        keystone.adapter,
        url=keystone.auth_url or f"(auth_type = {keystone.auth_type})",
        timeout=keystone.timeout,
    )
    return NeutronApiBackend(
        reactor, HTTPClient(agent), session, timeout=keystone.timeout, pool=pool
    )
