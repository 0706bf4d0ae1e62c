"""Where a stream lives in the database, and how its parts are encoded.

```
<root>/
  meta/<id>        {flow, status, length, created_at, updated_at, expires_at, owner,
                    lease_until, cancel_requested, stop_requested, terminal: {kind, payload},
                    extra, compacted, compacting}
  batches/<id>/
    000000000000   {"o": 0,  "n": 20, "c": ["<chunk json>", ...]}
    000000000020   {"o": 20, "n": 17, "c": [...]}
```

A compacted stream has one batch, ``000000000000``, holding its entries and marked
``"k": <entry count>`` (see `_compaction`).

Batch keys are first offsets zero-padded to 12 digits, so ``orderBy="$key"`` sorts them
in offset order (padded keys are never read as 32-bit integers, so all compare as
strings). Chunks and the terminal payload are kept as JSON *strings*: the database
would otherwise turn arrays into objects, drop empty containers and nulls, and read
``1.0`` back as ``1``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from stream_gateway import InvalidArgumentError
from stream_gateway.streams import StreamRecord, StreamStatus, Terminal

__all__ = [
    "KEY_DIGITS",
    "batch_key",
    "check_key",
    "check_root",
    "decode_batch",
    "decode_record",
    "encode_batch",
    "encode_entries",
    "encode_record",
    "is_entries",
]

KEY_DIGITS = 12
# A strict subset of what RTDB allows in a key (it forbids ". $ # [ ] /" and control
# characters): nothing that could change the meaning of a REST path or query.
_KEY = re.compile(r"[A-Za-z0-9_-]{1,768}")
_STATUSES = ("open", "done", "error", "cancelled")


def check_key(key: str) -> str:
    """Return ``key`` if it is safe as one path segment, else `InvalidArgumentError`."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise InvalidArgumentError(
            "malformed stream id: only A-Z, a-z, 0-9, '_' and '-' can be a database key"
        )
    return key


def check_root(root: str) -> str:
    """A root path such as ``"streams"`` or ``"apps/chat/streams"``; each segment a key."""
    segments = root.strip("/").split("/")
    for segment in segments:
        if not _KEY.fullmatch(segment):
            raise ValueError(f"invalid root {root!r}: segments must be [A-Za-z0-9_-]")
    return "/".join(segments)


def batch_key(offset: int) -> str:
    """The key of the batch whose first chunk is at ``offset``."""
    if not 0 <= offset < 10**KEY_DIGITS:
        raise InvalidArgumentError(f"offset {offset} out of range")
    return f"{offset:0{KEY_DIGITS}d}"


def encode_batch(offset: int, chunks: Sequence[bytes]) -> dict[str, Any]:
    return {"o": offset, "n": len(chunks), "c": [chunk.decode() for chunk in chunks]}


def encode_entries(entries: Sequence[bytes]) -> dict[str, Any]:
    """The batch at offset 0 of a compacted stream: its entries, marked with their count."""
    return {**encode_batch(0, entries), "k": len(entries)}


def is_entries(value: object) -> bool:
    """Whether a stored batch holds a compacted stream's entries."""
    return isinstance(value, Mapping) and isinstance(value.get("k"), int)


def decode_batch(value: object) -> tuple[int, list[bytes]] | None:
    """``(first offset, chunks)`` of a stored batch, or ``None`` if it is not one."""
    if not isinstance(value, Mapping):
        return None
    offset, raw = value.get("o"), value.get("c")
    if not isinstance(offset, int) or not isinstance(raw, list):
        return None
    if not all(isinstance(chunk, str) for chunk in raw) or value.get("n") != len(raw):
        return None
    return offset, [chunk.encode() for chunk in raw]


def encode_record(record: StreamRecord) -> dict[str, Any]:
    """The meta value of ``record``; absent fields are simply not stored (RTDB has no null)."""
    meta: dict[str, Any] = {
        "flow": record.flow,
        "status": record.status,
        "length": record.length,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "expires_at": record.expires_at,
        "cancel_requested": record.cancel_requested,
        "stop_requested": record.stop_requested,
    }
    if record.owner is not None:
        meta["owner"] = record.owner
    if record.lease_until is not None:
        meta["lease_until"] = record.lease_until
    if record.terminal is not None:
        meta["terminal"] = encode_terminal(record.terminal)
    if record.extra:
        meta["extra"] = json.dumps(record.extra, separators=(",", ":"), ensure_ascii=False)
    if record.compacted is not None:
        meta["compacted"] = record.compacted
    return meta


def encode_terminal(terminal: Terminal) -> dict[str, str]:
    return {"kind": terminal.kind, "payload": terminal.payload.decode()}


def decode_record(stream_id: str, meta: object) -> StreamRecord | None:
    """The record in a meta value; ``None`` when there is none.

    Tolerant of missing fields (a meta written by a newer version, or a stub left by a
    write that raced a purge): they take their defaults.
    """
    if not isinstance(meta, Mapping):
        return None
    status = meta.get("status")
    terminal = meta.get("terminal")
    return StreamRecord(
        stream_id=stream_id,
        flow=str(meta.get("flow", "")),
        created_at=_number(meta.get("created_at")),
        updated_at=_number(meta.get("updated_at")),
        expires_at=_number(meta.get("expires_at")),
        owner=_optional_str(meta.get("owner")),
        status=cast(StreamStatus, status) if status in _STATUSES else "open",
        length=int(_number(meta.get("length"))),
        lease_until=None if meta.get("lease_until") is None else _number(meta["lease_until"]),
        cancel_requested=meta.get("cancel_requested") is True,
        stop_requested=meta.get("stop_requested") is True,
        terminal=_decode_terminal(terminal),
        extra=_decode_extra(meta.get("extra")),
        compacted=_optional_int(meta.get("compacted")),
    )


def _decode_terminal(value: object) -> Terminal | None:
    if not isinstance(value, Mapping):
        return None
    kind, payload = value.get("kind"), value.get("payload")
    if kind not in ("done", "error", "cancelled") or not isinstance(payload, str):
        return None
    return Terminal(kind, payload.encode())


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _decode_extra(text: object) -> dict[str, Any]:
    value = json.loads(text) if isinstance(text, str) else None
    return value if isinstance(value, dict) else {}
