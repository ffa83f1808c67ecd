"""Property tests over the parser, the server shell and the pipeline together: no input
crashes the agent, leaves a connection without an answer, or gets another instance's
metadata."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from bench.load.unixhttp import parse_answer
from metaproxy.guard.policy import RequestPolicy
from metaproxy.guard.ratelimit import RateLimiter, Window
from metaproxy.http.server import Limits, MetadataFactory
from metaproxy.pipeline import Pipeline
from metaproxy.resolve.resolver import InstanceResolver
from metaproxy.testing import FakeNova, InMemoryPortBackend, echo_instance_id
from tests.unit.test_pipeline import SECRET, TABLE

#: (router, address) -> the instance the table gives it (tests/unit/test_pipeline.TABLE)
OWNER = {
    (b"r1", b"10.0.0.5"): b"vm-blue",
    (b"r2", b"10.0.0.5"): b"vm-green",
    (b"blue", b"10.0.0.5"): b"vm-blue",
    (b"green", b"10.0.0.5"): b"vm-green",
    # link-local: the MAC its EUI-64 encodes, 52:54:00:de:5b:bf, is vm-green's
    (b"r2", b"fe80::5054:ff:fede:5bbf"): b"vm-green",
    (b"green", b"fe80::5054:ff:fede:5bbf"): b"vm-green",
}


def serve(chunks, policy=None):
    """Feed C{chunks} to one connection; time it out if it is still waiting. Returns the
    bytes written and whether the connection was closed."""
    clock = Clock()
    pipeline = Pipeline(
        InstanceResolver(InMemoryPortBackend(TABLE)),
        FakeNova(reply=echo_instance_id),
        SECRET,
        policy=policy,
    )
    limits = Limits(max_header_bytes=1024, max_headers=16, max_body_bytes=256, request_timeout=5)
    factory = MetadataFactory(pipeline, None, limits, clock)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    for chunk in chunks:
        protocol.dataReceived(chunk)
        if transport.disconnecting:
            break
    clock.advance(5)  # the request timeout
    return transport.value(), transport.disconnecting


def check_answer(written, started, head=False):
    """A closed connection carries one well-formed answer, unless nothing was sent."""
    if not written:
        assert not started
        return None
    if head and written.startswith(b"HTTP/1.1 200 "):
        # a HEAD answer tells the length of the GET body and has none
        assert written.endswith(b"\r\n\r\n") and b"\nContent-Length: " in written
        written = written.split(b"\r\nContent-Length: ")[0] + b"\r\nContent-Length: 0\r\n\r\n"
    answer = parse_answer(written)
    assert 200 <= answer.status < 600 and not answer.bare_lf
    assert written.count(b"HTTP/1.1 ") >= 1
    return answer


chunks = st.lists(st.binary(max_size=64), max_size=20)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(chunks)
def test_arbitrary_bytes_always_get_an_answer_and_a_close(no_logged_errors, data):
    written, closed = serve(data)
    assert closed
    check_answer(written, any(data))


def expected_owner(lines, enforce):
    """The instance a 200 must be for, worked out from the header lines the test wrote
    (not by the parser under test); C{None} when no instance may be served.

    The namespace proxy's headers come last (haproxy appends): the namespace is the last
    value of the one namespace header kind present, the address the last element of the
    last X-Forwarded-For line. Under C{enforce} a guest's own X-Forwarded-For (a second
    line, or a list in one) is refused.
    """
    fields = [line.split(b": ", 1) for line in lines]
    namespaces = {name: value for name, value in fields if name in NAMESPACE_HEADERS}
    forwarded = [value for name, value in fields if name == b"X-Forwarded-For"]
    if len(namespaces) != 1 or not forwarded:
        return None
    if enforce and (len(forwarded) > 1 or b"," in forwarded[0]):
        return None
    address = forwarded[-1].rsplit(b",", 1)[-1].strip().removeprefix(b"::ffff:")
    return OWNER.get((next(iter(namespaces.values())), address))


NAMESPACE_HEADERS = (b"X-Neutron-Router-ID", b"X-Neutron-Network-ID", b"X-OVN-Network-ID")
#: targets every method reaches Nova with unchanged
PLAIN_TARGETS = (b"/", b"/openstack/latest/meta_data.json")


def test_the_oracle_agrees_with_hand_worked_cases():
    """The model above, on cases worked out by hand."""
    assert expected_owner([b"X-Forwarded-For: 10.0.0.5", b"X-Neutron-Router-ID: r2"], True) == (
        b"vm-green"
    )
    guest_first = [b"X-Forwarded-For: 1.2.3.4", b"X-Forwarded-For: 10.0.0.5"]
    assert expected_owner([*guest_first, b"X-Neutron-Router-ID: r1"], False) == b"vm-blue"
    assert expected_owner([*guest_first, b"X-Neutron-Router-ID: r1"], True) is None
    assert expected_owner(
        [b"X-Forwarded-For: 10.0.0.5, 10.0.0.5", b"X-OVN-Network-ID: green"], False
    ) == (b"vm-green")
    assert expected_owner(
        [b"X-Forwarded-For: ::ffff:10.0.0.5", b"X-Neutron-Network-ID: blue"], False
    ) == (b"vm-blue")
    both = [b"X-Forwarded-For: 10.0.0.5", b"X-Neutron-Router-ID: r1", b"X-OVN-Network-ID: green"]
    assert expected_owner(both, False) is None
    two_routers = [
        b"X-Forwarded-For: 10.0.0.5",
        b"X-Neutron-Router-ID: r1",
        b"X-Neutron-Router-ID: r2",
    ]
    assert expected_owner(two_routers, False) == b"vm-green"
    assert expected_owner([b"X-Neutron-Router-ID: r1"], False) is None
    assert expected_owner([b"X-Forwarded-For: 10.0.0.6", b"X-Neutron-Router-ID: r1"], False) is None


fields = st.sampled_from(
    [
        b"X-Forwarded-For: 10.0.0.5",
        b"X-Forwarded-For: 10.0.0.6",
        b"X-Forwarded-For: 1.2.3.4",
        b"X-Forwarded-For: 10.0.0.5, 10.0.0.5",
        b"X-Forwarded-For: ::ffff:10.0.0.5",
        b"X-Forwarded-For: fe80::5054:ff:fede:5bbf",
        b"X-Forwarded-For: garbage",
        b"X-Neutron-Router-ID: r1",
        b"X-Neutron-Router-ID: r2",
        b"X-Neutron-Network-ID: blue",
        b"X-OVN-Network-ID: green",
        b"X-Neutron-Router-ID: ../r1",
        b"Content-Length: 3",
        b"Transfer-Encoding: chunked",
        b"Host: 169.254.169.254",
        b"X-Instance-ID: vm-green",
        b"X-Instance-ID-Signature: 00",
        b"X-Tenant-ID: proj-2",
        b"Connection: keep-alive",
    ]
)
#: what the namespace proxy appends after the guest's lines (or nothing: a request that
#: did not come through it), so that many examples are requests that must be served
proxy_fields = st.one_of(
    st.just(()),
    st.tuples(
        st.sampled_from(
            [
                b"X-Neutron-Router-ID: r1",
                b"X-Neutron-Router-ID: r2",
                b"X-Neutron-Network-ID: blue",
                b"X-OVN-Network-ID: green",
            ]
        ),
        st.sampled_from(
            [
                b"X-Forwarded-For: 10.0.0.5",
                b"X-Forwarded-For: fe80::5054:ff:fede:5bbf",
                b"X-Forwarded-For: 10.0.0.6",
            ]
        ),
    ),
)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"G\x00T"]),
    st.sampled_from(
        [
            b"/",
            b"/openstack/latest/meta_data.json",
            b"/a?b#c",
            b"/%00",
            b"//x/../y",
            b"http://169.254.169.254/latest",
        ]
    ),
    st.lists(fields, max_size=6),
    proxy_fields,
    st.binary(max_size=8),
    st.integers(1, 40),
    st.booleans(),
)
def test_requests_never_get_another_instances_data(
    no_logged_errors, method, target, guest_lines, proxy_lines, body, split, enforce
):
    """Whatever the guest adds (its own X-Forwarded-For, namespace or instance headers,
    odd framing), a 200 carries exactly the metadata of the instance that owns
    (router, haproxy's last X-Forwarded-For) in the table, and nothing else; and a plain
    request from an instance the table knows is served."""
    lines = [*guest_lines, *proxy_lines]
    raw = b"\r\n".join([method + b" " + target + b" HTTP/1.1"] + lines) + b"\r\n\r\n" + body
    policy = RequestPolicy(
        Clock(),
        forwarded_for="enforce" if enforce else "log",
        limiter=RateLimiter(Clock(), Window(10, 5), Window(10, 5)),
    )
    written, closed = serve([raw[i : i + split] for i in range(0, len(raw), split)], policy)
    assert closed
    answer = check_answer(written, True, head=method == b"HEAD")
    owner = expected_owner(lines, enforce)
    plain = (
        method in (b"GET", b"HEAD")
        and target in PLAIN_TARGETS
        and not any(line.startswith((b"Content-Length:", b"Transfer-Encoding:")) for line in lines)
    )
    if owner is not None and plain:
        assert answer.status == 200
    if answer.status != 200:
        return
    assert owner is not None
    if method == b"HEAD":
        assert answer.body == b""
        return
    assert answer.body == b"metadata of " + owner
