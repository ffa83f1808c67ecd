"""The scale checks in small (bench/scale/): the real agent with many namespace
sockets and many held connections. Functional assertions only; the figures are
C{python -m bench.scale}'s."""

from __future__ import annotations

import json
import os
import time

import pytest

from bench.load.fleet import make_fleet
from bench.load.unixhttp import get
from bench.scale.agent import ScaleAgent, start_scale_agent, wait_accepting
from bench.scale.holder import hold_connections
from bench.scale.host import open_fds
from bench.scale.namespaces import ctl, scale_namespaces
from metaproxy.namespace import Namespace

pytestmark = pytest.mark.slow


def _stop(scale: ScaleAgent) -> None:
    scale.stop()
    scale.remove()


def _metadata(scale: ScaleAgent, path: str, instance) -> dict:
    answer = get(
        path,
        "/openstack/latest/meta_data.json",
        forwarded_for=instance.ip,
        headers=[(instance.namespace.kind.header_name, instance.namespace.id)],
    )
    assert answer.status == 200, (answer.status, answer.body)
    return json.loads(answer.body)


@pytest.mark.parametrize("declare", ["config", "dir"])
def test_500_namespace_sockets_start_and_all_accept(declare):
    """500 namespaces declared in the configuration or in namespace_dir: every socket
    accepts, and each serves its own namespace's instances."""
    fleet = make_fleet(20, 5)
    namespaces = scale_namespaces(fleet, 500)
    assert len(namespaces) == 500
    scale = start_scale_agent(fleet, namespaces=namespaces, declare=declare)
    try:
        wait_accepting([scale.socket_path(n) for n in namespaces], 120, scale.agent)
        assert len(os.listdir(scale.socket_dir)) == 500
        for instance in fleet.instances[:5]:
            data = _metadata(scale, scale.socket_path(instance.namespace), instance)
            assert data["uuid"] == instance.instance_id
        # a namespace the table does not know is served too: its own 404
        answer = get(scale.socket_path(namespaces[-1]), "/openstack", forwarded_for="10.0.0.10")
        assert answer.status == 404 and namespaces[-1].id.encode() in answer.body
    finally:
        _stop(scale)


def test_ctl_add_and_remove_among_500_namespaces():
    """With 500 namespaces served, `metaproxy ctl` adds one (its socket answers) and
    removes it (its socket is gone); the others keep answering."""
    fleet = make_fleet(10, 2)
    namespaces = scale_namespaces(fleet, 500)
    scale = start_scale_agent(fleet, namespaces=namespaces, declare="dir")
    extra = Namespace.parse("qrouter-added-at-run-time")
    try:
        wait_accepting([scale.socket_path(n) for n in namespaces], 120, scale.agent)
        _, error = ctl(scale, "add", extra)
        assert error == ""
        answer = get(scale.socket_path(extra), "/openstack", forwarded_for="10.0.0.10")
        assert answer.status == 404 and b"added-at-run-time" in answer.body
        _, error = ctl(scale, "remove", extra)
        assert error == ""
        assert not os.path.exists(scale.socket_path(extra))
        instance = fleet.instances[0]
        data = _metadata(scale, scale.socket_path(instance.namespace), instance)
        assert data["uuid"] == instance.instance_id
    finally:
        _stop(scale)


def test_held_connections_do_not_stop_a_normal_request():
    """500 connections holding half a request each: a normal request on the same shared
    socket is still answered, right; once they go, the agent closes them."""
    fleet = make_fleet(10, 2)
    scale = start_scale_agent(fleet, extra_metaproxy="request_timeout = 120\n")
    pids = [scale.agent.pid]
    try:
        before = open_fds(pids)
        with hold_connections(scale.shared, 500):
            _wait_for(lambda: open_fds(pids) >= before + 500)  # all accepted, all held
            instance = fleet.instances[0]
            data = _metadata(scale, scale.shared, instance)
            assert data["uuid"] == instance.instance_id
            assert open_fds(pids) >= before + 500
        _wait_for(lambda: open_fds(pids) <= before + 5)
        assert scale.agent.alive()
        assert "answered 408" not in scale.agent.log()
    finally:
        _stop(scale)


def _wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.mark.skipif(
    os.geteuid() != 0 or not __import__("shutil").which("haproxy"),
    reason="router namespaces need root (and haproxy for its comparison)",
)
def test_router_namespaces_follow_the_node_and_let_go():
    """C{python -m bench.scale routers} in small: every router listened in, one listening
    descriptor per router (no worker), all of them closed once the namespaces are
    deleted, and the idle haproxy measured."""
    from bench.scale.routers import routers_markdown, run_routers

    result = run_routers(40, haproxies=2)
    assert result["restart_serving"] == 40
    assert result["fds_per_router"] == 1.0
    assert result["fds_served"] - result["fds_empty"] == 40
    assert result["fds_after_delete"] == result["fds_empty"]
    assert result["haproxy_count"] == 2 and result["haproxy_threads"] >= 1
    assert "| router namespaces | 40 |" in routers_markdown(result)
