"""Bulk work on whole streams: purging expired ones, re-stamping batch expiries.

Both run in pages and commit in batched writes of at most `WRITES_PER_COMMIT`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from google.cloud.firestore_v1 import AsyncClient, AsyncDocumentReference
from google.cloud.firestore_v1.base_query import FieldFilter

from ._google import translated
from ._layout import BATCHES, WRITES_PER_COMMIT

__all__ = ["delete_expired", "restamp_batches"]

_PAGE = 500


async def delete_expired(
    client: AsyncClient, collection: str, now: datetime, *, rpc_timeout: float
) -> int:
    """Delete every stream whose ``expires_at`` is at or before ``now``; return how many.

    Batches go first and the record last, so a purge cut short leaves a stream that
    is still found expired (and purged) next time, never orphaned batches.
    """
    expired = (
        client.collection(collection)
        .where(filter=FieldFilter("expires_at", "<=", now))
        .select([])
        .limit(_PAGE)
    )
    removed = 0
    while True:
        with translated("listing expired streams"):
            records = [
                snap.reference async for snap in expired.stream(retry=None, timeout=rpc_timeout)
            ]
        for record in records:
            await _delete_stream(client, record, rpc_timeout=rpc_timeout)
        removed += len(records)
        if len(records) < _PAGE:
            return removed


async def _delete_stream(
    client: AsyncClient, record: AsyncDocumentReference, *, rpc_timeout: float
) -> None:
    page = record.collection(BATCHES).select([]).limit(_PAGE)
    while True:
        with translated("listing batches to delete"):
            refs = [snap.reference async for snap in page.stream(retry=None, timeout=rpc_timeout)]
        last = len(refs) < _PAGE
        await _commit_deletes(client, [*refs, record] if last else refs, rpc_timeout=rpc_timeout)
        if last:
            return


async def _commit_deletes(
    client: AsyncClient, refs: Sequence[AsyncDocumentReference], *, rpc_timeout: float
) -> None:
    for start in range(0, len(refs), WRITES_PER_COMMIT):
        batch = client.batch()
        for ref in refs[start : start + WRITES_PER_COMMIT]:
            batch.delete(ref)
        with translated("deleting expired streams"):
            await batch.commit(retry=None, timeout=rpc_timeout)


async def restamp_batches(
    client: AsyncClient, record: AsyncDocumentReference, expires_at: datetime, *, rpc_timeout: float
) -> int:
    """Set ``expires_at`` on every batch of a stream; return how many were written.

    Only needed for a stream that outlives the margin its batches were stamped with,
    so that a TTL policy never deletes the batches of a stream still readable.
    """
    query = record.collection(BATCHES).select(["offset"]).order_by("offset").limit(_PAGE)
    written = 0
    last: int | None = None
    while True:
        page = query if last is None else query.start_after({"offset": last})
        with translated("listing batches to re-stamp"):
            snaps = [snap async for snap in page.stream(retry=None, timeout=rpc_timeout)]
        if not snaps:
            return written
        batch = client.batch()
        for snap in snaps:
            batch.update(snap.reference, {"expires_at": expires_at})
        with translated("re-stamping batch expiries"):
            await batch.commit(retry=None, timeout=rpc_timeout)
        written += len(snaps)
        last = int(snaps[-1].get("offset"))
