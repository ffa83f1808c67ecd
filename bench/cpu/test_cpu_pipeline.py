"""CPU per request of the whole request path in memory: bytes in through
L{MetadataFactory} on a C{StringTransport}, the pipeline with an in-memory port table
(behind the agent's coalescing cache) and an in-memory Nova double, answer bytes out
(L{bench.cpu.inmemory}).

    make bench-cpu                     # or: .venv/bin/python -m pytest bench/cpu --benchmark-only

The requests go round the fleet's 200 instances over 20 routers, one connection each,
and every answer is checked: a benchmark of a broken path fails instead of measuring.
"""

from __future__ import annotations

import itertools

import pytest

from bench.cpu.inmemory import InMemoryStack
from bench.load.targets import request_bytes
from bench.load.unixhttp import parse_answer


@pytest.fixture(scope="module")
def stack():
    return InMemoryStack.build(200, 20)


def _round_robin(stack, requests):
    cycle = itertools.cycle(requests)
    answer = stack.answer
    return lambda: answer(next(cycle))


def _ok(data: bytes) -> None:
    answer = parse_answer(data)
    assert answer.status == 200 and answer.header("Connection") == "close", answer
    assert answer.body.startswith(b'{"uuid"')


def test_request_through_shared_socket(benchmark, stack):
    """The shared socket: the namespace comes from the header."""
    _ok(benchmark(_round_robin(stack, stack.requests)))


def test_request_through_namespace_socket(benchmark, stack):
    """A per-namespace socket (its own namespace, the header ignored)."""
    own = InMemoryStack(stack.fleet, namespace=stack.fleet.instances[0].namespace)
    requests = [
        r
        for r, i in zip(own.requests, own.fleet.instances, strict=False)
        if i.namespace == own.fleet.instances[0].namespace
    ]
    _ok(benchmark(_round_robin(own, requests)))


def test_request_with_cached_lookups(benchmark, stack):
    """[cache] enabled: lookups answered from the cache after the first."""
    cached = InMemoryStack(stack.fleet, cache_enabled=True)
    _ok(benchmark(_round_robin(cached, cached.requests)))


def test_request_in_two_segments(benchmark, stack):
    """The request's head split over two reads."""
    data = stack.requests[0]
    _ok(benchmark(stack.answer, data, 2))


def test_unknown_caller_gets_404(benchmark, stack):
    """No port for the address: the agent's own 404 (the error path, no Nova)."""
    instance = stack.fleet.instances[0]
    data = request_bytes(
        "/openstack",
        (
            f"{instance.namespace.kind.header_name}: "
            f"{instance.namespace.id}\r\n"
            "X-Forwarded-For: 192.0.2.1\r\n"
        ).encode(),
        keepalive=False,
    )
    before = stack.nova.count
    answer = parse_answer(benchmark(stack.answer, data))
    assert answer.status == 404 and b"Instance was not found" in answer.body
    assert stack.nova.count == before
