"""metaproxy.ovsdb.data: column kinds, wire values, update and update2 applied."""

import pytest

from metaproxy.ovsdb.data import Column, DataError, RowStore, Schema, decode_value

SCHEMA = Schema.from_json(
    {
        "name": "DB",
        "version": "1.0",
        "tables": {
            "T": {
                "columns": {
                    "name": {"type": "string"},
                    "ref": {"type": {"key": {"type": "uuid", "refTable": "T"}, "min": 0, "max": 1}},
                    "tags": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
                    "ids": {
                        "type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}
                    },
                    "n": {"type": {"key": {"type": "integer", "minInteger": 1}}},
                }
            }
        },
    }
)
COLUMNS = {"T": ["name", "ref", "tags", "ids", "n"]}


def test_column_kinds_and_defaults() -> None:
    t = SCHEMA.tables["T"]
    assert t["name"] == Column("scalar", 1, "")
    assert t["n"] == Column("scalar", 1, 0)
    assert t["ref"] == Column("set", 1)
    assert t["tags"] == Column("set", None)
    assert t["ids"] == Column("map", None)
    assert SCHEMA.missing({"T": ["name", "nope"], "U": ["x"]}) == ["T.nope", "U.x"]


def test_wire_values() -> None:
    t = SCHEMA.tables["T"]
    assert decode_value(t["ref"], ["uuid", "u1"]) == ("u1",)
    assert decode_value(t["ref"], ["set", []]) == ()
    assert decode_value(t["tags"], ["set", ["b", "a"]]) == ("a", "b")
    assert decode_value(t["tags"], "only") == ("only",)
    assert decode_value(t["ids"], ["map", [["k", "v"]]]) == {"k": "v"}
    with pytest.raises(DataError, match="is not a map"):
        decode_value(t["ids"], ["set", []])
    with pytest.raises(DataError, match="not an atom"):
        decode_value(t["name"], ["weird", 1, 2])


def test_not_a_schema() -> None:
    with pytest.raises(DataError, match="not an OVSDB schema"):
        Schema.from_json({"tables": 3})


def test_update2_initial_insert_modify_delete() -> None:
    store = RowStore(SCHEMA, COLUMNS)
    changes = store.apply_update2(
        {
            "T": {
                "r1": {
                    "initial": {
                        "name": "a",
                        "tags": ["set", ["x", "y"]],
                        "ids": ["map", [["k", "1"], ["j", "2"]]],
                    }
                }
            }
        }
    )
    row = {"name": "a", "ref": (), "tags": ("x", "y"), "ids": {"k": "1", "j": "2"}, "n": 0}
    assert store.tables["T"]["r1"] == row
    assert changes[0].old is None and changes[0].new == row
    # a diff: tags toggle (y removed, z added), ids: k changed, j removed, m added
    store.apply_update2(
        {
            "T": {
                "r1": {
                    "modify": {
                        "tags": ["set", ["y", "z"]],
                        "ids": ["map", [["k", "9"], ["j", "2"], ["m", "3"]]],
                        "ref": ["uuid", "r9"],
                        "name": "b",
                    }
                }
            }
        }
    )
    assert store.tables["T"]["r1"] == {
        "name": "b",
        "ref": ("r9",),
        "tags": ("x", "z"),
        "ids": {"k": "9", "m": "3"},
        "n": 0,
    }
    # an optional reference that has a value gets the new value (what ovsdb-server sends)
    store.apply_update2({"T": {"r1": {"modify": {"ref": ["uuid", "r8"]}}}})
    assert store.tables["T"]["r1"]["ref"] == ("r8",)
    store.apply_update2({"T": {"r1": {"modify": {"ref": ["set", []]}}}})
    assert store.tables["T"]["r1"]["ref"] == ()
    changes = store.apply_update2({"T": {"r1": {"delete": None}}})
    assert store.tables["T"] == {} and changes[0].new is None and changes[0].old["name"] == "b"


def test_update2_errors() -> None:
    store = RowStore(SCHEMA, COLUMNS)
    with pytest.raises(DataError, match="modify of a row never inserted"):
        store.apply_update2({"T": {"r1": {"modify": {"name": "x"}}}})
    with pytest.raises(DataError, match="was not monitored"):
        store.apply_update2({"U": {}})
    with pytest.raises(DataError, match="without initial, insert, modify or delete"):
        store.apply_update2({"T": {"r1": {}}})


def test_update_old_and_new_rows() -> None:
    store = RowStore(SCHEMA, COLUMNS)
    store.apply_update({"T": {"r1": {"new": {"name": "a", "n": 3}}}})
    store.apply_update({"T": {"r1": {"old": {"n": 3}, "new": {"n": 4}}}})
    assert store.tables["T"]["r1"]["name"] == "a" and store.tables["T"]["r1"]["n"] == 4
    changes = store.apply_update({"T": {"r1": {"old": {"name": "a"}}}})
    assert store.tables["T"] == {} and changes[0].old["n"] == 4
