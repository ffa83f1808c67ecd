"""The scale run's plain parts: batched transactions, the VIF ports, the footprint
readers, the options and the report."""

from __future__ import annotations

import mmap
import os
import socket

import pytest

from bench.ovnsandbox.nbrows import Network, VmPort, network_operations, new_ids
from bench.ovnsandbox.scale import (
    Options,
    ScaleRun,
    descriptors,
    markdown,
    memory_map,
    processes_in,
    renamed,
    vif_port_operations,
)


def test_renamed_suffixes_every_uuid_name_and_the_references_to_it_only():
    net = Network(id="ab12" + "0" * 32, cidr="10.1.0.0/24")
    ops = renamed(network_operations(net), "_7")
    names = [op["uuid-name"] for op in ops if "uuid-name" in op]
    assert names == ["dhcp_7", "mdport_7"]
    switch = ops[2]["row"]
    assert switch["ports"] == ["set", [["named-uuid", "mdport_7"]]]
    assert switch["name"] == net.switch  # plain values untouched
    assert renamed(network_operations(net), "_1") != ops


def test_vif_ports_are_internal_ports_bound_by_iface_id_in_one_transaction():
    net = Network(id="ab12" + "0" * 32, cidr="10.1.0.0/24")
    ports = [VmPort(net, net.host(11)), VmPort(net, net.host(12))]
    ops = vif_port_operations("br-int", [("msab1200000", ports[0]), ("msab1200001", ports[1])])
    interfaces = [op["row"] for op in ops if op.get("table") == "Interface"]
    assert [row["type"] for row in interfaces] == ["internal", "internal"]
    assert [dict(row["external_ids"][1])["iface-id"] for row in interfaces] == [
        ports[0].id,
        ports[1].id,
    ]
    [bridge] = [op for op in ops if op.get("table") == "Bridge"]
    assert bridge["where"] == [["name", "==", "br-int"]]
    assert bridge["mutations"] == [
        ["ports", "insert", ["set", [["named-uuid", "p0"], ["named-uuid", "p1"]]]]
    ]


@pytest.mark.parametrize(
    "kwargs", [{"networks": 0}, {"batch": 0}, {"sample": 6, "networks": 5}, {"timeout": 0}]
)
def test_bad_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        Options(**kwargs)


def test_descriptors_counts_this_process_sockets_by_kind():
    before = descriptors(os.getpid())
    with socket.socket() as _a, socket.socket() as _b:
        during = descriptors(os.getpid())
    assert during["socket"] == before["socket"] + 2


def test_new_ids_never_share_a_tap_device_name(monkeypatch):
    # ids whose first 10 characters repeat, as random ones do now and then at 1,000
    made = iter(["ab12aaaaaa-1", "ab12aaaaaa-2", "ab12bbbbbb-3", "ab12aaaaaa-4", "ab12cccccc-5"])
    monkeypatch.setattr("bench.ovnsandbox.nbrows.new_id", lambda tag: next(made))
    assert new_ids("ab12", 3) == ["ab12aaaaaa-1", "ab12bbbbbb-3", "ab12cccccc-5"]


def test_new_ids_start_with_the_tag_and_differ_in_their_first_10_characters():
    ids = new_ids("ab12", 2000)
    assert len({i[:10] for i in ids}) == 2000
    assert all(i.startswith("ab12") and len(i) == 36 for i in ids)


def test_memory_map_sees_anonymous_memory_this_process_touches():
    before = memory_map(os.getpid())
    size = 64 << 20
    with mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as block:
        block.write(b"x" * size)  # touched: resident
        during = memory_map(os.getpid())
    assert set(before) == {"heap", "arenas", "anon", "files", "arena_heaps"}
    assert during["anon"] + during["arenas"] - before["anon"] - before["arenas"] >= size
    assert during["files"] > 0


def test_no_process_runs_in_a_namespace_that_does_not_exist(tmp_path):
    assert processes_in(["ovnmeta-nothing"], netns_dir=str(tmp_path)) == 0


def test_the_report_says_whether_the_targets_are_met():
    run = ScaleRun(Options(networks=1000))
    run.footprint = {
        "rss": 100 << 20,
        "peak_rss": 120 << 20,
        "anon_rss": 0,
        "threads": 3,
        "descriptors": 1020,
        "descriptors_by_kind": {"socket": 1010, "file": 10},
        "session_processes": 1,
        "session_rss": 100 << 20,
        "cpu_s": 1.0,
        "processes_in_namespaces": 0,
        "namespaces": 1000,
    }
    text = markdown(run, "python -m bench.ovnsandbox.scale")
    assert "| provisioned: descriptors | 1020 (file 10, socket 1010) |" in text
    assert "- extra processes per network: 0 (target 0): met" in text
    assert "100.0 MiB (target < 150 MiB for 1,000): met" in text
    run.footprint["session_rss"] = 200 << 20
    assert "200.0 MiB (target < 150 MiB for 1,000): not met" in markdown(run, "x")
