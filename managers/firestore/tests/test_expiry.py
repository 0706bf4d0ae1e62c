"""Expiry: ``expires_at`` timestamps a TTL policy can use, and a purge that removes it all."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import anyio
import pytest

from stream_gateway import StreamNotFoundError
from stream_gateway.streams import StreamManager
from stream_gateway_firestore import FirestoreStreamStorage

pytestmark = pytest.mark.anyio

MakeStorage = Callable[..., FirestoreStreamStorage]


async def write_stream(manager: StreamManager, chunks: int, per_batch: int = 10) -> str:
    writer = await manager.open()
    for i in range(chunks):
        await writer.write(i)
        if i % per_batch == per_batch - 1:
            await writer.flush()
    await writer.done("end")
    return writer.stream_id


async def stored_expiries(
    storage: FirestoreStreamStorage, stream_id: str
) -> tuple[datetime | None, list[datetime]]:
    """The record's ``expires_at`` (None once the record is gone) and its batches'."""
    record = storage.client.collection("streams").document(stream_id)
    snap = await record.get()
    batches = [b.get("expires_at") async for b in record.collection("batches").stream()]
    return snap.get("expires_at"), batches


async def test_a_finished_stream_expires_and_purge_removes_record_and_batches(
    make_storage: MakeStorage,
) -> None:
    storage = make_storage()
    async with (
        StreamManager(storage, ttl=0.5, flush_interval=60) as short,
        StreamManager(make_storage(), ttl=3600, flush_interval=60) as long,
    ):
        gone = await write_stream(short, 30)
        kept = await write_stream(long, 5)
        record_expiry, batch_expiries = await stored_expiries(storage, gone)
        # Firestore timestamps, and no batch expires before its record (safe for a TTL policy).
        assert isinstance(record_expiry, datetime) and len(batch_expiries) == 3
        assert all(expiry >= record_expiry for expiry in batch_expiries)

        await anyio.sleep(0.7)
        with pytest.raises(StreamNotFoundError):
            await short.info(gone)
        assert await short.purge() == 1
        assert await storage.load(gone) is None
        assert await stored_expiries(storage, gone) == (None, [])
        assert (await long.info(kept)).length == 5


async def test_purge_pages_through_many_batches(make_storage: MakeStorage) -> None:
    storage = make_storage()
    async with StreamManager(storage, ttl=0.2) as manager:
        sid = await write_stream(manager, 1)
        batches = storage.client.collection("streams").document(sid).collection("batches")
        for start in range(1, 1201, 400):  # 1,200 more batch documents, written directly
            write = storage.client.batch()
            for offset in range(start, start + 400):
                write.set(batches.document(f"{offset:012d}"), {"offset": offset, "count": 1})
            await write.commit()
        await anyio.sleep(0.3)
        assert await manager.purge() == 1
        assert [doc async for doc in batches.limit(1).stream()] == []


async def test_batches_are_restamped_when_a_stream_outlives_their_expiry(
    make_storage: MakeStorage,
) -> None:
    # A margin of 0 makes every renewal push the stream's expiry past its batches'.
    storage = make_storage(batch_expiry_margin=0.0)
    async with StreamManager(storage, lease=0.3, ttl=60, flush_interval=60) as manager:
        writer = await manager.open()
        for i in range(20):
            await writer.write(i)
            if i % 5 == 4:
                await writer.flush()
        await anyio.sleep(0.5)  # renewals (every 0.1 s) move the record's expiry on
        record_expiry, batch_expiries = await stored_expiries(storage, writer.stream_id)
        assert isinstance(record_expiry, datetime) and len(batch_expiries) == 4
        assert all(expiry >= record_expiry for expiry in batch_expiries)
        await writer.done(None)
        record_expiry, batch_expiries = await stored_expiries(storage, writer.stream_id)
        assert isinstance(record_expiry, datetime)
        assert all(expiry >= record_expiry for expiry in batch_expiries)
