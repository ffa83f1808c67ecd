"""lookup_backend = neutron_api in a real `twistd metaproxy`, against the stand-alone fake
Keystone + Neutron API process and the fake Nova: instances get their own metadata;
with Keystone unreachable they get 503 with Retry-After and the log names Keystone."""

from __future__ import annotations

import json
import shutil
import socket

import pytest

from bench.fakes.neutron.cli import start_process
from bench.load.unixhttp import get
from bench.lookups import FAKE_NEUTRON_PASSWORD, start_lookup
from bench.processes import start_agent, start_fakenova, write_agent_config
from tests.integration.conftest import SECRET, TABLE, short_tmp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def neutron_section(keystone: str) -> str:
    return (
        "[neutron]\nauth_type = password\n"
        f"auth_url = {keystone}\nusername = metaproxy\n"
        f"password = {FAKE_NEUTRON_PASSWORD}\nuser_domain_name = Default\n"
        "project_name = service\nproject_domain_name = Default\ntimeout = 2\n"
    )


@pytest.fixture(scope="module")
def cloud_stack():
    root = short_tmp()
    table = root / "ports.json"
    table.write_text(json.dumps(TABLE))
    started = []
    try:
        neutron, url = start_process(table, root / "neutron", password=FAKE_NEUTRON_PASSWORD)
        started.append(neutron)
        nova, nova_port = start_fakenova(table, SECRET, root / "nova")
        started.append(nova)
        agents = {}
        for name, keystone in (
            ("up", f"{url}/identity/v3"),
            ("down", f"http://127.0.0.1:{free_port()}/v3"),
        ):
            state = root / name
            config = write_agent_config(
                root / f"{name}.ini",
                state_path=state,
                nova_port=nova_port,
                secret=SECRET,
                table=table,
                extra_metaproxy="lookup_backend = neutron_api\n",
                extra_sections=neutron_section(keystone),
            )
            agent = start_agent(
                [config], root / f"agent-{name}", wait_socket=str(state / "metadata_proxy")
            )
            started.append(agent)
            agents[name] = (agent, str(state / "metadata_proxy"))
        yield agents
    finally:
        for process in reversed(started):
            process.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(
    "headers, xff, instance",
    [
        ([("X-Neutron-Router-ID", "r1")], "10.0.0.5", "vm-a"),
        ([("X-Neutron-Router-ID", "r2")], "10.0.0.5", "vm-b"),
        ([("X-Neutron-Network-ID", "net-c")], "fe80::f816:3eff:fe11:2233", "vm-c"),
    ],
)
def test_instances_found_through_the_neutron_api(cloud_stack, headers, xff, instance):
    _, shared = cloud_stack["up"]
    answer = get(shared, "/openstack/latest/meta_data.json", forwarded_for=xff, headers=headers)
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["uuid"] == instance


def test_unknown_address_is_404(cloud_stack):
    _, shared = cloud_stack["up"]
    answer = get(
        shared,
        "/latest/meta-data/",
        forwarded_for="10.9.9.9",
        headers=[("X-Neutron-Router-ID", "r1")],
    )
    assert answer.status == 404


def test_keystone_down_gives_503_with_retry_after_and_names_keystone(cloud_stack):
    agent, shared = cloud_stack["down"]
    answer = get(
        shared,
        "/latest/meta-data/",
        forwarded_for="10.0.0.5",
        headers=[("X-Neutron-Router-ID", "r1")],
    )
    assert answer.status == 503
    assert answer.header("Retry-After") == "1"
    log = agent.log()
    assert "Keystone at http://127.0.0.1:" in log and "is unreachable" in log
    assert "answered 503" in log
    assert FAKE_NEUTRON_PASSWORD not in log


def test_bench_lookup_starts_a_fake_that_accepts_its_credentials(tmp_path):
    """--lookup neutron-api: the [neutron] lines it gives the agent get a token."""
    import urllib.request

    (tmp_path / "ports.json").write_text(json.dumps({"ports": []}))
    running = start_lookup("neutron-api", tmp_path / "ports.json", tmp_path / "lookup")
    try:
        assert running.extra_metaproxy == "lookup_backend = neutron_api\n"
        section = dict(
            line.split(" = ", 1) for line in running.extra_sections.splitlines() if " = " in line
        )
        body = json.dumps(
            {
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": section["username"],
                                "password": section["password"],
                                "domain": {"name": section["user_domain_name"]},
                            }
                        },
                    },
                    "scope": {
                        "project": {
                            "name": section["project_name"],
                            "domain": {"name": section["project_domain_name"]},
                        }
                    },
                }
            }
        )
        request = urllib.request.Request(
            section["auth_url"] + "/auth/tokens",
            data=body.encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 201 and answer.headers["X-Subject-Token"]
        assert section["enabled"] == "true"
    finally:
        running.stop()
