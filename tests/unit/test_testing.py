"""metaproxy.testing: the public doubles behave as documented."""

import pytest
from twisted.internet.defer import Deferred

from metaproxy.nova.client import NovaResponse, NovaTimeout
from metaproxy.resolve.base import Port
from metaproxy.resolve.table import parse_table
from metaproxy.testing import FakeNova, InMemoryPortBackend, echo_instance_id

HEADERS = ((b"X-Forwarded-For", b"10.0.0.5"), (b"X-Instance-ID", b"vm-1"))
TABLE = {
    "routers": {"r1": ["net-a"]},
    "ports": [
        {
            "id": "p1",
            "network_id": "net-a",
            "mac_address": "fa:16:3e:00:00:01",
            "fixed_ips": ["10.0.0.5"],
            "device_id": "vm-1",
            "project_id": "proj-1",
        }
    ],
}
PORT = Port("p1", "net-a", "fa:16:3e:00:00:01", ("10.0.0.5",), "vm-1", "proj-1")


def result(d):
    box = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    return box[0]


def test_fake_nova_without_a_script_answers_200_data():
    answer = result(FakeNova().forward(b"GET", b"/", HEADERS, b""))
    assert (answer.status, answer.reason, answer.body) == (200, b"OK", b"data")


def test_fake_nova_answers_in_turn_then_repeats_the_last():
    first = NovaResponse(404, b"Not Found", (), b"")
    last = NovaResponse(200, b"OK", (), b"x")
    nova = FakeNova(first, last)
    answers = [result(nova.forward(b"GET", b"/", HEADERS, b"")) for _ in range(3)]
    assert answers == [first, last, last]


def test_fake_nova_fails_with_an_exception_and_hands_back_a_deferred():
    pending = Deferred()
    nova = FakeNova(NovaTimeout("slow"), pending)
    assert result(nova.forward(b"GET", b"/", HEADERS, b"")).check(NovaTimeout)
    assert nova.forward(b"GET", b"/", HEADERS, b"") is pending


def test_fake_nova_records_requests_and_time_limits():
    nova = FakeNova()
    nova.forward(b"GET", b"/a", HEADERS, b"")
    nova.forward(b"POST", b"/b", HEADERS, b"pw", 12.5)
    assert nova.sent == [(b"GET", b"/a", HEADERS, b""), (b"POST", b"/b", HEADERS, b"pw")]
    assert nova.time_limits == [None, 12.5]


def test_fake_nova_reply_function_and_echo_instance_id():
    nova = FakeNova(reply=echo_instance_id)
    answer = result(nova.forward(b"GET", b"/", HEADERS, b""))
    assert (answer.status, answer.body) == (200, b"metadata of vm-1")


def test_fake_nova_takes_a_script_or_a_reply_not_both():
    with pytest.raises(TypeError, match="not both"):
        FakeNova(NovaResponse(200, b"OK", (), b""), reply=echo_instance_id)


def test_fake_nova_pool_figures_and_close():
    nova = FakeNova(in_flight=4, queued=1, idle=3)
    assert (nova.in_flight, nova.queued, nova.idle) == (4, 1, 3)
    assert (FakeNova().in_flight, FakeNova().queued, FakeNova().idle) == (0, 0, 0)
    assert not nova.closed
    assert result(nova.close()) is None and nova.closed


@pytest.mark.parametrize("table", [TABLE, parse_table(TABLE)], ids=["document", "parsed"])
def test_in_memory_backend_answers_at_once_and_counts(table):
    backend = InMemoryPortBackend(table)
    assert result(backend.router_networks("r1")) == ("net-a",)
    assert result(backend.router_networks("r9")) == ()
    assert result(backend.ports_by_ip(["net-a"], "10.0.0.5")) == [PORT]
    assert result(backend.ports_by_mac(["net-a"], "fa:16:3e:00:00:01")) == [PORT]
    assert result(backend.ports_by_ip(["net-b"], "10.0.0.5")) == []
    assert backend.calls == 5
    assert not hasattr(backend, "router_networks_now")


def test_importing_it_needs_no_test_framework():
    """Users' tests may run under trial or unittest: importing it pulls in no pytest."""
    import subprocess
    import sys

    code = "import sys, metaproxy.testing; print('pytest' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
