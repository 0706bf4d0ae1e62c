"""JSON in one place: the compact encoding every stored chunk and wire frame uses."""

from __future__ import annotations

import json
from typing import Any

from ._errors import InvalidArgumentError

__all__ = ["JsonValue", "dumps", "loads"]

JsonValue = Any
"""A value that `json.dumps` accepts (dicts, lists, str, int, float, bool, None)."""

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: JsonValue) -> bytes:
    """Encode compactly as UTF-8, as ``JSON.stringify`` would.

    The output never contains a raw newline (JSON escapes control characters in
    strings), which the stores rely on to pack a batch of chunks into one record.
    Raises `InvalidArgumentError` for values JSON cannot carry (NaN, sets, objects).
    """
    try:
        return _encoder.encode(value).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"value is not JSON-serializable: {exc}") from None


def loads(data: bytes | str) -> JsonValue:
    """Decode JSON; raises `InvalidArgumentError` on malformed input."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"malformed JSON: {exc}") from None
