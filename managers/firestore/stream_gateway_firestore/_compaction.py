"""Compaction: a finished stream's batches replaced by a few entry documents.

The entries go where the first batches were (``batches/000000000000`` on, the same
document shape), each marked ``compacted: <entry count>``; the one at offset 0 also
lists where every entry document starts (``parts``). They are written in the same
batched write as the record's ``compacted`` field, under a ``last_update_time``
precondition on the record, together with the deletion of the old batches that start
below the entry count: the stream is compacted wholly or not at all, and no old chunk
is left at an offset an entry now holds. The old batches left over (from the entry
count on) are deleted afterwards, newest first, in batched deletes; a process that
dies in between leaves them to `purge` (a later `compact` call also finishes the job).
Readers tell the two apart by the mark (see `_reads`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud.firestore_v1 import AsyncClient, AsyncDocumentReference, Query
from google.cloud.firestore_v1.base_query import FieldFilter

from stream_gateway import InvalidArgumentError, ResourceExhaustedError, UnavailableError

from ._google import from_timestamp, to_timestamp, translated
from ._layout import BATCHES, WRITES_PER_COMMIT, Batch, batch_id, commit_groups, plan_batches

__all__ = ["compact_stream", "delete_leftovers"]

_ATTEMPTS = 5
_PAGE = 500


def _plan(length: int, entries: list[bytes]) -> list[Batch]:
    if not 1 <= len(entries) <= length:
        raise InvalidArgumentError("a compaction stores between 1 and `length` entries")
    plan = plan_batches(0, entries)
    if len(list(commit_groups(plan))) > 1 or len(plan) >= WRITES_PER_COMMIT:
        raise ResourceExhaustedError(
            "the compacted entries do not fit one Firestore commit (8 MiB): the stream "
            "stays as it is"
        )
    return plan


def _entry_fields(
    batch: Batch, expires_at: datetime, count: int, parts: list[int]
) -> dict[str, Any]:
    fields = batch.fields(expires_at)
    fields["compacted"] = count
    if batch.offset == 0:
        fields["parts"] = parts
    return fields


async def compact_stream(
    client: AsyncClient,
    record: AsyncDocumentReference,
    length: int,
    entries: list[bytes],
    *,
    batch_expiry_margin: float,
    rpc_timeout: float,
) -> bool:
    """Mark the record and write the entries in one batched write, if the stream is
    finished, at ``length`` and not compacted; then delete the old batches."""
    plan = _plan(length, entries)
    parts = [batch.offset for batch in plan]
    batches = record.collection(BATCHES)
    for _ in range(_ATTEMPTS):
        with translated("loading a stream"):
            snap = await record.get(retry=None, timeout=rpc_timeout)
        stored = snap.to_dict() or {}
        if not snap.exists or stored.get("status", "open") == "open":
            return False
        if stored.get("compacted") is not None:
            # Finish what a compaction that died part-way left (usually nothing).
            await delete_leftovers(client, record, rpc_timeout=rpc_timeout)
            return False
        if int(stored.get("length") or 0) != length:
            return False
        expiry = to_timestamp(from_timestamp(stored["expires_at"]) + batch_expiry_margin)
        covered = await _covered(record, len(entries), set(parts), rpc_timeout=rpc_timeout)
        if len(plan) + len(covered) >= WRITES_PER_COMMIT:
            raise ResourceExhaustedError(
                "the compacted entries and the batches they replace do not fit one "
                "Firestore commit (500 writes): the stream stays as it is"
            )
        write = client.batch()
        guard = client.write_option(last_update_time=snap.update_time)
        write.update(record, {"compacted": len(entries)}, option=guard)
        for batch in plan:
            fields = _entry_fields(batch, expiry, len(entries), parts)
            write.set(batches.document(batch_id(batch.offset)), fields)
        for ref in covered:
            write.delete(ref)
        try:
            with translated("compacting a stream"):
                await write.commit(retry=None, timeout=rpc_timeout)
        except gexc.FailedPrecondition:
            continue  # the record changed meanwhile (another compaction): look again
        except gexc.NotFound:
            return False  # purged meanwhile
        break
    else:
        raise UnavailableError("compaction kept racing other writes to the stream record")
    await delete_leftovers(client, record, rpc_timeout=rpc_timeout)
    return True


async def _covered(
    record: AsyncDocumentReference, count: int, parts: set[int], *, rpc_timeout: float
) -> list[AsyncDocumentReference]:
    """The old batches starting below ``count`` that no entry document replaces: they
    go in the same commit, so that no read below ``count`` ever finds an old chunk."""
    query = (
        record.collection(BATCHES)
        .where(filter=FieldFilter("offset", "<", count))
        .select(["offset"])
    )
    with translated("listing the batches to compact"):
        snaps = [snap async for snap in query.stream(retry=None, timeout=rpc_timeout)]
    return [s.reference for s in snaps if int((s.to_dict() or {})["offset"]) not in parts]


async def delete_leftovers(
    client: AsyncClient, record: AsyncDocumentReference, *, rpc_timeout: float
) -> int:
    """Delete a compacted stream's batches that are not entries, newest first (so the
    batches still there are always one run); return how many."""
    query = (
        record.collection(BATCHES)
        .select(["offset", "compacted"])
        .order_by("offset", direction=Query.DESCENDING)
        .limit(_PAGE)
    )
    deleted = 0
    last: int | None = None
    for _ in range(1_000_000 // _PAGE):  # bounded: a million batches
        page = query if last is None else query.start_after({"offset": last})
        with translated("listing batches to delete"):
            snaps = [snap async for snap in page.stream(retry=None, timeout=rpc_timeout)]
        doomed = [s.reference for s in snaps if (s.to_dict() or {}).get("compacted") is None]
        for start in range(0, len(doomed), WRITES_PER_COMMIT):
            write = client.batch()
            for ref in doomed[start : start + WRITES_PER_COMMIT]:
                write.delete(ref)
            with translated("deleting compacted batches"):
                await write.commit(retry=None, timeout=rpc_timeout)
        deleted += len(doomed)
        if len(snaps) < _PAGE:
            break
        last = int((snaps[-1].to_dict() or {})["offset"])
    return deleted
