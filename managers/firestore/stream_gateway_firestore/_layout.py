"""How streams map onto Firestore documents (see the README for the picture).

``{collection}/{stream_id}`` holds the record (everything but the chunks);
``{collection}/{stream_id}/batches/{first offset, 12 digits}`` holds consecutive chunks.
Batch documents are immutable once written: a retry rewrites the same content. A
compacted stream's entries replace them (`_compaction`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

from stream_gateway import ResourceExhaustedError
from stream_gateway.streams import StreamRecord, StreamStatus, Terminal, validate_stream_id

from ._google import from_timestamp, to_timestamp

__all__ = [
    "BATCHES",
    "MAX_BATCH_BYTES",
    "Batch",
    "batch_id",
    "check_stream_id",
    "commit_groups",
    "decode_chunks",
    "plan_batches",
    "record_fields",
    "record_from_fields",
    "terminal_fields",
]

BATCHES = "batches"
#: A batch document's chunk payload stays under this, well inside Firestore's 1 MiB.
MAX_BATCH_BYTES = 900 * 1024
#: The largest chunk that fits one document on its own.
MAX_CHUNK_BYTES = 1_000_000
#: Batch documents written in one commit stay under this (Firestore takes 10 MiB).
COMMIT_BYTES = 8 * 1024 * 1024
WRITES_PER_COMMIT = 500

_STATUSES: tuple[str, ...] = get_args(StreamStatus)


def check_stream_id(stream_id: object) -> str:
    """Return ``stream_id`` if it is safe as a document id, else raise `InvalidArgumentError`.

    Checked here too, not only by the manager, so that no path can put ``/`` (a
    sub-path) or a reserved ``__x__`` id into a document path.
    """
    return validate_stream_id(stream_id)


def batch_id(offset: int) -> str:
    """The batch document id: the first offset, zero-padded so ids sort as offsets do."""
    return f"{offset:012d}"


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive chunks starting at ``offset``: one batch document."""

    offset: int
    chunks: Sequence[bytes]

    @property
    def end(self) -> int:
        return self.offset + len(self.chunks)

    @property
    def nbytes(self) -> int:
        return sum(map(len, self.chunks)) + len(self.chunks)

    def fields(self, expires_at: datetime) -> dict[str, Any]:
        """The document body. Chunks are one newline-joined blob (compact JSON has no raw
        newline); a batch holding a chunk with a raw newline is stored as a list instead."""
        chunks: bytes | list[bytes]
        if any(b"\n" in raw for raw in self.chunks):
            chunks = list(self.chunks)
        else:
            chunks = b"\n".join(self.chunks)
        return {
            "offset": self.offset,
            "count": len(self.chunks),
            "chunks": chunks,
            "expires_at": expires_at,
        }


def plan_batches(offset: int, chunks: Sequence[bytes], counts: Sequence[int] = ()) -> list[Batch]:
    """Split ``chunks`` into documents of at most `MAX_BATCH_BYTES` each.

    ``counts`` replays the split of an earlier attempt at the same offset, so that a
    retry carrying more chunks rewrites the same documents instead of growing one.
    """
    batches: list[Batch] = []
    start = 0
    for count in counts:
        if count <= 0 or start + count > len(chunks):
            break
        batches.append(Batch(offset + start, chunks[start : start + count]))
        start += count
    current: list[bytes] = []
    size = 0
    for raw in chunks[start:]:
        if len(raw) > MAX_CHUNK_BYTES:
            raise ResourceExhaustedError(
                f"chunk of {len(raw)} bytes does not fit a Firestore document",
                details={"limit": MAX_CHUNK_BYTES, "size": len(raw)},
            )
        if current and size + len(raw) + 1 > MAX_BATCH_BYTES:
            batches.append(Batch(offset + start, current))
            start += len(current)
            current, size = [], 0
        current.append(raw)
        size += len(raw) + 1
    if current:
        batches.append(Batch(offset + start, current))
    return batches


def commit_groups(plan: Sequence[Batch]) -> Iterator[list[Batch]]:
    """Consecutive batches grouped into commits that fit Firestore's request limits."""
    group: list[Batch] = []
    size = 0
    for batch in plan:
        if group and (size + batch.nbytes > COMMIT_BYTES or len(group) >= WRITES_PER_COMMIT):
            yield group
            group, size = [], 0
        group.append(batch)
        size += batch.nbytes
    if group:
        yield group


def decode_chunks(fields: dict[str, Any]) -> tuple[int, list[bytes]]:
    """A batch document's first offset and chunks; raises `ValueError` if it is corrupt."""
    offset, count, value = int(fields["offset"]), int(fields["count"]), fields["chunks"]
    if isinstance(value, bytes):
        chunks = value.split(b"\n") if count else []
    else:
        chunks = [bytes(raw) for raw in value]
    if len(chunks) != count:
        raise ValueError(f"batch at offset {offset} holds {len(chunks)} chunks, expected {count}")
    return offset, chunks


def record_fields(record: StreamRecord, create_token: str) -> dict[str, Any]:
    """The record document's body. ``create_token`` lets a retried create recognise itself."""
    lease = record.lease_until
    return {
        "flow": record.flow,
        "status": record.status,
        "length": record.length,
        "created_at": to_timestamp(record.created_at),
        "updated_at": to_timestamp(record.updated_at),
        "expires_at": to_timestamp(record.expires_at),
        "owner": record.owner,
        "lease_until": None if lease is None else to_timestamp(lease),
        "cancel_requested": record.cancel_requested,
        "stop_requested": record.stop_requested,
        "terminal": terminal_fields(record.terminal),
        "extra": dict(record.extra),
        "create_token": create_token,
        "compacted": record.compacted,
    }


def terminal_fields(terminal: Terminal | None) -> dict[str, Any] | None:
    return None if terminal is None else {"kind": terminal.kind, "payload": terminal.payload}


def record_from_fields(stream_id: str, fields: dict[str, Any]) -> StreamRecord:
    """Rebuild a record from its document. ``length`` is as stored (maybe stale)."""
    status = fields.get("status", "open")
    if status not in _STATUSES:
        raise ValueError(f"stream {stream_id} has an unknown status {status!r}")
    terminal = fields.get("terminal")
    lease = fields.get("lease_until")
    return StreamRecord(
        stream_id=stream_id,
        flow=fields.get("flow") or "",
        created_at=from_timestamp(fields["created_at"]),
        updated_at=from_timestamp(fields["updated_at"]),
        expires_at=from_timestamp(fields["expires_at"]),
        owner=fields.get("owner"),
        status=status,
        length=int(fields.get("length") or 0),
        lease_until=None if lease is None else from_timestamp(lease),
        cancel_requested=bool(fields.get("cancel_requested")),
        stop_requested=bool(fields.get("stop_requested")),
        terminal=None
        if terminal is None
        else Terminal(terminal["kind"], bytes(terminal["payload"])),
        extra=dict(fields.get("extra") or {}),
        compacted=fields.get("compacted"),
    )
