"""The default coalescer and the stored form of compacted entries."""

from __future__ import annotations

import pytest

from stream_gateway.streams import join_deltas
from stream_gateway.streams.base import compacted_entry, parse_compacted, parse_reset, reset_entry
from stream_gateway.streams.compaction import plan_entries


def test_join_deltas_joins_strings_and_delta_objects_only() -> None:
    assert join_deltas("Hel", "lo") == "Hello"
    part = {"type": "text-delta", "id": "t", "delta": "a"}
    assert join_deltas(part, {**part, "delta": "b"}) == {**part, "delta": "ab"}
    assert join_deltas({"text": "a"}, {"text": "b"}) == {"text": "ab"}
    assert join_deltas({"role": "x", "content": "a"}, {"role": "x", "content": "b"}) == {
        "role": "x",
        "content": "ab",
    }
    # Anything else stays apart.
    assert join_deltas(part, {**part, "id": "u", "delta": "b"}) is None  # another part
    assert join_deltas(part, {"type": "text-end", "id": "t"}) is None  # other keys
    assert join_deltas({"delta": 1}, {"delta": 2}) is None  # not text
    assert join_deltas({"n": 1}, {"n": 2}) is None
    assert join_deltas("a", {"delta": "b"}) is None
    assert join_deltas(1, 2) is None
    assert join_deltas(["a"], ["b"]) is None


def test_entries_round_trip_and_are_not_resets() -> None:
    entry = compacted_entry(42, b'{"delta":"a b"}')
    assert entry == b'#c 42 {"delta":"a b"}'
    assert parse_compacted(entry) == (42, b'{"delta":"a b"}')
    assert parse_reset(entry) is None
    assert parse_compacted(reset_entry(3)) is None
    for other in (b'"#c 1 x"', b"#c", b"#c x y", b"#c 1", b"{}"):
        assert parse_compacted(other) is None
    with pytest.raises(ValueError):
        compacted_entry(-1, b"1")


def test_plan_keeps_unjoined_chunks_byte_for_byte() -> None:
    stored = [b'{"b":1,"a":2}', b'"x"', b'"y"', reset_entry(1), b'"z"']
    # The reset at 3 voids "x" and "y": the live view is the object, then "z".
    assert plan_entries(stored, join_deltas) == [
        compacted_entry(0, b'{"b":1,"a":2}'),
        compacted_entry(4, b'"z"'),
    ]
