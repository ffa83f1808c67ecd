"""The fake Nova metadata API (bench.fakes.nova) and the tree it serves (bench.fakes.novatree).

Requests are fed as raw bytes to the Site's protocol over a StringTransport, so tests
control the exact wire form (header case, repeats) and read the exact response.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import math
import os
import random
import statistics
from collections.abc import Callable

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent
from twisted.python.failure import Failure

from bench.fakes import novatree
from bench.fakes.nova import cli
from bench.fakes.nova.api import PID_HEADER, make_site
from bench.fakes.nova.instances import instances_from_table
from bench.fakes.nova.recording import RecordedRequest
from bench.fakes.nova.service_time import ServiceTime, concurrency_share
from bench.fakes.nova.stats import NovaStats, SharedBoard
from bench.fakes.novatree import InstanceRecord
from bench.load import cloudinit

SECRET = "s3cret"
INSTANCE = "6f0c0b5e-2c2a-4f6e-9d7a-1b2c3d4e5f60"
PROJECT = "proj-a"
OTHER = "foo"
OTHER_PROJECT = "proj-b"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests test@example"
GZIPPED = gzip.compress(b"#cloud-config\nhostname: vm-1\n", mtime=0)

TABLE = {
    "routers": {"r1": ["n1"]},
    "ports": [
        {
            "id": "rport",
            "network_id": "n1",
            "mac_address": "fa:16:3e:00:00:01",
            "fixed_ips": ["10.0.0.1"],
            "device_id": "r1",
            "project_id": PROJECT,
            "device_owner": "network:router_interface",
        },
        {
            "id": "p1",
            "network_id": "n1",
            "mac_address": "fa:16:3e:00:00:05",
            "fixed_ips": ["fd00::5", "10.0.0.5"],
            "device_id": INSTANCE,
            "project_id": PROJECT,
            "device_owner": "compute:nova",
        },
        {
            "id": "p2",
            "network_id": "n1",
            "mac_address": "fa:16:3e:00:00:06",
            "fixed_ips": ["10.0.0.6"],
            "device_id": OTHER,
            "project_id": OTHER_PROJECT,
            "device_owner": "compute:nova",
        },
    ],
    "instances": {
        INSTANCE: {
            "hostname": "vm-1",
            "user_data_gzip_base64": base64.b64encode(GZIPPED).decode("ascii"),
            "public_keys": {"mykey": KEY},
            "floating_ip": "",
            "availability_zone": "az1",
        }
    },
}


def sign(instance_id: str, secret: str = SECRET) -> bytes:
    return hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest().encode()


def signed(instance_id: str = INSTANCE, project: str = PROJECT) -> list[tuple[bytes, bytes]]:
    return [
        (b"X-Instance-ID", instance_id.encode()),
        (b"X-Tenant-ID", project.encode()),
        (b"X-Instance-ID-Signature", sign(instance_id)),
    ]


def raw_request(
    path: bytes,
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    method: bytes = b"GET",
    body: bytes = b"",
) -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1:8775"]
    lines += [name + b": " + value for name, value in headers]
    if body or method in (b"POST", b"PUT"):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Response:
    def __init__(self, raw: bytes) -> None:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.split(b"\r\n")
        self.status = int(status_line.split(b" ")[1])
        self.headers: dict[bytes, list[bytes]] = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            self.headers.setdefault(name.lower(), []).append(value.strip())
        length = int(self.headers[b"content-length"][0])
        self.body = rest[:length]
        self.rest = rest[length:]

    def header(self, name: bytes) -> bytes:
        (value,) = self.headers[name.lower()]
        return value


def make(**kwargs):
    reactor = kwargs.pop("reactor", None) or MemoryReactorClock()
    site, stats = make_site(TABLE, SECRET, reactor, **kwargs)
    return site, stats, reactor


def exchange(site, data: bytes) -> tuple[Response, StringTransport]:
    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(data)
    return Response(transport.value()), transport


def get(site, path: bytes, headers=(), method: bytes = b"GET", body: bytes = b"") -> Response:
    return exchange(site, raw_request(path, list(headers), method, body))[0]


@pytest.fixture
def site():
    return make()[0]


# --- signature and header checks -------------------------------------------------


def test_signature_test_vector_accepted():
    """Secret 'secret', id 'foo' signs to upstream's test vector, and the fake accepts it."""
    vector = b"773ba44693c7553d6ee20f61ea5d2757a9a4f4a44d2841ae4e95b52e4cd62db4"
    site, _ = make_site(TABLE, "secret", MemoryReactorClock())
    response = get(
        site,
        b"/latest/meta-data/local-ipv4",
        [
            (b"X-Instance-ID", b"foo"),
            (b"X-Tenant-ID", b"proj-b"),
            (b"X-Instance-ID-Signature", vector),
        ],
    )
    assert response.status == 200
    assert response.body == b"10.0.0.6"
    assert sign("foo", "secret") == vector


def test_root_needs_no_headers(site):
    """GET / answers the EC2 version list without any proxy header."""
    response = get(site, b"/")
    assert response.status == 200
    assert response.header(b"Content-Type") == b"text/plain; charset=UTF-8"
    assert response.body == (
        b"1.0\n2007-01-19\n2007-03-01\n2007-08-29\n2007-10-10\n2007-12-15\n"
        b"2008-02-01\n2008-09-01\n2009-04-04\nlatest"
    )


@pytest.mark.parametrize(
    "present, missing",
    [
        ([], "X-Instance-ID"),
        ([b"X-Tenant-ID", b"X-Instance-ID-Signature"], "X-Instance-ID"),
        ([b"X-Instance-ID"], "X-Instance-ID-Signature"),
        ([b"X-Instance-ID", b"X-Tenant-ID"], "X-Instance-ID-Signature"),
        ([b"X-Instance-ID", b"X-Instance-ID-Signature"], "X-Tenant-ID"),
    ],
)
def test_missing_headers_in_nova_order(site, present, missing):
    """The first missing header of X-Instance-ID, -Signature, X-Tenant-ID is reported, 400."""
    headers = [(k, v) for k, v in signed() if k in present]
    response = get(site, b"/latest/meta-data/", headers)
    assert response.status == 400
    assert response.header(b"Content-Type") == b"text/html; charset=UTF-8"
    assert response.body == (
        b"<html>\n <head>\n  <title>400 Bad Request</title>\n </head>\n <body>\n"
        b"  <h1>400 Bad Request</h1>\n  "
        + missing.encode()
        + b" header is missing from request.<br /><br />\n\n\n\n </body>\n</html>"
    )


def test_multiple_headers_rejected(site):
    """A repeated X-Instance-ID or X-Tenant-ID is a 400, after the missing-header checks."""
    twice_id = signed() + [(b"x-instance-id", INSTANCE.encode())]
    response = get(site, b"/latest/meta-data/", twice_id)
    assert response.status == 400
    assert b"Multiple X-Instance-ID headers found within request." in response.body

    twice_tenant = signed() + [(b"X-Tenant-Id", PROJECT.encode())]
    response = get(site, b"/latest/meta-data/", twice_tenant)
    assert response.status == 400
    assert b"Multiple X-Tenant-ID headers found within request." in response.body

    no_tenant = [(k, v) for k, v in twice_id if k != b"X-Tenant-ID"]
    response = get(site, b"/latest/meta-data/", no_tenant)
    assert b"X-Tenant-ID header is missing from request." in response.body


@pytest.mark.parametrize(
    "signature",
    [b"0" * 64, b"", sign(INSTANCE).upper(), sign(INSTANCE, "other-secret"), sign(INSTANCE)[:-1]],
)
def test_bad_signature_forbidden_and_not_logged(site, logged, signature):
    """A wrong, empty, upper-case or truncated signature is 403; the warning names the
    received signature and the id, never the expected one."""
    headers = [(k, signature if k == b"X-Instance-ID-Signature" else v) for k, v in signed()]
    headers.append((b"X-Forwarded-For", b"10.0.0.5"))
    response = get(site, b"/latest/meta-data/", headers)
    assert response.status == 403
    assert b"Invalid proxy request signature." in response.body
    warnings = [formatEvent(e) for e in logged if "does not match" in formatEvent(e)]
    assert warnings == [
        f"X-Instance-ID-Signature: {signature.decode()} does not match the expected "
        f"signature for id: {INSTANCE}. Request From: 10.0.0.5"
    ]
    expected = sign(INSTANCE).decode()
    assert all(expected not in formatEvent(e) and expected not in repr(e) for e in logged)


def test_tenant_mismatch_is_404(site, logged):
    """A correctly signed request whose X-Tenant-ID is not the instance's project is 404."""
    response = get(site, b"/latest/meta-data/", signed(INSTANCE, OTHER_PROJECT))
    assert response.status == 404
    assert b"<title>404 Not Found</title>" in response.body
    assert any("does not match tenant_id of instance" in formatEvent(e) for e in logged)


def test_unknown_instance_is_404(site):
    """A correctly signed request for an instance Nova does not know is 404."""
    response = get(site, b"/latest/meta-data/", signed("no-such-instance", PROJECT))
    assert response.status == 404


# --- content ------------------------------------------------------------------------


def test_empty_public_ipv4_is_empty_200(site):
    """With no floating IP, public-ipv4 is a 200 with an empty body."""
    response = get(site, b"/latest/meta-data/public-ipv4", signed())
    assert response.status == 200
    assert response.header(b"Content-Length") == b"0"
    assert response.body == b""


@pytest.mark.parametrize(
    "path", [b"/openstack/latest/user_data", b"/latest/user-data", b"/2009-04-04/user-data"]
)
def test_gzipped_user_data_served_byte_exact(site, path):
    """Gzipped user data comes back as the same gzip bytes, text/plain, both trees."""
    response = get(site, path, signed())
    assert response.status == 200
    assert response.header(b"Content-Type") == b"text/plain; charset=UTF-8"
    assert response.body == GZIPPED


@pytest.mark.parametrize("path", [b"/openstack/latest/user_data", b"/latest/user-data"])
def test_no_user_data_is_404(site, path):
    """An instance without user data gets 404 for user_data and user-data."""
    response = get(site, path, signed(OTHER, OTHER_PROJECT))
    assert response.status == 404


def test_openstack_files_content_types(site):
    """meta_data.json and vendor data are application/json, network_data.json text/plain."""
    meta = get(site, b"/openstack/2018-08-27/meta_data.json", signed())
    assert meta.header(b"Content-Type") == b"application/json"
    doc = json.loads(meta.body)
    assert doc["uuid"] == INSTANCE
    assert doc["project_id"] == PROJECT
    assert doc["public_keys"] == {"mykey": KEY}
    assert doc["hostname"] == "vm-1"
    assert doc["availability_zone"] == "az1"
    network = get(site, b"/openstack/latest/network_data.json", signed())
    assert network.header(b"Content-Type") == b"text/plain; charset=UTF-8"
    assert json.loads(network.body)["links"][0]["ethernet_mac_address"] == "fa:16:3e:00:00:05"
    vendor2 = get(site, b"/openstack/latest/vendor_data2.json", signed())
    assert vendor2.header(b"Content-Type") == b"application/json"
    assert vendor2.body == b'{"static": {}}'


def test_head_has_headers_and_no_body(site):
    """HEAD gets the GET status and Content-Length, without a body."""
    raw, transport = exchange(site, raw_request(b"/latest/meta-data/hostname", signed(), b"HEAD"))
    head, _, rest = transport.value().partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0]
    assert b"Content-Length: 4" in head
    assert rest == b""


# --- password -------------------------------------------------------------------------


def test_password_post_rules(site):
    """POST sets the password once (empty 200), larger than 1020 bytes is 400, a second
    POST is 409, GET returns it as text/html, other methods are 400."""
    path = b"/openstack/latest/password"
    empty = get(site, path, signed())
    assert (empty.status, empty.body) == (200, b"")
    assert empty.header(b"Content-Type") == b"text/html; charset=UTF-8"

    too_large = get(site, path, signed(), b"POST", b"x" * 1021)
    assert too_large.status == 400
    assert b"Request is too large." in too_large.body

    put = get(site, path, signed(), b"PUT", b"abc")
    assert put.status == 400
    assert b"GET and POST only are supported." in put.body

    ok = get(site, path, signed(), b"POST", b"p" * 1020)
    assert (ok.status, ok.body) == (200, b"")
    assert get(site, path, signed()).body == b"p" * 1020

    again = get(site, path, signed(), b"POST", b"new")
    assert again.status == 409
    assert b"<title>409 Conflict</title>" in again.body


def test_password_before_grizzly_is_404(site):
    """The password path exists only from OpenStack version 2013-04-04."""
    assert get(site, b"/openstack/2012-08-10/password", signed(), b"POST", b"x").status == 404
    assert not novatree.is_password_path("/openstack/2012-08-10/password")
    assert novatree.is_password_path("/openstack/2013-04-04/password/")


# --- stats, recording, control, knobs ------------------------------------------------------


def test_stats_and_recorded_requests():
    """Every request is counted by status and outcome and recorded with its exact
    request-target, header lines (case and order) and body."""
    site, stats, _ = make()
    get(site, b"/")
    get(site, b"/latest/meta-data/")
    get(site, b"/latest/meta-data/", signed(INSTANCE, OTHER_PROJECT))
    bad = [(k, b"0" * 64 if k == b"X-Instance-ID-Signature" else v) for k, v in signed()]
    get(site, b"/latest/meta-data/", bad)
    get(site, b"/latest/nothing", signed())
    uri = b"/openstack/latest/meta_data.json?a=%41&b"
    headers = [(b"x-forwarded-for", b"10.0.0.5")] + signed() + [(b"X-Odd-Case", b"v  v")]
    get(site, uri, headers, b"POST", b"\x00\xffbody")

    assert stats.as_json() == {
        "total": 6,
        "by_status": {"200": 2, "400": 1, "403": 1, "404": 2},
        "by_outcome": {
            "ok": 2,
            "missing_header": 1,
            "multiple_headers": 0,
            "bad_signature": 1,
            "unknown_instance": 0,
            "tenant_mismatch": 1,
            "not_found": 1,
            "password_rejected": 0,
            "override": 0,
        },
        "recorded": 6,
        "max_recorded": 1000,
        "in_service": 0,
        "queued": 0,
        "max_queued": 0,
        "processes": [
            {
                "index": 0,
                "pid": os.getpid(),
                "total": 6,
                "in_service": 0,
                "queued": 0,
                "max_queued": 0,
            }
        ],
    }
    assert stats.total == 6
    assert stats.by_status == {200: 2, 400: 1, 403: 1, 404: 2}
    assert stats.by_outcome["tenant_mismatch"] == 1 and stats.by_outcome["override"] == 0
    last = stats.requests[-1]
    assert (last.method, last.uri, last.version) == (b"POST", uri, b"HTTP/1.1")
    assert last.body == b"\x00\xffbody"
    assert last.headers == (
        (b"Host", b"127.0.0.1:8775"),
        *headers,
        (b"Content-Length", b"6"),
    )
    assert last.header_values(b"X-INSTANCE-ID") == [INSTANCE.encode()]
    assert (last.status, last.outcome) == (200, "ok")


def test_control_endpoints():
    """/_fakenova/stats and /requests answer JSON with the control header and are not
    recorded; without the header the path is an ordinary (unsigned) Nova request."""
    site, stats, _ = make()
    get(site, b"/latest/meta-data/hostname?x=%ff", signed(), b"GET")
    control = [(b"X-Fakenova-Control", b"1")]
    response = get(site, b"/_fakenova/stats", control)
    assert response.header(b"Content-Type") == b"application/json"
    assert json.loads(response.body) == stats.as_json()
    assert stats.total == 1

    recorded = json.loads(get(site, b"/_fakenova/requests", control).body)
    assert len(recorded) == 1
    assert recorded[0]["uri"] == "/latest/meta-data/hostname?x=%ff"
    assert recorded[0]["headers"][1] == ["X-Instance-ID", INSTANCE]
    assert recorded[0]["status"] == 200

    assert get(site, b"/_fakenova/stats").status == 400
    assert stats.total == 2

    assert json.loads(get(site, b"/_fakenova/reset", control, b"POST").body)["total"] == 0
    assert stats.total == 0 and not stats.requests
    assert get(site, b"/_fakenova/nothing", control).status == 404


def test_keep_alive_requests_recorded_separately():
    """Two requests on one persistent connection get two answers and two records, each
    with its own headers."""
    site, stats, _ = make()
    first = raw_request(b"/latest/meta-data/hostname", signed() + [(b"X-First", b"1")])
    second = raw_request(b"/latest/meta-data/instance-id", signed() + [(b"X-Second", b"2")])
    response, _ = exchange(site, first + second)
    assert (response.status, response.body) == (200, b"vm-1")
    following = Response(response.rest)
    assert following.status == 200 and following.body.startswith(b"i-")
    assert [r.header_values(b"x-first") for r in stats.requests] == [[b"1"], []]
    assert [r.header_values(b"x-second") for r in stats.requests] == [[], [b"2"]]


def test_recording_is_bounded():
    """Only the last max_recorded requests are kept; counters count all."""
    site, stats, _ = make(max_recorded=3)
    for index in range(5):
        get(site, b"/?n=%d" % index)
    assert stats.total == 5
    assert [r.uri for r in stats.requests] == [b"/?n=2", b"/?n=3", b"/?n=4"]


def test_status_override_and_config_endpoint():
    """status_override answers a path with the given status before any header check;
    /_fakenova/config changes it at run time."""
    overrides = {"/latest/meta-data/": 503}
    site, stats, _ = make(status_override=overrides)
    response = get(site, b"/latest/meta-data/")
    assert response.status == 503
    assert b"<title>503 Service Unavailable</title>" in response.body
    assert stats.by_outcome["override"] == 1

    overrides["/latest/meta-data/"] = 500
    assert get(site, b"/latest/meta-data/", signed()).status == 500

    control = [(b"X-Fakenova-Control", b"1")]
    body = json.dumps({"status_override": {"/openstack": 502}, "delay": 0}).encode()
    config = get(site, b"/_fakenova/config", control, b"POST", body)
    assert json.loads(config.body) == {
        "delay": 0.0,
        "delay_dist": "fixed:0.0",
        "concurrency": 0,
        "status_override": {"/openstack": 502},
    }
    assert get(site, b"/openstack").status == 502
    assert get(site, b"/latest/meta-data/", signed()).status == 200
    bad = get(site, b"/_fakenova/config", control, b"POST", b'{"delay": -1}')
    assert bad.status == 400


def test_delay_waits_for_the_clock():
    """With a delay the answer is written only when the clock reaches it."""
    site, stats, clock = make(delay=0.05)
    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(raw_request(b"/latest/meta-data/instance-id", signed()))
    assert transport.value() == b""
    assert stats.total == 1
    clock.advance(0.049)
    assert transport.value() == b""
    clock.advance(0.001)
    response = Response(transport.value())
    assert response.status == 200
    assert response.body.startswith(b"i-")


def test_delay_cancelled_when_client_goes_away():
    """A client that disconnects during the delay leaves no pending answer behind."""
    site, _, clock = make(delay=1.0)
    protocol = site.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(raw_request(b"/latest/meta-data/instance-id", signed()))
    pending = [c for c in clock.getDelayedCalls() if c.func == site.resource._finish]
    assert len(pending) == 1
    assert site.resource.stats.in_service == 1
    protocol.connectionLost(Failure(ConnectionDone()))
    assert not pending[0].active()
    assert site.resource.stats.in_service == 0
    clock.advance(2)


# --- service time, concurrency, several processes ---------------------------------------------


CONTROL = [(b"X-Fakenova-Control", b"1")]


def open_request(site, path: bytes = b"/latest/meta-data/instance-id", headers=None):
    """Send one request on a new connection; return the protocol and its transport."""
    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(raw_request(path, signed() if headers is None else headers))
    return protocol, transport


def finish_times(clock, transports, step: float = 0.25, until: float = 4.0):
    """Advance the clock by C{step} (a binary fraction, so times stay exact) and note
    how long after the start each transport got its answer (None: not within C{until})."""
    start = clock.seconds()
    times = [0.0 if t.value() else None for t in transports]
    while clock.seconds() - start < until:
        clock.advance(step)
        for index, transport in enumerate(transports):
            if times[index] is None and transport.value():
                times[index] = clock.seconds() - start
    return times


@pytest.mark.parametrize(
    "spec, kind, params",
    [
        ("fixed:0.05", "fixed", (0.05,)),
        ("fixed:0", "fixed", (0.0,)),
        ("uniform:0.01:0.02", "uniform", (0.01, 0.02)),
        ("uniform:1:1", "uniform", (1.0, 1.0)),
        ("exp:0.1", "exp", (0.1,)),
        ("lognormal:0.02:0.5", "lognormal", (0.02, 0.5)),
    ],
)
def test_service_time_specs(spec, kind, params):
    """The four specs parse, and the canonical spec parses back to the same thing."""
    parsed = ServiceTime.parse(spec)
    assert (parsed.kind, parsed.params) == (kind, params)
    assert ServiceTime.parse(parsed.spec) == parsed


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "fixed",
        "fixed:",
        "fixed:-1",
        "fixed:nan",
        "fixed:inf",
        "fixed:1:2",
        "uniform:2:1",
        "uniform:1",
        "exp:x",
        "lognormal:0:1",
        "lognormal:1",
        "gamma:1:2",
        "1.5",
    ],
)
def test_bad_service_time_specs_rejected(spec):
    with pytest.raises(ValueError):
        ServiceTime.parse(spec)


def test_distributions_with_a_fixed_seed():
    """Draws follow the named distribution: uniform stays in [A, B] and spreads over it,
    the exponential's mean is MEAN, the lognormal's median is MEDIAN and the standard
    deviation of its log is SIGMA; a fixed time draws nothing."""
    n = 20000
    rng = random.Random(42)
    uniform = [ServiceTime.parse("uniform:0.01:0.03").draw(rng) for _ in range(n)]
    assert 0.01 <= min(uniform) < 0.0101 and 0.0299 < max(uniform) <= 0.03
    assert statistics.fmean(uniform) == pytest.approx(0.02, rel=0.02)
    exp = [ServiceTime.parse("exp:0.05").draw(rng) for _ in range(n)]
    assert statistics.fmean(exp) == pytest.approx(0.05, rel=0.03)
    assert statistics.median(exp) == pytest.approx(0.05 * math.log(2), rel=0.05)
    lognormal = [ServiceTime.parse("lognormal:0.02:0.5").draw(rng) for _ in range(n)]
    assert statistics.median(lognormal) == pytest.approx(0.02, rel=0.03)
    assert statistics.pstdev(math.log(x) for x in lognormal) == pytest.approx(0.5, rel=0.03)
    assert ServiceTime.parse("exp:0").draw(rng) == 0.0

    state = rng.getstate()
    assert ServiceTime.parse("fixed:0.25").draw(rng) == 0.25
    assert rng.getstate() == state


def test_delay_dist_drawn_per_request_with_the_seed():
    """Each request waits its own draw from random.Random(seed), after the header checks:
    the answer comes exactly when the clock reaches it."""
    spec = ServiceTime.parse("uniform:0.1:0.9")
    site, stats, clock = make(service_time=spec, seed=1234)
    expected = random.Random(1234)
    for _ in range(3):
        start = clock.seconds()
        wait = expected.uniform(0.1, 0.9)
        _, transport = open_request(site)
        clock.advance(wait - 1e-6)
        assert transport.value() == b""
        assert stats.in_service == 1
        clock.advance(2e-6)
        assert Response(transport.value()).status == 200
        assert clock.seconds() - start == pytest.approx(wait, abs=2e-6)
    assert stats.in_service == 0


def test_rejected_requests_also_wait():
    """The service time applies to every answer (a 403 too), not to control requests."""
    site, _, clock = make(delay=0.5)
    bad = [(k, b"0" * 64 if k == b"X-Instance-ID-Signature" else v) for k, v in signed()]
    _, rejected = open_request(site, headers=bad)
    _, control = open_request(site, b"/_fakenova/stats", CONTROL)
    assert rejected.value() == b"" and Response(control.value()).status == 200
    clock.advance(0.5)
    assert Response(rejected.value()).status == 403


def test_concurrency_two_serves_four_in_two_rounds():
    """With concurrency 2 and a 1 s delay, 4 requests finish at t=1, 1, 2, 2; the two
    waiting show as queued."""
    site, stats, clock = make(delay=1.0, concurrency=2)
    transports = [open_request(site)[1] for _ in range(4)]
    assert (stats.in_service, stats.queued, stats.max_queued) == (2, 2, 2)
    control = json.loads(get(site, b"/_fakenova/stats", CONTROL).body)
    assert (control["in_service"], control["queued"], control["max_queued"]) == (2, 2, 2)
    assert finish_times(clock, transports, until=1.0) == [1.0, 1.0, None, None]
    assert (stats.in_service, stats.queued) == (2, 0)
    assert finish_times(clock, transports[2:], until=1.0) == [1.0, 1.0]  # t=2
    assert clock.seconds() == 2.0
    assert (stats.in_service, stats.queued, stats.max_queued) == (0, 0, 2)
    assert all(Response(t.value()).status == 200 for t in transports)


def test_concurrency_queue_is_fifo():
    """One worker: requests are answered in arrival order, one delay apart."""
    site, _, clock = make(delay=1.0, concurrency=1)
    transports = [open_request(site, b"/latest/meta-data/hostname?n=%d" % n)[1] for n in range(4)]
    assert finish_times(clock, transports) == [1.0, 2.0, 3.0, 4.0]


def test_client_leaving_frees_its_place():
    """A queued client that disconnects leaves the queue; one in service frees its
    worker for the next in line at once."""
    site, stats, clock = make(delay=1.0, concurrency=1)
    first, t1 = open_request(site)
    second, t2 = open_request(site)
    _, t3 = open_request(site)
    assert (stats.in_service, stats.queued) == (1, 2)
    second.connectionLost(Failure(ConnectionDone()))
    assert (stats.in_service, stats.queued) == (1, 1)
    clock.advance(0.5)
    first.connectionLost(Failure(ConnectionDone()))
    assert (stats.in_service, stats.queued) == (1, 0)  # the third started at t=0.5
    clock.advance(0.75)
    assert t3.value() == b""
    clock.advance(0.25)
    assert Response(t3.value()).status == 200
    assert t1.value() == b"" and t2.value() == b""
    assert (stats.in_service, stats.queued, stats.max_queued) == (0, 0, 2)


def test_unlimited_concurrency_serves_all_at_once():
    site, stats, clock = make(delay=1.0)
    transports = [open_request(site)[1] for _ in range(5)]
    assert (stats.in_service, stats.queued) == (5, 0)
    assert finish_times(clock, transports) == [1.0] * 5


def test_config_endpoint_service_time_and_concurrency():
    """POST /_fakenova/config sets delay_dist or delay, and concurrency; a higher limit
    lets queued requests in at once; bad values change nothing."""
    site, stats, clock = make(delay=1.0, concurrency=1)
    config = get(
        site,
        b"/_fakenova/config",
        CONTROL,
        b"POST",
        json.dumps({"delay_dist": "exp:0.5", "concurrency": 3}).encode(),
    )
    assert json.loads(config.body) == {
        "delay": None,
        "delay_dist": "exp:0.5",
        "concurrency": 3,
        "status_override": {},
    }

    def post(value):
        return get(
            site,
            b"/_fakenova/config",
            CONTROL,
            b"POST",  # noqa: E731
            json.dumps(value).encode(),
        )

    for bad in [
        {"delay_dist": "gamma:1"},
        {"delay_dist": 5},
        {"delay": 1, "delay_dist": "exp:1"},
        {"concurrency": -1},
        {"concurrency": 1.5},
        {"concurrency": True},
        {"delay": "1"},
        {"nonsense": 1},
    ]:
        response = post(bad)
        assert response.status == 400, bad
        assert "error" in json.loads(response.body)
    assert json.loads(get(site, b"/_fakenova/config", CONTROL).body)["delay_dist"] == "exp:0.5"

    assert post({"delay": 1, "concurrency": 1}).status == 200
    transports = [open_request(site)[1] for _ in range(3)]
    assert (stats.in_service, stats.queued) == (1, 2)
    assert post({"concurrency": 0}).status == 200
    assert (stats.in_service, stats.queued) == (3, 0)
    assert finish_times(clock, transports) == [1.0, 1.0, 1.0]


def test_pid_header_on_every_answer(site):
    """Answers, errors and control answers name the process that answered."""
    pid = str(os.getpid()).encode()
    assert get(site, b"/latest/meta-data/hostname", signed()).header(PID_HEADER) == pid
    assert get(site, b"/latest/meta-data/").header(PID_HEADER) == pid
    assert get(site, b"/_fakenova/stats", CONTROL).header(PID_HEADER) == pid


def test_concurrency_share():
    """A total limit splits over the processes as evenly as possible."""
    assert [concurrency_share(7, 3, i) for i in range(3)] == [3, 2, 2]
    assert [concurrency_share(0, 3, i) for i in range(3)] == [0, 0, 0]
    assert concurrency_share(1, 1, 0) == 1
    with pytest.raises(ValueError, match="below the number of processes"):
        concurrency_share(2, 3, 0)


def two_processes(**kwargs):
    """Two fake Novas on one shared board, as two processes of --processes 2 are."""
    board = SharedBoard.create(2, shared=True)
    clock = MemoryReactorClock()
    first, first_stats = make_site(TABLE, SECRET, clock, board=board, index=0, **kwargs)
    second, second_stats = make_site(TABLE, SECRET, clock, board=board, index=1, **kwargs)
    return (first, first_stats), (second, second_stats), clock


def test_stats_summed_over_processes():
    """/_fakenova/stats in any process reports the sum of all; each process keeps its
    own recorded requests."""
    (a, a_stats), (b, b_stats), _ = two_processes()
    get(a, b"/latest/meta-data/hostname", signed())
    get(a, b"/latest/meta-data/")
    for _ in range(3):
        get(b, b"/latest/meta-data/hostname", signed())
    for site in (a, b):
        stats = json.loads(get(site, b"/_fakenova/stats", CONTROL).body)
        assert stats["total"] == 5
        assert stats["by_status"] == {"200": 4, "400": 1}
        assert stats["by_outcome"]["ok"] == 4 and stats["by_outcome"]["missing_header"] == 1
        assert stats["recorded"] == 5
        assert [(p["index"], p["total"]) for p in stats["processes"]] == [(0, 2), (1, 3)]
    assert (a_stats.total, b_stats.total) == (2, 3)
    assert len(json.loads(get(a, b"/_fakenova/requests", CONTROL).body)) == 2
    assert len(json.loads(get(b, b"/_fakenova/requests", CONTROL).body)) == 3


def test_reset_resets_every_process():
    """A reset in one process zeroes the counters and recorded requests of all, at once
    in the sums and in the other process's own view."""
    (a, a_stats), (b, b_stats), _ = two_processes()
    get(a, b"/")
    get(b, b"/")
    get(b, b"/")
    reset = json.loads(get(a, b"/_fakenova/reset", CONTROL, b"POST").body)
    assert reset["total"] == 0 and reset["recorded"] == 0
    assert [p["total"] for p in reset["processes"]] == [0, 0]
    assert json.loads(get(b, b"/_fakenova/stats", CONTROL).body)["total"] == 0
    assert b_stats.total == 0 and not b_stats.requests
    assert json.loads(get(b, b"/_fakenova/requests", CONTROL).body) == []
    get(b, b"/")
    assert json.loads(get(a, b"/_fakenova/stats", CONTROL).body)["total"] == 1
    assert a_stats.total == 0 and b_stats.total == 1


def test_config_reaches_every_process():
    """A configuration POSTed to one process applies in the other before its next answer."""
    (a, _), (b, b_stats), clock = two_processes(concurrency=2)
    body = json.dumps({"status_override": {"/x": 418}, "delay": 1, "concurrency": 4}).encode()
    assert get(a, b"/_fakenova/config", CONTROL, b"POST", body).status == 200
    _, overridden = open_request(b, b"/x")
    _, waiting = open_request(b)
    assert overridden.value() == waiting.value() == b""  # the delay applies...
    clock.advance(1)
    assert Response(overridden.value()).status == 418  # ...and the override
    assert Response(waiting.value()).status == 200
    assert json.loads(get(b, b"/_fakenova/config", CONTROL).body) == {
        "delay": 1.0,
        "delay_dist": "fixed:1.0",
        "concurrency": 4,
        "status_override": {"/x": 418},
    }
    # Concurrency 4 over two processes: process 1 serves two at once.
    transports = [open_request(b)[1] for _ in range(3)]
    assert (b_stats.in_service, b_stats.queued) == (2, 1)
    assert finish_times(clock, transports) == [1.0, 1.0, 2.0]
    bad = json.dumps({"concurrency": 1}).encode()
    assert get(a, b"/_fakenova/config", CONTROL, b"POST", bad).status == 400


def test_queue_gauges_summed_over_processes():
    (a, _), (b, _), clock = two_processes(delay=1.0, concurrency=2)
    for site, n in ((a, 3), (b, 4)):
        for _ in range(n):
            open_request(site)
    stats = json.loads(get(a, b"/_fakenova/stats", CONTROL).body)
    assert (stats["in_service"], stats["queued"], stats["max_queued"]) == (2, 5, 5)
    assert [p["queued"] for p in stats["processes"]] == [2, 3]
    finish_times(clock, [], until=10)  # each process serves one at a time: done by t=4
    stats = json.loads(get(b, b"/_fakenova/stats", CONTROL).body)
    assert (stats["in_service"], stats["queued"], stats["max_queued"]) == (0, 0, 5)
    stats = json.loads(get(b, b"/_fakenova/reset", CONTROL, b"POST").body)
    assert stats["max_queued"] == 0


def test_seed_per_process():
    """Process I draws from random.Random(seed + I)."""
    (a, _), (b, _), _ = two_processes(seed=10)
    assert a.resource.rng.random() == random.Random(10).random()
    assert b.resource.rng.random() == random.Random(11).random()


def test_board_attached_from_a_descriptor():
    """A child maps the parent's board from the descriptor it inherits and sees the
    same slots; the configuration area is bounded."""
    board = SharedBoard.create(2, shared=True)
    child = SharedBoard.attach(os.dup(board.fd))
    assert child.processes == 2
    stats = NovaStats(board=child, index=1)
    stats.record(RecordedRequest(b"GET", b"/", b"HTTP/1.1", (), b"", 200, "ok"))
    assert NovaStats(board=board, index=0).as_json()["total"] == 1
    assert board.publish_config(b'{"a": 1}') == 1
    assert child.read_config() == (1, b'{"a": 1}')
    with pytest.raises(ValueError, match="larger"):
        board.publish_config(b"x" * (1 << 16 + 1))
    with pytest.raises(ValueError):
        NovaStats(board=board, index=2)
    blank = os.memfd_create("blank")
    try:
        os.ftruncate(blank, 4096)
        with pytest.raises(ValueError, match="not a fakenova board"):
            SharedBoard.attach(blank)
    finally:
        os.close(blank)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--delay", "1", "--delay-dist", "exp:1"], "not allowed with"),
        (["--delay-dist", "normal:1"], "expected fixed:S"),
        (["--delay", "-1"], "must not be negative"),
        (["--processes", "0"], "at least 1"),
        (["--concurrency", "-1"], "must not be negative"),
        (["--processes", "3", "--concurrency", "2"], "below the number of processes"),
        (["--worker-index", "1"], "--worker-index"),
    ],
)
def test_bad_command_lines(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli._parse_args(["--table", "t.json", "--secret", "s", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_command_line_service_time():
    parse = lambda *argv: cli._parse_args(["--table", "t", "--secret", "s", *argv])  # noqa: E731
    args = parse()
    assert (args.service_time.spec, args.concurrency, args.processes, args.seed) == (
        "fixed:0.0",
        0,
        1,
        None,
    )
    assert parse("--delay", "0.25").service_time.spec == "fixed:0.25"
    args = parse(
        "--delay-dist",
        "lognormal:0.02:0.4",
        "--seed",
        "5",
        "--concurrency",
        "8",
        "--processes",
        "3",
    )
    assert (args.service_time.spec, args.seed, args.concurrency, args.processes) == (
        "lognormal:0.02:0.4",
        5,
        8,
        3,
    )
    assert args.argv[-2:] == ["--processes", "3"]


# --- the tree -------------------------------------------------------------------------------


RECORD = InstanceRecord(
    instance_id=INSTANCE,
    project_id=PROJECT,
    hostname="vm-1",
    local_ipv4="10.0.0.5",
    user_data=None,
    public_keys={"mykey": KEY},
    floating_ip="",
    availability_zone="nova",
)


def crawl(fetch: Callable[[str], tuple[int, bytes]], base: str) -> tuple[dict, list[str]]:
    """Run cloud-init's EC2 crawl (L{bench.load.cloudinit}) over C{fetch}; return the tree and
    the paths requested."""
    requested: list[str] = []
    walk = cloudinit.ec2_crawl(base)
    path = next(walk)
    while True:
        requested.append(path)
        status, body = fetch(path)
        assert status == 200, (path, status)
        try:
            path = walk.send((status, body))
        except StopIteration as done:
            return done.value, requested


EXPECTED_CRAWL = [
    "meta-data/",
    "meta-data/block-device-mapping/",
    "meta-data/block-device-mapping/ami",
    "meta-data/block-device-mapping/root",
    "meta-data/placement/",
    "meta-data/placement/availability-zone",
    "meta-data/public-keys/",
    "meta-data/public-keys/0/openssh-key",
    "meta-data/ami-id",
    "meta-data/ami-launch-index",
    "meta-data/ami-manifest-path",
    "meta-data/hostname",
    "meta-data/instance-action",
    "meta-data/instance-id",
    "meta-data/instance-type",
    "meta-data/local-hostname",
    "meta-data/local-ipv4",
    "meta-data/public-hostname",
    "meta-data/public-ipv4",
    "meta-data/reservation-id",
    "meta-data/security-groups",
]


def test_cloud_init_ec2_crawl_is_21_requests():
    """cloud-init's crawl of /latest/meta-data/ for an instance with a keypair and no
    ephemeral disk is 21 requests (docs/upstream.md, "cloud-init's requests"), all 200."""

    def fetch(path: str) -> tuple[int, bytes]:
        status, _, body = novatree.lookup(RECORD, path)
        return status, body

    tree, requested = crawl(fetch, "/latest/meta-data/")
    assert len(requested) == 21
    # Depth first: each child listing and its leaves, then the 13 leaves in listing order.
    assert requested == ["/latest/" + p for p in EXPECTED_CRAWL]
    assert tree["public-keys"] == {"mykey": KEY}
    assert tree["placement"] == {"availability-zone": "nova"}
    assert tree["local-ipv4"] == "10.0.0.5"
    assert tree["public-ipv4"] == ""
    assert tree["instance-action"] == "none"


def test_cloud_init_ec2_crawl_over_http_without_keypair(site):
    """Through the fake's HTTP front, signed: an instance with no keypair crawls in 19."""

    def fetch(path: str) -> tuple[int, bytes]:
        response = get(site, path.encode(), signed(OTHER, OTHER_PROJECT))
        return response.status, response.body

    tree, requested = crawl(fetch, "/2009-04-04/meta-data/")
    assert len(requested) == 19
    assert "public-keys" not in tree
    assert tree["hostname"] == "server-foo"


def test_versions_and_listings():
    """Version lists, the per-version OpenStack listing and unknown versions."""
    with_ud = novatree.InstanceRecord(INSTANCE, PROJECT, "vm-1", user_data=b"x")
    versions = novatree.lookup(RECORD, "/openstack")[2].split(b"\n")
    assert versions[-3:] == [b"2020-10-14", b"2025-04-04", b"latest"]
    assert novatree.lookup(with_ud, "/openstack/latest/")[2] == (
        b"meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json\n"
        b"vendor_data2.json"
    )
    assert novatree.lookup(RECORD, "/openstack/2012-08-10")[2] == b"meta_data.json"
    assert novatree.lookup(RECORD, "/openstack/2012-08-10/vendor_data.json")[0] == 404
    assert novatree.lookup(RECORD, "/openstack/1999-01-01/meta_data.json")[0] == 404
    assert novatree.lookup(RECORD, "/2021-03-23/meta-data/instance-id")[0] == 404
    assert novatree.lookup(RECORD, "/latest")[2] == b"meta-data/"
    assert novatree.lookup(with_ud, "/latest")[2] == b"meta-data/\nuser-data"
    old = novatree.lookup(RECORD, "/1.0/meta-data/")[2].split(b"\n")
    assert b"local-hostname" not in old and b"placement/" not in old and b"hostname" in old
    assert novatree.lookup(RECORD, "/latest/meta-data/public-keys/")[2] == b"0=mykey"
    assert novatree.lookup(RECORD, "/latest/meta-data/public-keys/0/")[2] == b"openssh-key"
    assert novatree.lookup(RECORD, "/latest/meta-data/block-device-mapping")[2] == b"ami\nroot"


@pytest.mark.parametrize(
    "path",
    [
        "/latest/meta-data/hostname",
        "/latest/meta-data/hostname/",
        "/ec2/latest/meta-data/hostname",
        "latest/meta-data/hostname",
        "/latest/./meta-data//hostname",
        "/latest/x/../meta-data/hostname",
    ],
)
def test_path_normalisation(path):
    """Trailing slashes, missing leading slash, /ec2 prefix, dots and double slashes
    normalise as posixpath.normpath does in Nova."""
    assert novatree.lookup(RECORD, path) == (200, novatree.TEXT_PLAIN, b"vm-1")


def test_meta_data_json_is_deterministic_and_versioned():
    """meta_data.json is the same bytes every time; newer fields appear by version."""
    first = novatree.lookup(RECORD, "/openstack/latest/meta_data.json")[2]
    assert first == novatree.lookup(RECORD, "/openstack/latest/meta_data.json")[2]
    old = json.loads(novatree.lookup(RECORD, "/openstack/2012-08-10/meta_data.json")[2])
    assert "random_seed" not in old and "project_id" not in old
    new = json.loads(first)
    assert len(base64.b64decode(new["random_seed"])) == 512
    assert new["keys"] == [{"name": "mykey", "type": "ssh", "data": KEY}]
    assert new["launch_index"] == 0 and new["name"] == "vm-1"


# --- the table --------------------------------------------------------------------------------


def test_instances_from_table():
    """Router ports are no instances; an instance without an entry gets defaults;
    local-ipv4 is the first IPv4, the project the port's."""
    records = instances_from_table(TABLE)
    assert sorted(records) == sorted([INSTANCE, OTHER])
    vm = records[INSTANCE]
    assert (vm.project_id, vm.local_ipv4, vm.hostname) == (PROJECT, "10.0.0.5", "vm-1")
    assert vm.user_data == GZIPPED
    foo = records[OTHER]
    assert (foo.hostname, foo.user_data, foo.floating_ip) == ("server-foo", None, "")
    assert dict(foo.public_keys) == {}


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"hostnme": "x"}, "unknown keys"),
        ({"user_data": "a", "user_data_base64": "YQ=="}, "more than one"),
        ({"user_data_gzip_base64": "YQ=="}, "not gzip"),
        ({"user_data_base64": "***"}, "not base64"),
    ],
)
def test_bad_table_entries_rejected(entry, message):
    """Misspelt keys and bad user data fail loudly."""
    table = dict(TABLE, instances={INSTANCE: entry})
    with pytest.raises(ValueError, match=message):
        instances_from_table(table)


def test_instance_without_port_needs_project():
    """An instances entry with no port needs its own project_id; a port without an id
    still gets a network_data link."""
    with pytest.raises(ValueError, match="no port and no project_id"):
        instances_from_table({"ports": [], "instances": {"x": {}}})
    port = {
        "network_id": "n",
        "mac_address": "fa:16:3e:00:00:09",
        "fixed_ips": [],
        "device_id": "y",
        "project_id": "q",
    }
    record = instances_from_table({"ports": [port]})["y"]
    assert record.network_data["links"][0]["vif_id"] == "port-0"
    table = {"instances": {"x": {"project_id": "p", "user_data": "hi"}}}
    records = instances_from_table(table)
    assert records["x"].user_data == b"hi" and records["x"].local_ipv4 == ""
