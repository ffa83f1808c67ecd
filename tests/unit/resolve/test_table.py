"""The static table backend: parsing, validation messages, indexes, reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from metaproxy.resolve.base import Port
from metaproxy.resolve.table import (
    PortTable,
    TableBackend,
    TableError,
    load_table,
    parse_table,
)

SAMPLE = Path(__file__).resolve().parents[3] / "etc" / "ports.json.sample"


def fired(d: Deferred) -> object:
    """The result of an already-fired Deferred (raising its failure)."""
    box: list[object] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def port(
    id: str = "p1",
    network_id: str = "n1",
    mac: str = "fa:16:3e:00:00:01",
    ips: list[str] | None = None,
    device_id: str = "vm-1",
    project_id: str = "proj",
    **extra: object,
) -> dict[str, object]:
    entry: dict[str, object] = {
        "id": id,
        "network_id": network_id,
        "mac_address": mac,
        "fixed_ips": ["10.0.0.5"] if ips is None else ips,
        "device_id": device_id,
        "project_id": project_id,
    }
    entry.update(extra)
    return entry


def write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document, indent=2))
    return path


# --- router networks -------------------------------------------------------------------


def test_router_networks_from_the_three_interface_owners_in_order() -> None:
    """A router's networks come from its interface ports of the three owners, in file order;
    its gateway port, other devices' ports and other routers' ports do not count."""
    table = parse_table(
        {
            "ports": [
                port(
                    "a",
                    "n-dist",
                    device_id="r1",
                    device_owner="network:router_interface_distributed",
                ),
                port("b", "n-ext", device_id="r1", device_owner="network:router_gateway"),
                port("c", "n-plain", device_id="r1", device_owner="network:router_interface"),
                port("d", "n-other", device_id="r2", device_owner="network:router_interface"),
                port(
                    "e",
                    "n-ha",
                    device_id="r1",
                    device_owner="network:ha_router_replicated_interface",
                ),
                port("f", "n-vm", device_id="r1", device_owner="compute:nova"),
                port(
                    "g",
                    "n-plain",
                    device_id="r1",
                    device_owner="network:router_interface",
                    ips=["10.0.1.1"],
                ),
            ]
        }
    )
    assert table.router_networks("r1") == ("n-dist", "n-plain", "n-ha", "n-plain")
    assert table.router_networks("r2") == ("n-other",)
    assert table.router_networks("r3") == ()


def test_routers_map_appends_after_interface_ports() -> None:
    """The C{routers} map adds networks after those of interface ports, in map order."""
    table = parse_table(
        {
            "routers": {"r1": ["n-map1", "n-map2"], "r9": ["n9"]},
            "ports": [port("a", "n-port", device_id="r1", device_owner="network:router_interface")],
        }
    )
    assert table.router_networks("r1") == ("n-port", "n-map1", "n-map2")
    assert table.router_networks("r9") == ("n9",)


# --- indexes and normalisation -----------------------------------------------------------


def test_normalises_mac_and_ips_and_indexes_them() -> None:
    """MACs become lower case with colons and IPs their compressed form; both index."""
    table = parse_table(
        {
            "ports": [
                port("p1", "n1", mac="FA-16-3E-00-00-0A", ips=["FD00:0:0::0005", "10.0.0.5"]),
            ]
        }
    )
    (only,) = table.ports
    assert only.mac_address == "fa:16:3e:00:00:0a"
    assert only.fixed_ips == ("fd00::5", "10.0.0.5")
    assert table.ports_by_ip(("n1",), "fd00::5") == [only]
    assert table.ports_by_ip(("n1",), "10.0.0.5") == [only]
    assert table.ports_by_mac(("n1",), "fa:16:3e:00:00:0a") == [only]
    assert table.ports_by_ip(("n2",), "10.0.0.5") == []
    assert table.ports_by_ip(("n1",), "10.0.0.6") == []


def test_defaults_generated_id_and_empty_owner_and_empty_fixed_ips() -> None:
    """A port without id gets C{port-<index>}; owner defaults to empty; no IPs is fine."""
    entry = port(ips=[])
    del entry["id"]
    table = parse_table({"ports": [port("x", "n1"), entry]})
    assert table.ports[1] == Port(
        id="port-1",
        network_id="n1",
        mac_address="fa:16:3e:00:00:01",
        fixed_ips=(),
        device_id="vm-1",
        project_id="proj",
        device_owner="",
    )


def test_lookup_over_several_networks_counts_a_repeated_network_once() -> None:
    """Ports on any of the networks are found, in network order; a network listed twice
    (two router interfaces on it) does not return its ports twice."""
    table = parse_table({"ports": [port("a", "n1"), port("b", "n2", mac="fa:16:3e:00:00:02")]})
    assert [p.id for p in table.ports_by_ip(("n2", "n1", "n2"), "10.0.0.5")] == ["b", "a"]
    assert [p.id for p in table.ports_by_ip(("n1", "n1"), "10.0.0.5")] == ["a"]
    assert [p.id for p in table.ports_by_mac(("n3", "n2", "n2"), "fa:16:3e:00:00:02")] == ["b"]
    assert table.ports_by_ip((), "10.0.0.5") == []


def test_same_ip_twice_on_one_network_is_kept_as_two_ports() -> None:
    """Two ports with one IP on one network are both indexed (the resolver refuses them)."""
    table = parse_table({"ports": [port("a"), port("b", mac="fa:16:3e:00:00:02")]})
    assert [p.id for p in table.ports_by_ip(("n1",), "10.0.0.5")] == ["a", "b"]


def test_instances_are_not_read() -> None:
    """C{instances} is for the fake Nova: any content is accepted here."""
    table = parse_table({"instances": {"vm-1": {"anything": [1, 2]}}, "ports": [port()]})
    assert len(table) == 1


# --- validation --------------------------------------------------------------------------


def _bad_port(**changes: object) -> dict[str, object]:
    entry = port("p4")
    for key, value in changes.items():
        if value is KeyError:
            del entry[key]
        else:
            entry[key] = value
    return {"ports": [port("p1"), port("p2", "n2"), port("p3", "n3"), entry]}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            _bad_port(fixed_ips=["fd00::5", "10.0.0.300"]),
            "ports.json: ports[3] (id 'p4'): fixed_ips[1] '10.0.0.300' is not an IP address",
        ),
        (
            _bad_port(fixed_ips=["fe80::1%eth0"]),
            "ports.json: ports[3] (id 'p4'): fixed_ips[0] 'fe80::1%eth0' is not an IP address",
        ),
        (
            _bad_port(fixed_ips=["10.0.0.0/24"]),
            "ports.json: ports[3] (id 'p4'): fixed_ips[0] '10.0.0.0/24' is not an IP address",
        ),
        (
            _bad_port(fixed_ips=[5]),
            "ports.json: ports[3] (id 'p4'): fixed_ips[0] 5 is not an IP address",
        ),
        (
            _bad_port(fixed_ips=["fd00::5", "FD00:0::5"]),
            "ports.json: ports[3] (id 'p4'): fixed_ips[1] 'FD00:0::5' repeats fixed_ips[0]",
        ),
        (
            _bad_port(fixed_ips="10.0.0.5"),
            "ports.json: ports[3] (id 'p4'): fixed_ips must be a list of IP addresses, not a string",  # noqa: E501
        ),
        (_bad_port(network_id=KeyError), "ports.json: ports[3] (id 'p4'): missing 'network_id'"),
        (
            _bad_port(network_id=""),
            "ports.json: ports[3] (id 'p4'): network_id '' is not a network id (a non-empty string)",  # noqa: E501
        ),
        (_bad_port(fixed_ips=KeyError), "ports.json: ports[3] (id 'p4'): missing 'fixed_ips'"),
        (_bad_port(device_id=KeyError), "ports.json: ports[3] (id 'p4'): missing 'device_id'"),
        (
            _bad_port(device_id=None),
            "ports.json: ports[3] (id 'p4'): device_id null is not a string (use \"\" for no device)",  # noqa: E501
        ),
        (_bad_port(project_id=KeyError), "ports.json: ports[3] (id 'p4'): missing 'project_id'"),
        (
            _bad_port(project_id=""),
            "ports.json: ports[3] (id 'p4'): project_id '' is not a project id (a non-empty string)",  # noqa: E501
        ),
        (_bad_port(mac_address=KeyError), "ports.json: ports[3] (id 'p4'): missing 'mac_address'"),
        (
            _bad_port(mac_address="fa:16:3e:00:00"),
            "ports.json: ports[3] (id 'p4'): mac_address 'fa:16:3e:00:00' is not a MAC address "
            "(six hex pairs separated by ':' or '-')",
        ),
        (
            _bad_port(mac_address="fa:16-3e:00:00:01"),
            "ports.json: ports[3] (id 'p4'): mac_address 'fa:16-3e:00:00:01' is not a MAC address "
            "(six hex pairs separated by ':' or '-')",
        ),
        (
            _bad_port(device_owner=["compute:nova"]),
            "ports.json: ports[3] (id 'p4'): device_owner [\"compute:nova\"] is not a string",
        ),
        (_bad_port(id=7), "ports.json: ports[3]: id 7 is not a non-empty string"),
        (_bad_port(id="p1"), "ports.json: ports[3] (id 'p1'): the id is already used by ports[0]"),
        (
            _bad_port(**{"device-owner": "compute:nova"}),
            "ports.json: ports[3] (id 'p4'): unknown key 'device-owner' (expected 'id', 'network_id', "  # noqa: E501
            "'mac_address', 'fixed_ips', 'device_id', 'project_id', 'device_owner')",
        ),
        (
            {"ports": [port(), ["not", "a", "port"]]},
            "ports.json: ports[1]: must be an object, not a list",
        ),
        (
            {"ports": {"p1": port()}},
            "ports.json: ports must be a list of port objects, not an object",
        ),
        (
            {"routers": {"r1": ["n1", 5]}},
            "ports.json: routers['r1'][1]: 5 is not a network id (a non-empty string)",
        ),
        (
            {"routers": {"r1": "n1"}},
            "ports.json: routers['r1']: must be a list of network ids, not a string",
        ),
        (
            {"routers": ["r1"]},
            "ports.json: routers must be an object mapping router ids to lists of network ids, "
            "not a list",
        ),
        (
            {"ports": [], "port": []},
            "ports.json: unknown top-level key 'port' (expected 'routers', 'ports', 'instances')",
        ),
        (
            [port()],
            "ports.json: the table must be a JSON object with keys 'routers', 'ports', 'instances', "  # noqa: E501
            "not a list",
        ),
    ],
)
def test_validation_messages_name_the_entry_and_why(document: object, message: str) -> None:
    """Each kind of bad entry is refused with a message naming the file, the entry, why."""
    with pytest.raises(TableError) as caught:
        parse_table(document, "ports.json")
    assert str(caught.value) == message
    assert caught.value.problems == [message]
    assert isinstance(caught.value, ValueError)


def test_generated_id_is_named_in_messages_and_clashes_are_refused() -> None:
    """A port without id is named by its generated id; an explicit id equal to a
    generated one is a clash."""
    first = port(mac="nope")
    del first["id"]
    with pytest.raises(TableError) as caught:
        parse_table({"ports": [first]}, "t.json")
    assert str(caught.value).startswith("t.json: ports[0] (id 'port-0'): mac_address 'nope'")
    second = port()
    del second["id"]
    with pytest.raises(TableError) as caught:
        parse_table({"ports": [port("port-1"), second]}, "t.json")
    assert str(caught.value) == "t.json: ports[1] (id 'port-1'): the id is already used by ports[0]"


def test_every_problem_is_listed_up_to_a_limit() -> None:
    """All problems are reported at once, one line each; past 20 the rest are counted."""
    with pytest.raises(TableError) as caught:
        parse_table({"ports": [port("a", mac="x"), port("b", ips=["y"])], "extra": 1}, "t.json")
    assert caught.value.problems == [
        "t.json: unknown top-level key 'extra' (expected 'routers', 'ports', 'instances')",
        "t.json: ports[0] (id 'a'): mac_address 'x' is not a MAC address "
        "(six hex pairs separated by ':' or '-')",
        "t.json: ports[1] (id 'b'): fixed_ips[0] 'y' is not an IP address",
    ]
    assert str(caught.value) == "\n".join(caught.value.problems)
    with pytest.raises(TableError) as caught:
        parse_table({"ports": [port(f"p{i}", ips=["bad"]) for i in range(25)]}, "t.json")
    assert len(caught.value.problems) == 21
    assert caught.value.problems[-1] == "t.json: ... and 5 more problems"


def test_json_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    """A JSON syntax error names the file, line and column."""
    path = tmp_path / "ports.json"
    path.write_text('{"ports": [\n  {"id": "p1",}\n]}\n')
    with pytest.raises(TableError) as caught:
        load_table(path)
    assert str(caught.value) == (
        f"{path}: line 2, column 15: invalid JSON: Expecting property name enclosed in "
        "double quotes"
    )


def test_duplicate_json_key_is_refused(tmp_path: Path) -> None:
    """A key twice in one object (a router listed twice) is an error, not a silent loss."""
    path = tmp_path / "ports.json"
    path.write_text('{"routers": {"r1": ["n1"], "r1": ["n2"]}}')
    with pytest.raises(TableError) as caught:
        load_table(path)
    assert str(caught.value) == f"{path}: key 'r1' appears twice in one object"


def test_unreadable_or_binary_file_is_a_table_error(tmp_path: Path) -> None:
    """A missing file and a file that is not UTF-8 are TableErrors naming the file."""
    missing = tmp_path / "missing.json"
    with pytest.raises(TableError) as caught:
        load_table(missing)
    assert str(caught.value) == f"{missing}: cannot read the table: No such file or directory"
    binary = tmp_path / "binary.json"
    binary.write_bytes(b'{"ports": "\xff"}')
    with pytest.raises(TableError) as caught:
        load_table(binary)
    assert str(caught.value) == f"{binary}: not UTF-8 text (byte 11)"


def test_load_table_names_the_file_in_validation_messages(tmp_path: Path) -> None:
    """load_table uses the path it was given as the source in messages."""
    path = write(tmp_path / "ports.json", {"ports": [port(ips=["10.0.0.300"])]})
    with pytest.raises(TableError) as caught:
        load_table(path)
    assert str(caught.value) == (
        f"{path}: ports[0] (id 'p1'): fixed_ips[0] '10.0.0.300' is not an IP address"
    )


# --- the backend -------------------------------------------------------------------------


def test_backend_answers_with_fired_deferreds(tmp_path: Path) -> None:
    """The three lookups return already-fired Deferreds with the table's answers."""
    path = write(
        tmp_path / "ports.json",
        {
            "ports": [
                port(
                    "r",
                    "n1",
                    ips=["10.0.0.1"],
                    mac="fa:16:3e:00:00:09",
                    device_id="r1",
                    device_owner="network:router_interface",
                ),
                port("a", "n1"),
            ]
        },
    )
    backend = TableBackend(path)
    assert backend.path == str(path)
    assert fired(backend.router_networks("r1")) == ("n1",)
    assert fired(backend.router_networks("nope")) == ()
    assert [p.id for p in fired(backend.ports_by_ip(("n1",), "10.0.0.5"))] == ["a"]
    assert [p.id for p in fired(backend.ports_by_mac(["n1"], "fa:16:3e:00:00:09"))] == ["r"]
    assert fired(backend.ports_by_ip(("n1",), "10.0.0.7")) == []


def test_backend_constructor_refuses_a_bad_file(tmp_path: Path) -> None:
    """A backend cannot start from an unusable file."""
    path = write(tmp_path / "ports.json", {"ports": [port(mac="")]})
    with pytest.raises(TableError):
        TableBackend(path)


def test_reload_uses_the_new_table(tmp_path: Path) -> None:
    """After reload the backend answers from the edited file."""
    path = write(tmp_path / "ports.json", {"ports": [port("a")]})
    backend = TableBackend(path)
    write(path, {"ports": [port("b", ips=["10.0.0.6"])]})
    backend.reload()
    assert fired(backend.ports_by_ip(("n1",), "10.0.0.5")) == []
    assert [p.id for p in fired(backend.ports_by_ip(("n1",), "10.0.0.6"))] == ["b"]
    assert [p.id for p in backend.table.ports] == ["b"]


@pytest.mark.parametrize("breakage", ["syntax", "validation", "removed"])
def test_reload_keeps_the_old_table_on_error(tmp_path: Path, breakage: str) -> None:
    """A bad edit (or a removed file) raises TableError and the old table keeps answering."""
    path = write(tmp_path / "ports.json", {"ports": [port("a")]})
    backend = TableBackend(path)
    old = backend.table
    if breakage == "syntax":
        path.write_text('{"ports": [')
    elif breakage == "validation":
        write(path, {"ports": [port("a", ips=["10.0.0.999"])]})
    else:
        path.unlink()
    with pytest.raises(TableError) as caught:
        backend.reload()
    assert str(caught.value).startswith(f"{path}: ")
    assert backend.table is old
    assert [p.id for p in fired(backend.ports_by_ip(("n1",), "10.0.0.5"))] == ["a"]


# --- the sample --------------------------------------------------------------------------

BLUE = "2f0a6b1c-5d3e-4c7a-8e9f-0a1b2c3d4e01"
GREEN = "2f0a6b1c-5d3e-4c7a-8e9f-0a1b2c3d4e02"
ORANGE = "2f0a6b1c-5d3e-4c7a-8e9f-0a1b2c3d4e03"
ROUTER_A = "5b3a8f43-0d37-4a6e-9d0b-2c1e7f1a0a01"
ROUTER_B = "6d1f0c2e-8b4a-4f3e-9c55-2b7e0a9d1b02"


def test_sample_table_loads_and_shows_what_it_promises() -> None:
    """The shipped sample loads: two routers, three networks, 10.0.0.5 on two networks,
    an OVN network with no router, a port reachable by MAC, instances for the fake Nova."""
    table = load_table(SAMPLE)
    assert isinstance(table, PortTable)
    assert dict(table.routers) == {ROUTER_A: (BLUE,), ROUTER_B: (GREEN,)}
    assert {p.network_id for p in table.ports} == {BLUE, GREEN, ORANGE}
    blue = table.ports_by_ip(table.router_networks(ROUTER_A), "10.0.0.5")
    green = table.ports_by_ip(table.router_networks(ROUTER_B), "10.0.0.5")
    assert len(blue) == len(green) == 1 and blue[0].device_id != green[0].device_id
    assert all(ORANGE not in networks for networks in table.routers.values())
    assert len(table.ports_by_ip((ORANGE,), "192.168.100.10")) == 1
    # fe80::f816:3eff:fe11:2233 (EUI-64 of the MAC) is matched by MAC on the blue network
    (by_mac,) = table.ports_by_mac((BLUE,), "fa:16:3e:11:22:33")
    assert by_mac is blue[0]
    instances = json.loads(SAMPLE.read_text())["instances"]
    assert blue[0].device_id in instances and green[0].device_id in instances
    assert sorted("user_data" in entry for entry in instances.values()) == [False, True, True]
