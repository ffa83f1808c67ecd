"""The pipeline on in-memory collaborators: request in, answer bytes out.

Covers the handler items of Neutron's checklist (tests/CHECKLIST.md) and the response
mapping (docs/upstream.md, "Response mapping").
"""

import gzip

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.logger import LogLevel

from bench.load.unixhttp import parse_answer
from metaproxy.http.request import RequestParser
from metaproxy.namespace import Namespace
from metaproxy.nova.client import NovaBadResponse, NovaResponse, NovaTimeout, NovaUnreachable
from metaproxy.pipeline import Pipeline
from metaproxy.resolve.base import LookupUnavailable
from metaproxy.resolve.cache import CachingBackend
from metaproxy.resolve.resolver import InstanceResolver
from metaproxy.resolve.table import parse_table
from metaproxy.signing import sign_instance_id
from metaproxy.testing import FakeNova, InMemoryPortBackend, echo_instance_id

SECRET = b"s3cr3t-never-logged"
TABLE = {
    "routers": {"r1": ["blue"], "r2": ["green"]},
    "ports": [
        {
            "id": "a",
            "network_id": "blue",
            "mac_address": "fa:16:3e:00:00:01",
            "fixed_ips": ["10.0.0.5"],
            "device_id": "vm-blue",
            "project_id": "proj-1",
        },
        {
            "id": "b",
            "network_id": "green",
            "mac_address": "52:54:00:de:5b:bf",
            "fixed_ips": ["10.0.0.5"],
            "device_id": "vm-green",
            "project_id": "proj-2",
        },
    ],
}


def req(raw):
    return RequestParser().feed(raw)


def get(target=b"/openstack", *headers):
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: 169.254.169.254"]
    lines += [b"%s: %s" % h for h in headers]
    return req(b"\r\n".join(lines) + b"\r\n\r\n")


def run(pipeline, request, namespace=None):
    results = []
    pipeline.handle(request, namespace).addBoth(results.append)
    assert results, "pipeline did not answer synchronously with in-memory collaborators"
    assert isinstance(results[0], bytes), results[0]
    return parse_answer(results[0])


def make(nova=None, backend=None, **kw):
    backend = backend or InMemoryPortBackend(TABLE)
    nova = nova or FakeNova()
    return Pipeline(InstanceResolver(backend), nova, SECRET, **kw), nova, backend


def text(events):
    from twisted.logger import formatEvent

    return "\n".join(formatEvent(e) for e in events)


def test_found_instance_forwarded_with_exact_headers():
    """Nova gets exactly upstream's four headers and the signed instance id (TPB)."""
    pipeline, nova, _ = make()
    answer = run(
        pipeline,
        get(b"/openstack", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5")),
    )
    assert answer.status == 200 and answer.body == b"data"
    method, target, headers, body = nova.sent[0]
    assert (method, target, body) == (b"GET", b"/openstack", b"")
    assert dict(headers) == {
        b"X-Forwarded-For": b"10.0.0.5",
        b"X-Instance-ID": b"vm-blue",
        b"X-Tenant-ID": b"proj-1",
        b"X-Instance-ID-Signature": sign_instance_id(SECRET, "vm-blue").encode(),
    }
    assert len(headers) == 4


def test_overlapping_ips_resolve_per_router():
    """The same IP behind two routers reaches two different instances."""
    pipeline, nova, _ = make()
    run(pipeline, get(b"/", (b"X-Neutron-Router-ID", b"r2"), (b"X-Forwarded-For", b"10.0.0.5")))
    assert dict(nova.sent[0][2])[b"X-Instance-ID"] == b"vm-green"
    run(pipeline, get(b"/", (b"X-Neutron-Network-ID", b"blue"), (b"X-Forwarded-For", b"10.0.0.5")))
    assert dict(nova.sent[1][2])[b"X-Instance-ID"] == b"vm-blue"


def test_post_body_and_query_forwarded_byte_exact():
    """POST is proxied with its body; path and query reach Nova as sent (TPB)."""
    pipeline, nova, _ = make()
    body = bytes(range(256)) * 3
    request = req(
        b"POST /openstack/latest/password?x=%20y HTTP/1.1\r\nX-Neutron-Router-ID: r1\r\n"
        b"X-Forwarded-For: 10.0.0.5\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    run(pipeline, request)
    method, target, _, sent_body = nova.sent[0]
    assert (method, target, sent_body) == (b"POST", b"/openstack/latest/password?x=%20y", body)


def test_per_namespace_socket_uses_its_namespace():
    """On a namespace's socket, a header naming another namespace is ignored."""
    pipeline, nova, _ = make()
    run(
        pipeline,
        get(b"/", (b"X-Neutron-Router-ID", b"r2"), (b"X-Forwarded-For", b"10.0.0.5")),
        Namespace.parse("qrouter-r1"),
    )
    assert dict(nova.sent[0][2])[b"X-Instance-ID"] == b"vm-blue"


def test_link_local_caller_found_by_mac():
    """A link-local caller is found through the MAC of its EUI-64 address."""
    pipeline, nova, _ = make()
    answer = run(
        pipeline,
        get(
            b"/",
            (b"X-Neutron-Network-ID", b"green"),
            (b"X-Forwarded-For", b"fe80::5054:ff:fede:5bbf"),
        ),
    )
    assert answer.status == 200
    assert dict(nova.sent[0][2])[b"X-Instance-ID"] == b"vm-green"


def test_not_found_is_404_with_upstream_message(logged):
    """No port: 404 'Instance was not found on network <id>.' and a warning; Nova not asked."""
    pipeline, nova, _ = make()
    answer = run(
        pipeline,
        get(b"/", (b"X-Neutron-Network-ID", b"net_id"), (b"X-Forwarded-For", b"192.168.1.1")),
    )
    assert answer.status == 404
    assert b"Instance was not found on network net_id." in answer.body
    assert nova.sent == []
    assert "No port found in network net_id with IP address 192.168.1.1" in text(logged)
    answer = run(
        pipeline, get(b"/", (b"X-Neutron-Router-ID", b"r9"), (b"X-Forwarded-For", b"192.168.1.1"))
    )
    assert b"Instance was not found on router r9." in answer.body


def test_both_headers_400_without_lookup():
    """Router and network headers together: 400, and no lookup at all."""
    pipeline, nova, backend = make()
    answer = run(
        pipeline,
        get(
            b"/",
            (b"X-Neutron-Router-ID", b"r1"),
            (b"X-Neutron-Network-ID", b"blue"),
            (b"X-Forwarded-For", b"10.0.0.5"),
        ),
    )
    assert answer.status == 400 and b"Both network blue and router r1 defined." in answer.body
    assert backend.calls == 0 and nova.sent == []


@pytest.mark.parametrize("status", [200, 400, 403, 404, 409, 500, 502, 503, 504])
def test_pass_through_statuses(status):
    """Each of upstream's pass-through statuses reaches the instance with Nova's body."""
    nova = FakeNova(
        NovaResponse(status, b"Whatever", ((b"Content-Type", b"text/html"),), b"<b>x</b>")
    )
    pipeline, _, _ = make(nova)
    answer = run(
        pipeline, get(b"/", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5"))
    )
    assert answer.status == status and answer.body == b"<b>x</b>"
    assert answer.header("Content-Type") == "text/html"
    assert answer.header("Connection") == "close"


@pytest.mark.parametrize("status", [302, 401, 405, 413])
def test_unexpected_status_is_502_not_a_dropped_connection(status, logged):
    """Any other Nova status is a well-formed 502 and a log line (upstream drops it)."""
    pipeline, _, _ = make(FakeNova(NovaResponse(status, b"X", (), b"")))
    answer = run(
        pipeline, get(b"/", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5"))
    )
    assert answer.status == 502
    assert f"Unexpected response code {status}" in text(logged)


def test_forbidden_logs_secret_hint_without_secret(logged):
    """Nova's 403 is relayed with upstream's warning; neither secret nor signature logged."""
    pipeline, _, _ = make(
        FakeNova(NovaResponse(403, b"Forbidden", (), b"Invalid proxy request signature."))
    )
    answer = run(
        pipeline, get(b"/", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5"))
    )
    assert answer.status == 403
    logs = text(logged)
    assert "shared secrets do not match" in logs
    assert SECRET.decode() not in logs and sign_instance_id(SECRET, "vm-blue") not in logs


@pytest.mark.parametrize(
    "error, status",
    [
        (NovaUnreachable("connection refused by 127.0.0.1:8775"), 503),
        (NovaTimeout("no answer in 28 s"), 503),
        (NovaBadResponse("unparsable"), 502),
    ],
)
def test_nova_failures(error, status):
    """Nova unreachable or too slow: 503 with Retry-After (cloud-init retries it)."""
    pipeline, _, _ = make(FakeNova(error), retry_after=3)
    answer = run(
        pipeline, get(b"/", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5"))
    )
    assert answer.status == status
    if status == 503:
        assert answer.header("Retry-After") == "3"


def test_lookup_unavailable_is_503():
    """A lookup backend outage is 503 with Retry-After, never a wrong instance."""

    class Down(InMemoryPortBackend):
        def ports_by_ip(self, networks, ip):
            return fail(LookupUnavailable("neutron-server did not answer"))

    pipeline, nova, _ = make(backend=Down(TABLE))
    answer = run(
        pipeline, get(b"/", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5"))
    )
    assert answer.status == 503 and answer.header("Retry-After") == "1" and nova.sent == []


@pytest.mark.logged_errors
def test_internal_error_is_500_and_logged(logged):
    """A bug anywhere below is a 500 with upstream's wording, and a logged traceback."""

    class Broken:
        def forward(self, *a):
            raise RuntimeError("boom")

    pipeline, _, _ = make(Broken())
    answer = run(
        pipeline, get(b"/", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5"))
    )
    assert answer.status == 500 and b"An unknown error has occurred" in answer.body


def test_empty_200_and_binary_bodies():
    """Empty 200 has Content-Length 0; binary and gzipped bodies stay byte-exact."""
    raw = gzip.compress(b"\xff\xfe binary user data")
    for body in (b"", bytes(range(256)), raw):
        pipeline, _, _ = make(FakeNova(NovaResponse(200, b"OK", (), body)))
        answer = run(
            pipeline, get(b"/", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5"))
        )
        assert answer.body == body and answer.header("Content-Length") == str(len(body))


def test_root_path_still_looks_up():
    """The '/' root is forwarded with a lookup like any path (upstream does the same)."""
    pipeline, nova, backend = make()
    run(pipeline, get(b"/", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5")))
    assert backend.calls == 2 and nova.sent[0][1] == b"/"


def test_nova_404_refreshes_a_cached_lookup_once():
    """With the cache on, Nova's 404 makes one fresh lookup; a changed port is retried."""
    from twisted.internet.task import Clock

    backend = InMemoryPortBackend(TABLE)
    cache = CachingBackend(backend, Clock(), ttl=600, enabled=True)
    nova = FakeNova(NovaResponse(404, b"Not Found", (), b""), NovaResponse(200, b"OK", (), b"new"))
    pipeline = Pipeline(InstanceResolver(cache), nova, SECRET, refresh_on_404=True)
    request = get(b"/", (b"X-Neutron-Network-ID", b"blue"), (b"X-Forwarded-For", b"10.0.0.5"))
    run(pipeline, request)  # fills the cache, Nova says 404 (same instance: no retry)
    assert len(nova.sent) == 1
    # the address now belongs to a new instance; the cached answer is stale
    backend.table = parse_table({"ports": [dict(TABLE["ports"][0], device_id="vm-new")]})
    nova.answers = [NovaResponse(404, b"Not Found", (), b""), NovaResponse(200, b"OK", (), b"new")]
    answer = run(pipeline, request)
    assert answer.body == b"new"
    assert [dict(s[2])[b"X-Instance-ID"] for s in nova.sent[1:]] == [b"vm-blue", b"vm-new"]


def test_cancel_propagates_to_nova():
    """When the client goes away, the Nova request is cancelled and nothing is logged."""
    cancelled = []
    pending = Deferred(lambda d: cancelled.append(True))
    pipeline, _, _ = make(FakeNova(pending))
    d = pipeline.handle(
        get(b"/", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5")), None
    )
    d.addErrback(lambda f: None)
    d.cancel()
    assert cancelled == [True]


@pytest.mark.parametrize("xff", [None, b"garbage", b"\xc3\x28"])
def test_bad_forwarded_for_is_400(xff, logged):
    """Missing or unparsable X-Forwarded-For: 400 and a log line; no lookup."""
    pipeline, nova, backend = make()
    headers = [(b"X-Neutron-Router-ID", b"r1")] + ([(b"X-Forwarded-For", xff)] if xff else [])
    answer = run(pipeline, get(b"/", *headers))
    assert answer.status == 400 and backend.calls == 0
    assert any(e.get("log_level") == LogLevel.warn for e in logged)


def test_new_secret_signs_the_next_request():
    """Signed headers are kept per instance, but a new secret (SIGHUP) is used at once."""
    pipeline, nova, _ = make()
    request = get(b"/", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5"))
    run(pipeline, request)
    run(pipeline, request)
    pipeline.secret = b"rotated"
    run(pipeline, request)
    signatures = [dict(sent[2])[b"X-Instance-ID-Signature"] for sent in nova.sent]
    assert signatures == [sign_instance_id(SECRET, "vm-blue").encode()] * 2 + [
        sign_instance_id(b"rotated", "vm-blue").encode()
    ]
    assert pipeline.secret == b"rotated"


def test_signed_headers_kept_are_bounded(monkeypatch):
    """The signed headers kept are emptied when full; every instance is still signed
    as itself."""
    import metaproxy.pipeline

    monkeypatch.setattr(metaproxy.pipeline, "_MAX_SIGNED", 1)
    pipeline, nova, _ = make()
    for _ in range(2):
        for ns in (b"blue", b"green"):
            run(
                pipeline,
                get(b"/", (b"X-Neutron-Network-ID", ns), (b"X-Forwarded-For", b"10.0.0.5")),
            )
    assert [
        (
            dict(s[2])[b"X-Instance-ID"],
            dict(s[2])[b"X-Tenant-ID"],
            dict(s[2])[b"X-Instance-ID-Signature"],
        )
        for s in nova.sent
    ] == [
        (b"vm-blue", b"proj-1", sign_instance_id(SECRET, "vm-blue").encode()),
        (b"vm-green", b"proj-2", sign_instance_id(SECRET, "vm-green").encode()),
    ] * 2


class RaisingResolver:
    def __init__(self, error):
        self.error = error

    def resolve(self, caller, fresh=False):
        raise self.error


def test_lookup_raising_at_once_is_answered():
    """A resolver that raises instead of failing its Deferred: 503 for an outage."""
    pipeline = Pipeline(RaisingResolver(LookupUnavailable("down")), FakeNova(), SECRET)
    answer = run(
        pipeline, get(b"/", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5"))
    )
    assert answer.status == 503 and answer.header("Retry-After") == "1"


@pytest.mark.logged_errors
def test_resolver_bug_is_500_and_logged(logged):
    """A resolver that raises anything else: 500 with upstream's wording, logged."""
    pipeline = Pipeline(RaisingResolver(KeyError("bug")), FakeNova(), SECRET)
    answer = run(
        pipeline, get(b"/", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5"))
    )
    assert answer.status == 500 and b"An unknown error has occurred" in answer.body
    assert "Internal error answering 10.0.0.5 in qrouter-r1" in text(logged)


def test_cancel_while_looking_up_cancels_the_lookup(logged):
    """The client goes away while the lookup is in progress: the lookup is cancelled,
    Nova is never asked, nothing is logged."""
    cancelled = []

    class Slow(InMemoryPortBackend):
        def router_networks(self, router_id):
            return Deferred(lambda d: cancelled.append(router_id))

    pipeline, nova, _ = make(backend=Slow(TABLE))
    d = pipeline.handle(
        get(b"/", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5")), None
    )
    failures = []
    d.addErrback(failures.append)
    d.cancel()
    assert cancelled == ["r1"] and nova.sent == []
    assert failures and failures[0].check(CancelledError)
    assert not [
        e
        for e in logged
        if e.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical)
    ]


def test_refresh_on_404_answers_nova_404_when_the_lookup_is_unchanged():
    """With the cache on, a 404 whose fresh lookup names the same instance is relayed."""
    from twisted.internet.task import Clock

    cache = CachingBackend(InMemoryPortBackend(TABLE), Clock(), ttl=600, enabled=True)
    nova = FakeNova(NovaResponse(404, b"Not Found", (), b"gone"))
    pipeline = Pipeline(InstanceResolver(cache), nova, SECRET, refresh_on_404=True)
    answer = run(
        pipeline, get(b"/", (b"X-Neutron-Network-ID", b"blue"), (b"X-Forwarded-For", b"10.0.0.5"))
    )
    assert answer.status == 404 and answer.body == b"gone" and len(nova.sent) == 1


def test_nova_failing_after_a_404_refresh_is_answered():
    """The retry after a refreshed lookup fails: answered like any Nova failure."""
    from twisted.internet.task import Clock

    backend = InMemoryPortBackend(TABLE)
    cache = CachingBackend(backend, Clock(), ttl=600, enabled=True)
    nova = FakeNova(NovaResponse(200, b"OK", (), b"x"))
    pipeline = Pipeline(InstanceResolver(cache), nova, SECRET, refresh_on_404=True)
    request = get(b"/", (b"X-Neutron-Network-ID", b"blue"), (b"X-Forwarded-For", b"10.0.0.5"))
    run(pipeline, request)  # fills the cache
    backend.table = parse_table({"ports": [dict(TABLE["ports"][0], device_id="vm-new")]})
    nova.answers = [NovaResponse(404, b"Not Found", (), b""), NovaTimeout("slow")]
    answer = run(pipeline, request)
    assert answer.status == 503 and b"did not answer in time" in answer.body


class NowOnlyResolver:
    """Answers from memory only; its Deferred path must not be used then."""

    def __init__(self, found):
        self.found = found
        self.fresh_calls = []

    def resolve_now(self, caller):
        return self.found

    def resolve(self, caller, fresh=False):
        assert fresh, "resolve() used although the answer was at hand"
        self.fresh_calls.append(caller)
        return succeed(self.found)


def test_answer_at_hand_goes_straight_to_nova():
    """A resolver with the answer in memory (resolve_now) is not asked through
    Deferreds: the request is signed and forwarded with the instance it gave."""
    from metaproxy.resolve.base import Instance
    from metaproxy.resolve.resolver import NotFound

    nova = FakeNova()
    pipeline = Pipeline(NowOnlyResolver(Instance("vm-now", "proj-now")), nova, SECRET)
    answer = run(
        pipeline, get(b"/x", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5"))
    )
    assert answer.status == 200
    headers = dict(nova.sent[0][2])
    assert headers[b"X-Instance-ID"] == b"vm-now" and headers[b"X-Tenant-ID"] == b"proj-now"
    missing = Pipeline(NowOnlyResolver(NotFound("no port", ("blue",))), FakeNova(), SECRET)
    answer = run(
        missing, get(b"/x", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5"))
    )
    assert answer.status == 404


def test_answer_at_hand_still_looks_again_after_nova_404():
    """Nova's 404 for an instance found in memory still makes one fresh lookup."""
    from metaproxy.resolve.base import Instance

    resolver = NowOnlyResolver(Instance("vm-now", "proj-now"))
    nova = FakeNova(NovaResponse(404, b"Not Found", (), b""))
    pipeline = Pipeline(resolver, nova, SECRET, refresh_on_404=True)
    answer = run(
        pipeline, get(b"/x", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5"))
    )
    assert answer.status == 404 and len(resolver.fresh_calls) == 1


class SlowResolver:
    """Answers after the test fires its Deferred (a network backend)."""

    def __init__(self):
        self.pending = Deferred()

    def resolve(self, caller, fresh=False):
        return self.pending


@pytest.mark.parametrize("lookup_seconds, deadline", [(0.5, None), (3.0, None), (10.0, 131.0)])
def test_a_slow_lookup_leaves_nova_only_the_rest_of_the_answer_time(lookup_seconds, deadline):
    """Lookup time + Nova's timeout must stay within answer_within (below haproxy's
    timeout server): after a slow lookup Nova gets a deadline, after a quick one its own
    timeout."""
    from twisted.internet.task import Clock

    from metaproxy.resolve.base import Instance

    clock = Clock()
    clock.advance(100)
    resolver, nova = SlowResolver(), FakeNova()
    pipeline = Pipeline(resolver, nova, SECRET, clock=clock, answer_within=31.0, nova_timeout=28.0)
    answers = []
    pipeline.handle(
        get(b"/x", (b"X-Neutron-Router-ID", b"r1"), (b"X-Forwarded-For", b"10.0.0.5")), None
    ).addBoth(answers.append)
    clock.advance(lookup_seconds)
    resolver.pending.callback(Instance("vm", "proj"))
    assert nova.time_limits == [deadline]
    assert parse_answer(answers[0]).status == 200


def test_a_caller_given_by_the_listener_is_the_one_served():
    """A TCP listener inside the namespace gives the caller (its peer): the request's
    namespace headers and X-Forwarded-For, written by the guest, change nothing, not
    even into a 400 (both a router and a network header)."""
    from metaproxy.caller import identify_peer

    r2 = Namespace.parse("qrouter-r2")
    pipeline, nova, _ = make(nova=FakeNova(reply=echo_instance_id))
    request = get(
        b"/openstack",
        (b"X-Neutron-Router-ID", b"r1"),
        (b"X-Neutron-Network-ID", b"blue"),
        (b"X-OVN-Network-ID", b"blue"),
        (b"X-Forwarded-For", b"10.0.0.9"),
    )
    results = []
    pipeline.handle(request, r2, identify_peer(r2, "10.0.0.5")).addBoth(results.append)
    answer = parse_answer(results[0])
    assert (answer.status, answer.body) == (200, b"metadata of vm-green")
    sent = dict(nova.sent[0][2])
    assert sent[b"X-Forwarded-For"] == b"10.0.0.5" and sent[b"X-Tenant-ID"] == b"proj-2"
