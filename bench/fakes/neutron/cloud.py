"""The fake cloud's state (L{FakeCloud}: Keystone's credentials and tokens, Neutron's
ports, injected faults, the requests received) and the resources serving it over HTTP
(L{cloud_resource}: C{/identity/v3/auth/tokens} and C{/<endpoint>/v2.0/ports})."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
from keystoneauth1 import fixture as ks_fixture
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from bench.fakes.neutron.ports import FilterError, PortIndex, neutron_ports, select_ports
from metaproxy.resolve.table import load_table

__all__ = ["REGION", "Recorded", "FakeCloud", "cloud_resource", "QuietSite"]

_INTERFACES = {"internal": "network", "public": "network-public", "admin": "network-admin"}
REGION = "RegionOne"


@attrs.define
class Recorded:
    """One request the fake received: C{kind} C{"keystone"} or C{"neutron"}, the path,
    the query (key, value) pairs in order, the token sent, the JSON body (Keystone)."""

    kind: str
    path: str
    query: list[tuple[str, str]]
    token: str | None = None
    body: Any = None


class FakeCloud:
    """Keystone and Neutron's state: credentials, tokens, ports, faults, what was asked.

    @param ports: Neutron's ports (L{neutron_ports}).
    @param clock: C{seconds()} for token expiry (a test's C{Clock}, or the reactor).
    @param base_url: the catalog's URLs start with it (set it once listening).
    @param token_lifetime: seconds a token lives.

    Faults, for tests: C{keystone_fault} / C{neutron_fault} is C{None}, an HTTP status to
    answer, C{"hang"} (never answer; L{hanging} holds the requests) or C{"hold"} (answer
    when L{release} is called).
    """

    def __init__(
        self,
        ports: list[dict[str, Any]],
        clock: Any,
        *,
        base_url: str = "http://cloud.test",
        username: str = "metaproxy",
        password: str = "fake-password",
        user_domain: str = "Default",
        project: str = "service",
        project_domain: str = "Default",
        application_credential: tuple[str, str] | None = None,
        token_lifetime: float = 3600.0,
    ) -> None:
        self.index = PortIndex(ports)
        self.clock = clock
        self.base_url = base_url
        self.username, self.password = username, password
        self.user_domain, self.project, self.project_domain = user_domain, project, project_domain
        self.application_credential = application_credential
        self.token_lifetime = token_lifetime
        self.tokens: dict[str, float] = {}
        self.requests: list[Recorded] = []
        self.keystone_fault: int | str | None = None
        self.neutron_fault: int | str | None = None
        self.hanging: list[Request] = []
        self._held: list[Callable[[], None]] = []

    def release(self) -> int:
        """Answer the requests held (C{"hold"}) as if no fault; returns how many."""
        held, self._held = self._held, []
        for finish in held:
            finish()
        return len(held)

    @classmethod
    def from_table(cls, path: str | Path, clock: Any, **kwargs: Any) -> FakeCloud:
        load_table(path)  # validates, with the table's own messages
        return cls(neutron_ports(json.loads(Path(path).read_text())), clock, **kwargs)

    def keystone_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.kind == "keystone"]

    def neutron_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.kind == "neutron"]

    def revoke_tokens(self) -> None:
        """Every token issued so far is refused from now on (401)."""
        self.tokens.clear()

    def services(self) -> list[tuple[str, str, list[tuple[str, str]]]]:
        """The catalog's services: (type, name, [(interface, URL), ...]), in C{REGION}."""
        base = self.base_url.rstrip("/")
        network = [(interface, f"{base}/{path}") for interface, path in _INTERFACES.items()]
        identity = [(interface, f"{base}/identity/v3") for interface in _INTERFACES]
        return [("identity", "keystone", identity), ("network", "neutron", network)]

    def versions(self) -> dict[str, Any]:
        """C{GET /identity}: the versions Keystone serves (v3 only)."""
        return dict(
            ks_fixture.DiscoveryList(href=f"{self.base_url.rstrip('/')}/identity", v2=False)
        )

    def version(self) -> dict[str, Any]:
        """C{GET /identity/v3}: the v3 version document."""
        return {"version": ks_fixture.V3Discovery(f"{self.base_url.rstrip('/')}/identity/v3/")}

    def token_answer(self, body: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        """C{POST /v3/auth/tokens} with C{keystone_fault} applied (an HTTP status):
        (status, JSON answer, headers)."""
        self.requests.append(Recorded("keystone", "/identity/v3/auth/tokens", [], body=body))
        if isinstance(self.keystone_fault, int):
            fault = self.keystone_fault
            return fault, _error(fault, "Fault", "injected fault"), {}
        if body is None:
            return 400, _error(400, "Bad Request", "Malformed JSON"), {}
        status, document, token = self.authenticate(body)
        return status, document, {"X-Subject-Token": token} if token else {}

    def authenticate(self, body: Any) -> tuple[int, dict[str, Any], str | None]:
        """Keystone's C{POST /v3/auth/tokens}: (status, JSON answer, token or None)."""
        try:
            identity = body["auth"]["identity"]
            methods = identity["methods"]
        except (KeyError, TypeError):
            return 400, _error(400, "Bad Request", "Expecting to find identity in auth."), None
        scope = body["auth"].get("scope")
        system = isinstance(scope, dict) and scope.get("system") == {"all": True}
        if methods == ["password"]:
            ok = self._password_ok(identity.get("password"), scope)
        elif methods == ["application_credential"]:
            given = identity.get("application_credential") or {}
            ok = (
                self.application_credential is not None
                and (given.get("id"), given.get("secret")) == self.application_credential
            )
        else:
            ok = False
        if not ok:
            return (
                401,
                _error(401, "Unauthorized", "The request you have made requires authentication."),
                None,
            )
        token = "gAAAAA" + secrets.token_urlsafe(24)
        now = self.clock.seconds()
        expires = now + self.token_lifetime
        self.tokens[token] = expires
        document = ks_fixture.V3Token(
            expires=datetime.fromtimestamp(expires, UTC),
            issued=datetime.fromtimestamp(now, UTC),
            user_id="user-metaproxy",
            user_name=self.username,
            user_domain_id="default",
            user_domain_name=self.user_domain,
            methods=methods,
            audit_id=secrets.token_urlsafe(16),
        )
        if system:
            document.set_system_scope()
        else:  # an application credential's own scope is this project too
            document.set_project_scope(
                id="project-service",
                name=self.project,
                domain_id="default",
                domain_name=self.project_domain,
            )
        if methods == ["application_credential"]:
            document.set_application_credential(self.application_credential[0])
        document.add_role(name="admin", id="role-admin")
        for kind, name, endpoints in self.services():
            service = document.add_service(kind, name=name, id=f"svc-{kind}")
            for interface, url in endpoints:
                service.add_endpoint(interface, url, region=REGION, id=f"ep-{kind}-{interface}")
        return 201, dict(document), token

    def _password_ok(self, password: Any, scope: Any) -> bool:
        try:
            user = password["user"]
            domain = user["domain"]
            project = scope.get("project") or {}
        except (KeyError, TypeError, AttributeError):
            return False
        if (user.get("name"), user.get("password")) != (self.username, self.password):
            return False
        if (
            domain.get("name", self.user_domain) != self.user_domain
            and domain.get("id") != "default"
        ):
            return False
        if scope.get("system") == {"all": True}:
            return True
        if project.get("id") == "project-service":
            return True
        project_domain = project.get("domain") or {}
        return project.get("name") == self.project and (
            project_domain.get("name") == self.project_domain
            or project_domain.get("id") == "default"
        )

    def token_alive(self, token: str | None) -> bool:
        expires = self.tokens.get(token or "")
        return expires is not None and self.clock.seconds() < expires


def _error(code: int, title: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "title": title, "message": message}}


def _query(request: Request) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(request.uri.decode("latin-1")).query, keep_blank_values=True)


def _answer(
    request: Request, status: int, document: Any, headers: dict[str, str] | None = None
) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    for name, value in (headers or {}).items():
        request.setHeader(name.encode(), value.encode())
    return json.dumps(document).encode()


class _Tokens(Resource):
    isLeaf = True

    def __init__(self, cloud: FakeCloud) -> None:
        super().__init__()
        self.cloud = cloud

    def render_POST(self, request: Request) -> bytes | int:
        cloud = self.cloud
        try:
            body = json.loads(request.content.read())
        except ValueError:
            body = None
        if cloud.keystone_fault == "hang":
            cloud.requests.append(Recorded("keystone", request.path.decode(), [], body=body))
            cloud.hanging.append(request)
            return NOT_DONE_YET
        if cloud.keystone_fault == "hold":
            cloud._held.append(lambda: _finish(request, self._answer(request, body)))
            return NOT_DONE_YET
        return self._answer(request, body)

    def _answer(self, request: Request, body: Any) -> bytes:
        return _answer(request, *self.cloud.token_answer(body))


class _Discovery(Resource):
    """Keystone's version discovery: C{/identity} lists the versions, C{/identity/v3}
    describes v3 (its children: C{auth/tokens})."""

    def __init__(self, document: Callable[[], dict[str, Any]], status: int) -> None:
        super().__init__()
        self.document = document
        self.status = status

    def render_GET(self, request: Request) -> bytes:
        return _answer(request, self.status, self.document())


class _Ports(Resource):
    isLeaf = True

    def __init__(self, cloud: FakeCloud) -> None:
        super().__init__()
        self.cloud = cloud

    def render_GET(self, request: Request) -> bytes | int:
        cloud = self.cloud
        token = request.getHeader(b"X-Auth-Token")
        query = _query(request)
        cloud.requests.append(
            Recorded(
                "neutron", request.path.decode(), query, token=token.decode() if token else None
            )
        )
        if cloud.neutron_fault == "hang":
            cloud.hanging.append(request)
            return NOT_DONE_YET
        if cloud.neutron_fault == "hold":
            cloud._held.append(lambda: _finish(request, self._answer(request, token, query)))
            return NOT_DONE_YET
        if isinstance(cloud.neutron_fault, int):
            return _answer(
                request,
                cloud.neutron_fault,
                {"NeutronError": {"type": "Fault", "message": "injected fault", "detail": ""}},
            )
        return self._answer(request, token, query)

    def _answer(self, request: Request, token: bytes | None, query: list[tuple[str, str]]) -> bytes:
        cloud = self.cloud
        if not cloud.token_alive(token.decode() if token else None):
            request.setHeader(
                b"WWW-Authenticate", f'Keystone uri="{cloud.base_url}/identity"'.encode()
            )
            return _answer(
                request,
                401,
                _error(401, "Unauthorized", "The request you have made requires authentication."),
            )
        try:
            ports = select_ports(cloud.index, query)
        except FilterError as e:
            return _answer(
                request,
                400,
                {"NeutronError": {"type": "HTTPBadRequest", "message": str(e), "detail": ""}},
            )
        return _answer(request, 200, {"ports": ports})


def _finish(request: Request, body: bytes) -> None:
    request.write(body)
    request.finish()


def _tree(*names: str, leaf: Resource) -> Resource:
    top = node = Resource()
    for name in names[:-1]:
        child = Resource()
        node.putChild(name.encode(), child)
        node = child
    node.putChild(names[-1].encode(), leaf)
    return top


def cloud_resource(cloud: FakeCloud) -> Resource:
    """The root resource: C{/identity} (discovery), C{/identity/v3/auth/tokens} and
    C{/<endpoint>/v2.0/ports}."""
    root = Resource()
    identity = _Discovery(cloud.versions, 300)
    v3 = _Discovery(cloud.version, 200)
    identity.putChild(b"v3", v3)
    v3.putChild(b"", v3)  # /identity/v3/, the URL its own document links to
    v3.putChild(b"auth", _tree("tokens", leaf=_Tokens(cloud)))
    root.putChild(b"identity", identity)
    for path in _INTERFACES.values():
        root.putChild(path.encode(), _tree("v2.0", "ports", leaf=_Ports(cloud)))
    return root


class QuietSite(Site):
    def log(self, request: Request) -> None:
        pass
