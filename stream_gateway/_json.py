"""JSON in one place: the compact encoding every stored chunk and wire frame uses."""

from __future__ import annotations

import json
import json.encoder
import math
from collections.abc import Callable, Iterable
from typing import Any

from ._errors import InvalidArgumentError

__all__ = ["JsonValue", "dumps", "error_json", "loads"]

JsonValue = Any
"""A value that `json.dumps` accepts (dicts, lists, str, int, float, bool, None)."""


def _unsupported(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


_encode_string: Callable[[str], str] = json.encoder.encode_basestring
# The stdlib builds a C encoder on every call; we build it once. Without its circular
# check (markers=None), a cycle ends in RecursionError, which dumps() reports.
_c_make_encoder: Callable[..., Callable[[Any, int], Iterable[str]]] | None = getattr(
    json.encoder, "c_make_encoder", None
)
_iterencode: Callable[[Any, int], Iterable[str]]
if _c_make_encoder is not None:
    _iterencode = _c_make_encoder(
        None, _unsupported, _encode_string, None, ":", ",", False, False, False
    )
else:  # a Python without the C accelerator
    _fallback = json.JSONEncoder(
        separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_unsupported
    )

    def _iterencode(value: Any, level: int) -> Iterable[str]:
        return _fallback.iterencode(value)


_CONSTANTS = {True: b"true", False: b"false"}


def dumps(value: JsonValue) -> bytes:
    """Encode compactly as UTF-8, as ``JSON.stringify`` would.

    The output never contains a raw newline (JSON escapes control characters in
    strings), which the stores rely on to pack a batch of chunks into one record.
    Raises `InvalidArgumentError` for values JSON cannot carry (NaN, sets, objects,
    cycles).
    """
    kind = type(value)
    try:
        if kind is str:  # the common chunk: a token
            return _encode_string(value).encode()
        if kind is int:
            return int.__repr__(value).encode()
        if kind is bool:
            return _CONSTANTS[value]
        if value is None:
            return b"null"
        return "".join(_iterencode(value, 0)).encode()
    except UnicodeEncodeError:
        pass  # a lone surrogate: below, escaped as JSON.stringify does (\ud800)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgumentError(f"value is not JSON-serializable: {exc}") from None
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgumentError(f"value is not JSON-serializable: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def loads(data: bytes | str) -> JsonValue:
    """Decode standard JSON; raises `InvalidArgumentError` on malformed input.

    Python's extensions ``NaN``, ``Infinity`` and ``-Infinity`` are refused: no
    JSON client can send or read them back. So are numbers too large for a double
    (``1e400``), which Python would otherwise turn into ``inf``.
    """
    try:
        return json.loads(data, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidArgumentError(f"malformed JSON: {exc}") from None


def error_json(status: str, message: str, details: Any = None) -> bytes:
    """``{"status", "message", "details"?}`` as JSON; never fails.

    Details that JSON cannot carry are dropped: an error must always reach its
    client, with or without them.
    """
    body: dict[str, Any] = {"status": status, "message": message}
    if details is not None:
        body["details"] = details
        try:
            return dumps(body)
        except InvalidArgumentError:
            del body["details"]
    return dumps(body)
