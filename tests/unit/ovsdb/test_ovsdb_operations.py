"""metaproxy.ovsdb.operations: the wire form of map mutations and the results check."""

import pytest

from metaproxy.ovsdb.operations import (
    TransactError,
    check_results,
    map_add,
    map_remove,
    map_set,
)

WHERE = [["name", "==", "c1"]]


def test_map_set_deletes_then_inserts_the_keys_in_one_mutate() -> None:
    op = map_set("Chassis_Private", WHERE, "external_ids", {"b": "2", "a": "1"})
    assert op == {
        "op": "mutate",
        "table": "Chassis_Private",
        "where": WHERE,
        "mutations": [
            ["external_ids", "delete", ["set", ["a", "b"]]],
            ["external_ids", "insert", ["map", [["a", "1"], ["b", "2"]]]],
        ],
    }


def test_map_add_only_inserts_and_map_remove_only_deletes() -> None:
    assert map_add("T", WHERE, "m", {"k": "v"})["mutations"] == [
        ["m", "insert", ["map", [["k", "v"]]]]
    ]
    assert map_remove("T", WHERE, "m", ["y", "x"])["mutations"] == [
        ["m", "delete", ["set", ["x", "y"]]]
    ]


def test_check_results_names_the_failed_operation() -> None:
    ops = [{"op": "insert", "table": "A"}, map_set("T", WHERE, "m", {"k": "v"})]
    with pytest.raises(TransactError, match=r"mutate on T where .* failed: constraint"):
        check_results(ops, [{"uuid": ["uuid", "x"]}, {"error": "constraint", "details": "d"}])


def test_check_results_requires_a_match_where_asked() -> None:
    ops = [map_set("T", WHERE, "m", {"k": "v"})]
    assert check_results(ops, [{"count": 1}], must_match=[0]) == [{"count": 1}]
    assert check_results(ops, [{"count": 0}]) == [{"count": 0}]
    with pytest.raises(TransactError, match="matched no row"):
        check_results(ops, [{"count": 0}], must_match=[0])
    with pytest.raises(TransactError, match="not a list"):
        check_results(ops, {"error": "x"})
