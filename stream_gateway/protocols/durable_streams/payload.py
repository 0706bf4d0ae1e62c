"""How protocol bytes and messages become stored chunks, and back.

Every stored chunk is compact JSON (the `StreamManager` contract). In JSON mode a
chunk is one message as sent. Otherwise a chunk holds a slice of the bytes appended:
a JSON string when the slice is UTF-8, else ``{"b": <base64>}``; one append may span
several chunks, so that no chunk outgrows the manager's chunk limit.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from ..._errors import InvalidArgumentError
from ..._json import dumps, loads
from .wire import ProtocolError

__all__ = ["decode_bytes", "encode_bytes", "json_messages", "json_array"]

#: Raw bytes per stored chunk: base64 or JSON escaping keeps it well under 256 KiB.
SLICE_BYTES = 32 * 1024


def encode_bytes(body: bytes) -> list[bytes]:
    """The chunks that store ``body`` (none for an empty body)."""
    chunks: list[bytes] = []
    for start in range(0, len(body), SLICE_BYTES):
        piece = body[start : start + SLICE_BYTES]
        try:
            chunks.append(dumps(piece.decode("utf-8")))
        except UnicodeDecodeError:
            chunks.append(b'{"b":"' + base64.b64encode(piece) + b'"}')
    return chunks


def decode_bytes(chunks: Iterable[bytes]) -> bytes:
    """The bytes stored in ``chunks``, in order."""
    parts: list[bytes] = []
    for raw in chunks:
        value = loads(raw)
        if isinstance(value, str):
            parts.append(value.encode("utf-8"))
        elif isinstance(value, dict) and isinstance(value.get("b"), str):
            try:
                parts.append(base64.b64decode(value["b"], validate=True))
            except binascii.Error:
                raise ValueError("a stored chunk is not valid base64") from None
        else:
            raise ValueError("a stored chunk is neither text nor base64 bytes")
    return b"".join(parts)


def json_messages(body: bytes, *, allow_empty: bool) -> list[bytes]:
    """The messages of a JSON-mode body: one level of an array flattened.

    400 for invalid JSON, and for an empty array unless ``allow_empty`` (a PUT may
    create an empty stream with ``[]``).
    """
    try:
        value = loads(body)
    except InvalidArgumentError:
        raise ProtocolError(400, "body is not valid JSON") from None
    if not isinstance(value, list):
        return [dumps(value)]
    if not value and not allow_empty:
        raise ProtocolError(400, "an empty JSON array appends nothing")
    return [dumps(item) for item in value]


def json_array(messages: Iterable[bytes]) -> bytes:
    """Messages as one JSON array."""
    return b"[" + b",".join(messages) + b"]"
