"""The one JSON encoding: byte-identical to compact ``json.dumps``, errors as our own."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_gateway import InvalidArgumentError
from stream_gateway._json import dumps, loads

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


@given(json_values)
def test_matches_compact_json_dumps(value: Any) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    encoded = dumps(value)
    assert encoded == expected
    assert b"\n" not in encoded
    assert loads(encoded) == value


def test_values_json_cannot_carry_are_invalid_arguments() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    for bad in [float("nan"), float("inf"), {1, 2}, object(), {"a": object()}, cycle]:
        with pytest.raises(InvalidArgumentError):
            dumps(bad)
    for malformed in [b"{nope", b"[NaN]", b'{"a": Infinity}', b"-Infinity", b"1e400"]:
        with pytest.raises(InvalidArgumentError):
            loads(malformed)


def test_numbers_beyond_a_double_are_refused_not_infinite() -> None:
    for text in [b"1e400", b"-1e400", b'{"delay": 1.5e309}', b"[1E+999]"]:
        with pytest.raises(InvalidArgumentError, match="out of range"):
            loads(text)
    # Within range, tiny and huge-but-finite values still decode exactly as Python does.
    assert loads(b"[1e308, -1e-400, 2.5, 10000000000000000000000]") == [
        1e308,
        -0.0,
        2.5,
        10**22,
    ]
