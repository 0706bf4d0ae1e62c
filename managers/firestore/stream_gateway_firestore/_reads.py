"""Reading chunks back: only the batch documents a read needs, checked for gaps.

A compacted stream's entry documents carry ``compacted`` (see `_compaction`). While the
old batches are being deleted (or after a compaction that died before deleting them),
a read may meet both kinds: once it sees an entry document, or a gap, it reads the
entries alone, so that it never returns old chunks and entries together.
"""

from __future__ import annotations

import contextlib
from typing import Any

from google.cloud.firestore_v1 import AsyncCollectionReference, Query
from google.cloud.firestore_v1.base_query import FieldFilter

from stream_gateway import StreamNotFoundError

from ._google import translated
from ._layout import batch_id, decode_chunks

__all__ = ["last_end", "read_chunks"]


async def read_chunks(
    batches: AsyncCollectionReference, offset: int, limit: int, *, rpc_timeout: float
) -> list[bytes]:
    """Up to ``limit`` chunks from ``offset`` on, in order.

    One query for the batches that start in ``[offset, offset + limit)``; when none
    starts exactly at ``offset``, one more for the batch holding it. Nothing before
    that batch is ever read. A hole in the batches raises `StreamNotFoundError`
    rather than returning a stream that silently skips.
    """
    if limit <= 0:
        return []
    stop = offset + limit
    window = (
        batches.where(filter=FieldFilter("offset", ">=", offset))
        .where(filter=FieldFilter("offset", "<", stop))
        .order_by("offset")
    )
    with translated("reading chunks"):
        docs = [
            snap.to_dict() or {} async for snap in window.stream(retry=None, timeout=rpc_timeout)
        ]
        if not docs or int(docs[0]["offset"]) != offset:
            docs[:0] = await _batch_holding(batches, offset, rpc_timeout=rpc_timeout)
        marked = [fields for fields in docs if "compacted" in fields]
        if marked:
            # Usually the entry documents read are all that is needed; else read by id.
            end = min(stop, int(marked[0]["compacted"]))
            with contextlib.suppress(StreamNotFoundError):
                found = assemble(marked, offset, end)
                if len(found) == max(end - offset, 0):
                    return found
            return await _read_entries(batches, offset, stop, rpc_timeout=rpc_timeout) or []
        try:
            return assemble(docs, offset, stop)
        except StreamNotFoundError:
            # Batches deleted underneath by a compaction, or really lost.
            compacted = await _read_entries(batches, offset, stop, rpc_timeout=rpc_timeout)
            if compacted is None:
                raise
            return compacted


async def _read_entries(
    batches: AsyncCollectionReference, offset: int, stop: int, *, rpc_timeout: float
) -> list[bytes] | None:
    """The entries of a compacted stream in ``[offset, stop)``, read by document id from
    the first entry document's ``parts``; ``None`` if the stream is not compacted."""
    first = await batches.document(batch_id(0)).get(retry=None, timeout=rpc_timeout)
    fields = first.to_dict() or {}
    if not first.exists or "compacted" not in fields:
        return None
    stop = min(stop, int(fields["compacted"]))
    parts = [int(p) for p in fields["parts"]]
    ends = [*parts[1:], stop]
    docs = [fields]
    for start, end in zip(parts[1:], ends[1:], strict=True):
        if start >= stop:
            break
        if end > offset:
            snap = await batches.document(batch_id(start)).get(retry=None, timeout=rpc_timeout)
            if not snap.exists:
                break  # purged meanwhile: fewer chunks
            docs.append(snap.to_dict() or {})
    try:
        return assemble(docs, offset, stop)
    except StreamNotFoundError:
        return []  # being purged


async def _batch_holding(
    batches: AsyncCollectionReference, offset: int, *, rpc_timeout: float
) -> list[dict[str, Any]]:
    """The batch that starts before ``offset`` and holds it: ``[]`` or one document.

    Asks for the previous batch's bounds first, so that a reader that has caught up
    (the usual case) never downloads a batch it already has.
    """
    previous = (
        batches.where(filter=FieldFilter("offset", "<", offset))
        .order_by("offset", direction=Query.DESCENDING)
        .select(["offset", "count"])
        .limit(1)
    )
    bounds = [
        snap.to_dict() or {} async for snap in previous.stream(retry=None, timeout=rpc_timeout)
    ]
    if not bounds or int(bounds[0]["offset"]) + int(bounds[0]["count"]) <= offset:
        return []
    holder = batches.document(batch_id(int(bounds[0]["offset"])))
    snap = await holder.get(retry=None, timeout=rpc_timeout)
    return [snap.to_dict() or {}] if snap.exists else []


def assemble(docs: list[dict[str, Any]], offset: int, stop: int) -> list[bytes]:
    """The chunks in ``[offset, stop)`` from batch documents in offset order."""
    out: list[bytes] = []
    position = offset
    for fields in docs:
        start, chunks = decode_chunks(fields)
        if start + len(chunks) <= position:
            continue
        if start > position:
            raise StreamNotFoundError(
                f"stream not found: its chunks from offset {position} are gone (expired or lost)"
            )
        out.extend(chunks[position - start : stop - start])
        position = min(start + len(chunks), stop)
        if position >= stop:
            break
    return out


async def last_end(batches: AsyncCollectionReference, *, rpc_timeout: float) -> int:
    """The offset just past the last committed chunk, from the newest batch's bounds."""
    newest = (
        batches.select(["offset", "count"]).order_by("offset", direction=Query.DESCENDING).limit(1)
    )
    with translated("finding a stream's length"):
        found = [
            snap.to_dict() or {} async for snap in newest.stream(retry=None, timeout=rpc_timeout)
        ]
    return int(found[0]["offset"]) + int(found[0]["count"]) if found else 0
