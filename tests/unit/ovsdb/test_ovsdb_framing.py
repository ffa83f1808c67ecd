"""metaproxy.ovsdb.framing: concatenated JSON values, bytes in, values out."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metaproxy.ovsdb.framing import FramingError, JsonSplitter


def test_two_values_in_one_chunk() -> None:
    s = JsonSplitter()
    assert s.feed(b'{"id":1}[2,3]') == [b'{"id":1}', b"[2,3]"]
    assert s.pending == 0


def test_value_split_across_chunks_and_whitespace_between() -> None:
    s = JsonSplitter()
    assert s.feed(b'  {"a": [1, {"b"') == []
    assert s.feed(b': 2}]}\n {"c"') == [b'{"a": [1, {"b": 2}]}']
    assert s.feed(b":3}") == [b'{"c":3}']


def test_brackets_and_quotes_inside_strings_do_not_count() -> None:
    s = JsonSplitter()
    text = b'{"k": "}]{[ \\" \\\\"}'
    assert s.feed(text) == [text]
    assert json.loads(text) == {"k": '}]{[ " \\'}


def test_escape_at_the_end_of_a_chunk() -> None:
    s = JsonSplitter()
    assert s.feed(b'{"k": "a\\') == []
    assert s.feed(b'"}') == []  # the escaped quote and the brace are in the string
    assert s.feed(b'"}') == [b'{"k": "a\\"}"}']


def test_escape_split_exactly_after_the_backslash_yields_the_whole_value() -> None:
    s = JsonSplitter()
    out = s.feed(b'{"k": "a\\') + s.feed(b'""}')
    assert out == [b'{"k": "a\\""}']
    assert json.loads(out[0]) == {"k": 'a"'}


def test_a_scalar_at_top_level_is_refused() -> None:
    with pytest.raises(FramingError, match="expected a JSON object or array"):
        JsonSplitter().feed(b"42")


def test_a_value_over_the_limit_is_refused() -> None:
    s = JsonSplitter(max_bytes=16)
    with pytest.raises(FramingError, match="larger than 16 bytes"):
        s.feed(b'{"k": "' + b"x" * 32)


@given(
    st.lists(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(),
            lambda inner: (
                st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3)
            ),
            max_leaves=8,
        ).filter(lambda v: isinstance(v, (list, dict))),
        min_size=1,
        max_size=4,
    ),
    st.integers(min_value=1, max_value=7),
)
def test_any_values_cut_anywhere_come_back_whole(values, step) -> None:
    stream = b"".join(json.dumps(v).encode() + b"\n" for v in values)
    s = JsonSplitter()
    out = []
    for i in range(0, len(stream), step):
        out += s.feed(stream[i : i + step])
    assert [json.loads(v) for v in out] == values
