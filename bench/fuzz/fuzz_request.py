"""Fuzz the request path with atheris: raw bytes, split where the fuzzer says, through
the server shell, the parser and the pipeline (in-memory lookup table and a Nova that
echoes the instance it was asked about).

    .venv/bin/pip install atheris      # not a dependency: only for this target
    .venv/bin/python -m bench.fuzz.fuzz_request -max_total_time=60

A crash is a failed check: an exception out of the agent, a connection left without an
answer, an answer that is not well-formed HTTP, or a 200 carrying another instance's
metadata. libFuzzer writes the input that caused it to ./crash-*.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from metaproxy.guard.policy import RequestPolicy
    from metaproxy.http.request import RequestParser
    from metaproxy.http.server import Limits, MetadataFactory
    from metaproxy.pipeline import Pipeline

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from bench.load.unixhttp import parse_answer
from metaproxy.resolve.resolver import InstanceResolver
from metaproxy.resolve.table import parse_table
from metaproxy.testing import FakeNova, InMemoryPortBackend, echo_instance_id

TABLE = parse_table(
    {
        "routers": {"r1": ["blue"], "r2": ["green"]},
        "ports": [
            {
                "id": "a",
                "network_id": "blue",
                "mac_address": "fa:16:3e:00:00:01",
                "fixed_ips": ["10.0.0.5"],
                "device_id": "vm-blue",
                "project_id": "p1",
            },
            {
                "id": "b",
                "network_id": "green",
                "mac_address": "52:54:00:de:5b:bf",
                "fixed_ips": ["10.0.0.5"],
                "device_id": "vm-green",
                "project_id": "p2",
            },
        ],
    }
)
OWNER = {"r1": b"vm-blue", "blue": b"vm-blue", "r2": b"vm-green", "green": b"vm-green"}


errors: list[object] = []
globalLogPublisher.addObserver(
    lambda e: errors.append(e) if e.get("log_failure") is not None else None
)


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    split = fdp.ConsumeIntInRange(1, 64)
    raw = fdp.ConsumeBytes(fdp.remaining_bytes())
    clock = Clock()
    pipeline = Pipeline(
        InstanceResolver(InMemoryPortBackend(TABLE)),
        FakeNova(reply=echo_instance_id),
        b"secret",
        policy=RequestPolicy(clock, forwarded_for="log"),
    )
    factory = MetadataFactory(
        pipeline,
        None,
        Limits(max_header_bytes=2048, max_headers=32, max_body_bytes=512, request_timeout=5),
        clock,
    )
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    for i in range(0, len(raw), split):
        protocol.dataReceived(raw[i : i + split])
        if transport.disconnecting:
            break
    clock.advance(5)
    if errors:
        raise AssertionError(f"logged an unexpected error: {errors[0]!r}")
    if not transport.disconnecting:
        raise AssertionError("connection left open")
    written = transport.value()
    if not written:
        if raw:
            raise AssertionError("bytes received but no answer")
        return
    if written.startswith(b"HTTP/1.1 200 "):
        request = RequestParser().feed(raw)
        if request.method == b"HEAD":
            return
        namespace = dict(request.namespace_headers)
        owner = OWNER.get(next(iter(namespace.values())).decode("ascii", "replace"))
        if parse_answer(written).body != b"metadata of " + (owner or b"?"):
            raise AssertionError(f"200 with another instance's data for {raw!r}")
    else:
        parse_answer(written)  # raises if not well-formed


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
