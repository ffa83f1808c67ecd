"""haproxy's own errors, understood: the agent stopped, then started again."""

from __future__ import annotations

import os

from tests.e2e.conftest import BOOT_REQUESTS, HAPROXY_503, VARIANTS


def _haproxy_processes(e2e) -> dict[str, tuple[int, str]]:
    """Each namespace's haproxy: pid and start time (a restarted one would differ)."""
    result = {}
    for variant in VARIANTS:
        for namespace in e2e.site(variant).namespaces:
            pid = namespace.haproxy.pid
            with open(f"/proc/{pid}/stat") as f:
                result[namespace.name] = (pid, f.read().rsplit(")", 1)[1].split()[19])
    return result


def test_agent_stopped_gives_haproxys_503_and_a_restart_is_picked_up(agent_running):
    e2e = agent_running
    callers = [e2e.site(v).instances[n] for v in VARIANTS for n in ("a1", "d", "o")]
    before = _haproxy_processes(e2e)
    configs = {
        ns.name: ns.haproxy.config_path.read_bytes()
        for v in VARIANTS
        for ns in e2e.site(v).namespaces
    }

    e2e.stop_agent()
    assert not e2e.agent.alive()
    reports = e2e.clients([(i, {"paths": ["/openstack"], "timeout": 20}) for i in callers])
    for instance, report in zip(callers, reports, strict=False):
        assert report["error"] is None, (instance.name, report["error"])
        (answer,) = report["requests"]
        headers = {k.lower(): v for k, v in answer["headers"]}
        # haproxy's page (no server available), not an agent's 503 (which has Retry-After)
        assert answer["status"] == 503, (instance.name, answer["status"], answer["body"])
        assert HAPROXY_503 in answer["body"] and "retry-after" not in headers, instance.name

    e2e.start_agent()
    reports = e2e.clients([(i, {}) for i in callers])
    for instance, report in zip(callers, reports, strict=False):
        e2e.assert_own(instance, report, count=BOOT_REQUESTS)

    # picked up without touching haproxy: same processes, same configuration files
    assert _haproxy_processes(e2e) == before
    for name, (pid, _) in before.items():
        assert os.path.exists(f"/proc/{pid}")
    assert {
        ns.name: ns.haproxy.config_path.read_bytes()
        for v in VARIANTS
        for ns in e2e.site(v).namespaces
    } == configs
