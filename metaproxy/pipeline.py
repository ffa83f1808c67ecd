"""The request pipeline: identify the caller, resolve the instance, sign, forward, map.

It sees no framework: a parsed L{Request} and the namespace of the socket it came in on
go in, the bytes of a complete HTTP answer come out, always. Failures become a clear
HTTP answer and one log line an operator can act on; the success path logs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from metaproxy.caller import CallerError, Identity, identify
from metaproxy.http.request import Request
from metaproxy.http.response import PASS_THROUGH_STATUSES, error_response, relay_response
from metaproxy.namespace import Namespace
from metaproxy.nova.client import (
    NovaBadResponse,
    NovaOverloaded,
    NovaResponse,
    NovaTimeout,
    NovaUnreachable,
)
from metaproxy.resolve.base import Instance, LookupUnavailable
from metaproxy.signing import sign_instance_id

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from metaproxy.guard.policy import RequestPolicy

__all__ = ["Pipeline", "Forwarder", "Resolver"]

log = Logger("metaproxy.pipeline")

_UNAVAILABLE = "The remote metadata server is temporarily unavailable. Please try again later."
_UNKNOWN = "An unknown error has occurred. Please try your request again."
#: Most instances whose signed headers are kept (emptied when full).
_MAX_SIGNED = 4096


class Resolver(Protocol):
    def resolve(self, caller: Identity, fresh: bool = False) -> Deferred[object]: ...


class Forwarder(Protocol):
    def forward(
        self, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> Deferred[NovaResponse]: ...


class Pipeline:
    """Turns one request into one answer.

    @param refresh_on_404: when lookups are cached, a 404 from Nova makes one fresh
        lookup; if it names another instance (the address was reused), Nova is asked
        again for that one (upstream's legacy cache did the same).
    @param clock: with C{answer_within}: a lookup that had to wait (a network backend)
        leaves Nova only the rest of C{answer_within} seconds, counted from the request,
        when that is less than C{nova_timeout}; so that a slow lookup plus a slow Nova is
        still answered by the agent (503) before haproxy's C{timeout server} (504).
        The Forwarder then gets a fifth argument: the deadline (C{clock.seconds()}).
    """

    def __init__(
        self,
        resolver: Resolver,
        nova: Forwarder,
        secret: bytes,
        *,
        retry_after: int = 1,
        gzip_decode: bool = False,
        refresh_on_404: bool = False,
        policy: RequestPolicy | None = None,
        clock: IReactorTime | None = None,
        answer_within: float = 31.0,
        nova_timeout: float = 28.0,
    ) -> None:
        self._resolver = resolver
        self._clock = clock
        self._answer_within = answer_within
        self._nova_timeout = nova_timeout
        # a resolver without the in-memory path always goes through resolve()
        self._resolve_now = getattr(resolver, "resolve_now", None) or _not_now
        self._nova = nova
        self._signed: dict[tuple[str, str], tuple[tuple[bytes, bytes], ...]] = {}
        self.secret = secret
        self._retry_after = retry_after
        self._gzip_decode = gzip_decode
        self._refresh_on_404 = refresh_on_404
        #: the rate limit and X-Forwarded-For rule (L{metaproxy.guard.policy}); its counters
        #: are C{pipeline.policy.counters}
        self.policy = policy
        self._policy = policy if policy is not None and policy.active else None

    @property
    def secret(self) -> bytes:
        """The shared secret that signs instance ids (replaced on SIGHUP)."""
        return self._secret

    @secret.setter
    def secret(self, value: bytes) -> None:
        self._secret = value
        self._signed.clear()

    # The steps are a plain callback chain on the resolver's Deferred rather than a
    # coroutine under Deferred.fromCoroutine: the same steps, measurably less CPU per
    # request (bench/cpu). Each step runs as soon as the one before has its result.

    def handle(
        self, request: Request, namespace: Namespace | None, caller: Identity | None = None
    ) -> Deferred[bytes]:
        """Answer C{request}; C{namespace} is the socket's, or C{None} on the shared socket.

        @param caller: who is asking, when the listener knows it already (a TCP listener
            inside the namespace: L{metaproxy.caller.identify_peer}); the request's
            headers are then not read for it.

        The Deferred always fires with bytes; cancelling it (the client went away)
        cancels the lookup or the Nova request.
        """
        try:
            identity = caller if caller is not None else identify(request, namespace)
        except CallerError as e:
            log.warn(
                "Refused request {method} {target} on {socket}: {reason}",
                method=_show(request.method),
                target=_show(request.target),
                socket=namespace.name if namespace else "the shared socket",
                reason=e.message,
            )
            return succeed(error_response(e.status, e.message))
        except Exception:
            return fail()
        if self._policy is not None:
            refusal = self._policy.check(request, identity)
            if refusal is not None:
                return succeed(refusal)
        found = self._resolve_now(identity)
        if found is not None:
            # answered from memory: straight to Nova, no Deferred for the lookup
            try:
                result = self._resolved(found, request, identity)
            except Exception:
                result = fail()
            if isinstance(result, bytes):
                return succeed(result)
            d = result
        else:
            started = self._clock.seconds() if self._clock is not None else None
            try:
                d = self._resolver.resolve(identity)
            except Exception:
                d = fail()
            d.addCallback(self._resolved, request, identity, started)
        # a failure of the steps above is answered by _failed; one of _answer is a bug
        # (the server answers 500 for it)
        d.addCallbacks(
            self._answer, self._failed, callbackArgs=(request, identity), errbackArgs=(identity,)
        )
        return d

    def _resolved(
        self,
        found: object,
        request: Request,
        identity: Identity,
        started: float | None = None,
    ) -> bytes | Deferred[NovaResponse]:
        """The lookup's result: Nova's answer to come, or the 404 answer."""
        if not isinstance(found, Instance):
            return self._not_found(identity, found)
        deadline = None
        if started is not None:
            assert self._clock is not None
            by = started + self._answer_within
            if by - self._clock.seconds() < self._nova_timeout:
                deadline = by  # the lookup took a while: Nova gets what is left
        d = self._forward(request, identity, found, deadline)
        if self._refresh_on_404:
            d.addCallback(self._refresh_on_not_found, request, identity, found)
        return d

    def _refresh_on_not_found(
        self,
        response: NovaResponse,
        request: Request,
        identity: Identity,
        found: Instance,
    ) -> NovaResponse | Deferred[NovaResponse]:
        if response.status != 404:
            return response

        def retry(fresh: object) -> NovaResponse | Deferred[NovaResponse]:
            if isinstance(fresh, Instance) and fresh != found:
                return self._forward(request, identity, fresh)
            return response

        return self._resolver.resolve(identity, fresh=True).addCallback(retry)

    def _answer(self, result: bytes | NovaResponse, request: Request, identity: Identity) -> bytes:
        if isinstance(result, bytes):
            return result
        return self._map(request, identity, result)

    def _failed(self, failure: Failure, identity: Identity) -> bytes | Failure:
        error = failure.value
        if isinstance(error, CancelledError):
            return failure  # the client went away: nobody to answer
        if isinstance(error, LookupUnavailable):
            log.warn(
                "Lookup failed for {address} in {namespace}: {error}; answered 503",
                address=_address(identity),
                namespace=identity.namespace.name,
                error=str(error),
            )
            return error_response(503, _UNAVAILABLE, retry_after=self._retry_after)
        if isinstance(error, NovaOverloaded):
            # refused before being sent (queue full, every endpoint left alone): whoever
            # refused it logs, at most once a minute, not once per request
            return error_response(
                503,
                _UNAVAILABLE,
                retry_after=max(self._retry_after, getattr(error, "retry_after", 0)),
            )
        if isinstance(error, NovaUnreachable):
            log.warn(
                "Nova metadata API unreachable for {address} in {namespace}: {error}; answered 503",
                address=_address(identity),
                namespace=identity.namespace.name,
                error=str(error),
            )
            return error_response(503, _UNAVAILABLE, retry_after=self._retry_after)
        if isinstance(error, NovaTimeout):
            log.warn(
                "Nova metadata API too slow for {address} in {namespace}: {error}; answered 503",
                address=_address(identity),
                namespace=identity.namespace.name,
                error=str(error),
            )
            return error_response(
                503,
                "The remote metadata server did not answer in time. Please try again later.",
                retry_after=self._retry_after,
            )
        if isinstance(error, NovaBadResponse):
            log.warn(
                "Unusable answer from the Nova metadata API for {address} in {namespace}: "
                "{error}; answered 502",
                address=_address(identity),
                namespace=identity.namespace.name,
                error=str(error),
            )
            return error_response(502, "The remote metadata server sent an unusable answer.")
        log.failure(
            "Internal error answering {address} in {namespace}; answered 500",
            failure,
            address=_address(identity),
            namespace=identity.namespace.name,
        )
        return error_response(500, _UNKNOWN)

    def _forward(
        self,
        request: Request,
        identity: Identity,
        instance: Instance,
        deadline: float | None = None,
    ) -> Deferred[NovaResponse]:
        key = (instance.instance_id, instance.project_id)
        signed = self._signed.get(key)
        if signed is None:
            # an instance asks ~28 times while it boots: sign it once
            signed = (
                (b"X-Instance-ID", instance.instance_id.encode("utf-8")),
                (b"X-Tenant-ID", instance.project_id.encode("utf-8")),
                (
                    b"X-Instance-ID-Signature",
                    sign_instance_id(self._secret, instance.instance_id).encode("ascii"),
                ),
            )
            if len(self._signed) >= _MAX_SIGNED:
                self._signed.clear()
            self._signed[key] = signed
        headers = ((b"X-Forwarded-For", identity.forwarded_for),) + signed
        if deadline is not None:
            return self._nova.forward(
                request.method, request.target, headers, request.body, deadline
            )
        return self._nova.forward(request.method, request.target, headers, request.body)

    def _not_found(self, identity: Identity, reason: object) -> bytes:
        namespace = identity.namespace
        log.warn(
            "No port found in {kind} {id} with {what} {address} ({reason}); answered 404",
            kind=namespace.kind.noun,
            id=namespace.id,
            what="MAC address" if identity.mac else "IP address",
            address=_address(identity),
            reason=str(reason),
        )
        return error_response(
            404, "Instance was not found on %s %s." % (namespace.kind.noun, namespace.id)
        )

    def _map(self, request: Request, identity: Identity, response: NovaResponse) -> bytes:
        status = response.status
        if status in PASS_THROUGH_STATUSES:
            if status == 403:
                log.warn(
                    "The remote metadata server responded with Forbidden for {address} in "
                    "{namespace}. This response usually occurs when shared secrets do not "
                    "match.",
                    address=_address(identity),
                    namespace=identity.namespace.name,
                )
            elif status == 500:
                log.warn(
                    "Remote metadata server experienced an internal server error "
                    "(request from {address} in {namespace}).",
                    address=_address(identity),
                    namespace=identity.namespace.name,
                )
            return relay_response(
                status,
                response.reason,
                response.headers,
                response.body,
                head_only=request.method == b"HEAD",
                gzip_decode=self._gzip_decode,
            )
        log.warn(
            "Unexpected response code {status} from the Nova metadata API for {target} "
            "(from {address} in {namespace}); answered 502",
            status=status,
            target=_show(request.target),
            address=_address(identity),
            namespace=identity.namespace.name,
        )
        return error_response(
            502, "Unexpected response code %d from the remote metadata server." % (status,)
        )


def _not_now(caller: Identity) -> None:
    return None


def _address(identity: Identity) -> str:
    if identity.mac:
        return f"{identity.ip} (MAC {identity.mac})"
    return identity.ip


def _show(value: bytes) -> str:
    """Bytes from the client, safe and short for a log line."""
    return value[:200].decode("ascii", "backslashreplace")
