"""Lookups and state reports over a real RabbitMQ: the real `twistd metaproxy` (lookups
over RPC by default, since its configuration has a transport_url) against a fake
neutron-server built on oslo.messaging's RPC server (bench.fakes.neutronserver), which
answers get_ports from the integration table and records every call.

The broker (Debian's rabbitmq-server) is started once for the module as a plain
process on private ports, node name and data directory (bench.fakes.rabbitmq), and stopped
afterwards; without it every test here is skipped with one line saying what is missing.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from bench.fakes.rabbitmq import RabbitMQ, rabbitmq_missing
from bench.load.cloudinit import boot_sequence
from bench.load.unixhttp import get
from metaproxy.resolve.rpc import ip_filters, mac_filters, router_filters
from tests.integration.conftest import short_tmp
from tests.integration.rpc_stack import RpcStack

_missing = rabbitmq_missing()
pytestmark = pytest.mark.skipif(_missing is not None, reason=f"rpc: needs {_missing}")

REPORT_INTERVAL = 1.0
RPC_TIMEOUT = 2


@pytest.fixture(scope="module")
def broker():
    root = short_tmp()
    b = RabbitMQ.start(root / "rabbit")
    yield b
    b.close()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def rpc_stack(broker):
    stack = RpcStack(
        broker,
        namespaces=("qrouter-r1",),
        extra_default=f"rpc_response_timeout = {RPC_TIMEOUT}\n",
        extra_sections=(
            f"[AGENT]\nreport_interval = {REPORT_INTERVAL}\n"
            "[cache]\nenabled = true\nexpiration_time = 30\n"
        ),
    )
    yield stack
    stack.stop()


def boot(path: str, headers, xff: str) -> int:
    """cloud-init's first-boot sequence (docs/upstream.md, "cloud-init's requests")
    through the agent; its length."""
    sequence = boot_sequence()
    target, count = next(sequence), 0
    while True:
        answer = get(path, target, forwarded_for=xff, headers=headers)
        count += 1
        assert answer.status in (200, 404), (target, answer.status, answer.body)
        try:
            target = sequence.send((answer.status, answer.body))
        except StopIteration:
            return count


def test_lookups_go_over_rpc_by_default(rpc_stack):
    from bench.processes import wait_for_log

    # the start-up line may follow the socket by a moment
    wait_for_log(rpc_stack.agent, "lookups from rpc: get_ports from neutron-server", 10)
    log = rpc_stack.agent.log()
    assert "guest:guest" not in log  # the transport URL's password is never logged


def test_one_boot_costs_two_calls_with_upstreams_filters(rpc_stack):
    neutron = rpc_stack.neutron
    neutron.clear("get_ports")
    requests = boot(rpc_stack.shared, [("X-Neutron-Router-ID", "r1")], "10.0.0.5")
    assert requests >= 26
    calls = neutron.calls_of("get_ports")
    assert [c.kwargs["filters"] for c in calls] == [
        router_filters("r1"),
        ip_filters(["net-a"], "10.0.0.5"),
    ]
    for c in calls:
        assert c.call and c.topic == "q-plugin"
        assert c.context["is_admin"] is True
        assert sorted(c.context["roles"]) == ["admin", "member", "reader"]
        assert c.context["user_id"] is None and c.context["project_id"] is None


def test_link_local_caller_is_looked_up_by_mac(rpc_stack):
    neutron = rpc_stack.neutron
    neutron.clear("get_ports")
    answer = get(
        rpc_stack.shared,
        "/openstack/latest/meta_data.json",
        forwarded_for="fe80::f816:3eff:fe11:2233",
        headers=[("X-Neutron-Network-ID", "net-c")],
    )
    assert answer.status == 200 and json.loads(answer.body)["uuid"] == "vm-c"
    assert [c.kwargs["filters"] for c in neutron.calls_of("get_ports")] == [
        mac_filters(["net-c"], "fa:16:3e:11:22:33")
    ]


def test_state_reports_first_a_call_with_start_flag_then_casts(rpc_stack):
    deadline = time.monotonic() + 30
    while len(rpc_stack.neutron.calls_of("report_state")) < 3:
        assert time.monotonic() < deadline, rpc_stack.agent.log()[-3000:]
        time.sleep(0.2)
    reports = rpc_stack.neutron.calls_of("report_state")
    first, later = reports[0], reports[1:]
    state = first.kwargs["agent_state"]["agent_state"]
    assert first.call is True and state.pop("start_flag") is True
    state.pop("uuid")
    assert state == {
        "binary": "neutron-metadata-agent",
        "host": "agent-host-1",
        "topic": "N/A",
        "agent_type": "Metadata agent",
        "configurations": {
            "metadata_proxy_socket": rpc_stack.shared,
            "nova_metadata_host": "127.0.0.1",
            "nova_metadata_port": state["configurations"]["nova_metadata_port"],
            "log_agent_heartbeats": False,
        },
    }
    assert time.strptime(first.kwargs["time"].split(".")[0], "%Y-%m-%dT%H:%M:%S")
    for report in later:
        assert report.call is False
        assert "start_flag" not in report.kwargs["agent_state"]["agent_state"]
    assert first.context["is_admin"] is True


def test_slow_neutron_server_gets_the_instance_503(rpc_stack):
    neutron = rpc_stack.neutron
    neutron.delay = RPC_TIMEOUT + 2
    try:
        started = time.monotonic()
        answer = get(
            rpc_stack.shared,
            "/openstack",
            forwarded_for="10.0.0.5",
            headers=[("X-Neutron-Router-ID", "r2")],
        )
        took = time.monotonic() - started
    finally:
        neutron.delay = 0
    assert answer.status == 503 and answer.header("Retry-After") == "1"
    assert took < RPC_TIMEOUT + 8  # the bound: well before haproxy's 32 s
    deadline = time.monotonic() + 10
    while "no answer from neutron-server" not in rpc_stack.agent.log():
        assert time.monotonic() < deadline, rpc_stack.agent.log()[-3000:]
        time.sleep(0.1)


def test_calls_nobody_consumes_come_back_at_once(rpc_stack, tmp_path):
    """RabbitMQ's mandatory flag: a call to an exchange no neutron-server listens on is
    returned undelivered at once, not waited for until its timeout."""
    from metaproxy.config import default_settings
    from metaproxy.neutron.bus import NeutronRpc

    conf = tmp_path / "neutron.conf"
    conf.write_text("[DEFAULT]\ncontrol_exchange = nobody-listens-here\n")
    settings = default_settings(
        transport_url=rpc_stack.broker.transport_url, config_files=(str(conf),)
    )
    rpc = NeutronRpc(settings, lookup_timeout=20, report_timeout=20)
    try:
        started = time.monotonic()
        with pytest.raises(rpc.no_consumer_errors):
            rpc.get_ports(router_filters("r1"), timeout=20)
        assert time.monotonic() - started < 5
    finally:
        rpc.close()


def test_start_up_prints_no_warning(rpc_stack):
    """The issue: start-up printed an EventletDeprecationWarning."""
    text = rpc_stack.agent.log() + rpc_stack.stderr()
    assert "Warning" not in text, text[-3000:]


def test_recovers_after_the_broker_restarts(rpc_stack):
    """The broker is stopped: lookups fail with 503 (and the log says so once), then it
    is started again and they are answered. The outage must be seen: a test that only
    restarts the broker may find it back before its first request."""
    agent = rpc_stack.agent
    # a lookup answered first (a new key: no kept answer), so that lookups are working
    answer = get(
        rpc_stack.shared,
        "/openstack",
        forwarded_for="10.0.1.99",
        headers=[("X-Neutron-Network-ID", "net-c")],
    )
    assert answer.status == 404, answer
    failing_before = agent.log().count("RPC lookups failing")
    rpc_stack.broker.stop()
    try:
        statuses = []
        deadline = time.monotonic() + 30
        # errors are never kept, so each request is a lookup of its own
        while len(statuses) < 3:
            answer = get(
                rpc_stack.shared,
                "/openstack",
                forwarded_for="192.168.5.9",
                headers=[("X-Neutron-Network-ID", "net-d")],
            )
            assert answer.status == 503, (answer, agent.log()[-3000:])
            assert answer.header("Retry-After") == "1"
            statuses.append(answer.status)
            assert time.monotonic() < deadline
        wait_for_log_count(agent, "RPC lookups failing", failing_before + 1, 10)
    finally:
        rpc_stack.broker.restart()
    deadline = time.monotonic() + 60
    while True:
        answer = get(
            rpc_stack.shared,
            "/openstack/latest/meta_data.json",
            forwarded_for="192.168.5.9",
            headers=[("X-Neutron-Network-ID", "net-d")],
        )
        if answer.status == 200:
            break
        assert answer.status == 503, answer
        assert time.monotonic() < deadline, (statuses, agent.log()[-3000:])
        time.sleep(0.5)
    assert json.loads(answer.body)["uuid"] == "vm-d"
    log = agent.log()
    assert log.rindex("RPC lookups failing") < log.rindex("RPC lookups answered again")
    count = len(rpc_stack.neutron.calls_of("report_state"))
    deadline = time.monotonic() + 30
    while len(rpc_stack.neutron.calls_of("report_state")) <= count:
        assert time.monotonic() < deadline, "state reports did not resume"
        time.sleep(0.2)


def wait_for_log_count(process, text: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while process.log().count(text) < count:
        assert time.monotonic() < deadline, process.log()[-3000:]
        time.sleep(0.1)
