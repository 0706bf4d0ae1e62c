"""Compaction in Firestore: entry documents in place of the batches, its conditions, the
footprint, readers racing it, and a process that dies before deleting the old batches."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from google.cloud.firestore_v1 import AsyncClient

from stream_gateway import InvalidArgumentError
from stream_gateway.streams import StreamFilter, StreamRecord, Terminal
from stream_gateway_firestore import FirestoreStreamStorage, _compaction
from stream_gateway_firestore._google import to_timestamp
from stream_gateway_firestore._layout import Batch, batch_id

pytestmark = pytest.mark.anyio
MakeStorage = Callable[..., FirestoreStreamStorage]
RESULT = Terminal("done", b'{"answer":"ok"}')


@asynccontextmanager
async def started(make: MakeStorage, **options: Any) -> AsyncIterator[FirestoreStreamStorage]:
    storage = make(**options)
    await storage.start()
    try:
        yield storage
    finally:
        await storage.close()


def entry(start: int, raw: bytes) -> bytes:
    """A compacted entry's stored form (as the manager makes it)."""
    return b"#c " + str(start).encode() + b" " + raw


def token(i: int) -> bytes:
    return json.dumps({"delta": f"word{i} "}, separators=(",", ":")).encode()


def summary(length: int, pieces: int) -> list[bytes]:
    """``pieces`` entries standing for ``length`` chunks (contents do not matter here)."""
    step = length // pieces
    return [entry(p * step, b'{"delta":"' + b"x" * 40 + b'"}') for p in range(pieces)]


async def finished_stream(
    storage: FirestoreStreamStorage, sid: str, length: int, batch: int = 10
) -> list[bytes]:
    """A finished stream of ``length`` chunks written in batches of ``batch``."""
    await storage.create(StreamRecord(sid, "f", 1000.0, 1000.0, 9000.0, lease_until=1010.0))
    chunks = [token(i) for i in range(length)]
    for first in range(0, length, batch):
        await storage.append(sid, first, chunks[first : first + batch])
    await storage.finish(sid, length, RESULT, now=1500.0, expires_at=9500.0)
    return chunks


async def stored_batches(storage: FirestoreStreamStorage, sid: str, length: int) -> None:
    """The batch documents ``append`` writes for ``length`` chunks flushed 10 at a time,
    committed 250 to a write to keep the test short; the record says ``length``."""
    record = storage.client.collection("streams").document(sid)
    stamp = to_timestamp(9500.0 + storage.batch_expiry_margin)
    plan = [
        Batch(first, [token(i) for i in range(first, first + 10)]) for first in range(0, length, 10)
    ]
    for start in range(0, len(plan), 250):
        write = storage.client.batch()
        for batch in plan[start : start + 250]:
            write.set(
                record.collection("batches").document(batch_id(batch.offset)), batch.fields(stamp)
            )
        await write.commit()
    await record.update({"length": length})


async def footprint(client: AsyncClient, sid: str) -> tuple[int, int]:
    """(batch documents, bytes of their ``chunks``) the stream holds."""
    batches = client.collection("streams").document(sid).collection("batches")
    docs = [snap.to_dict() or {} async for snap in batches.stream()]
    return len(docs), sum(len(fields["chunks"]) for fields in docs)


async def test_entries_replace_the_batches_and_the_record_is_marked(
    make_storage: MakeStorage,
) -> None:
    sid = "compact-stream-00001"
    entries = [entry(0, b'"abc"'), entry(3, b'{"tool":1}'), entry(4, b'"de"')]
    async with started(make_storage) as storage:
        await finished_stream(storage, sid, 6, batch=2)
        before = await storage.load(sid)
        assert before is not None and before.compacted is None
        assert await storage.compact(sid, 6, entries) is True
        assert await storage.read(sid, 0, 10) == entries
        assert await storage.read(sid, 2, 10) == entries[2:]
        assert await storage.read(sid, 3, 10) == []
        after = await storage.load(sid)
        listed = (await storage.list_streams(StreamFilter())).records
        batches = storage.client.collection("streams").document(sid).collection("batches")
        docs = {snap.id: snap.to_dict() async for snap in batches.stream()}
    assert after == replace(before, compacted=3)  # nothing else moved
    assert [(r.stream_id, r.compacted, r.length) for r in listed] == [(sid, 3, 6)]
    assert list(docs) == ["000000000000"]
    stored = docs["000000000000"]
    assert (stored["offset"], stored["count"], stored["compacted"]) == (0, 3, 3)
    assert (stored["chunks"], stored["parts"]) == (b"\n".join(entries), [0])
    assert stored["expires_at"].timestamp() == 9500.0 + storage.batch_expiry_margin


async def test_compaction_is_refused_unless_finished_uncompacted_and_at_its_length(
    make_storage: MakeStorage,
) -> None:
    done, live = "refused-done-000001", "refused-open-000001"
    one = [entry(0, b'"x"')]
    async with started(make_storage) as storage:
        chunks = await finished_stream(storage, done, 4)
        await storage.create(StreamRecord(live, "f", 1000.0, 1000.0, 9000.0, lease_until=1e4))
        await storage.append(live, 0, [b"1", b"2"])
        assert await storage.compact("unknown-stream-00001", 4, one) is False
        assert await storage.compact(live, 2, one) is False
        assert await storage.compact(done, 5, one) is False
        assert await storage.compact(done, 3, one) is False
        assert await storage.read(done, 0, 10) == chunks
        assert await storage.read(live, 0, 10) == [b"1", b"2"]
        assert await storage.compact(done, 4, one) is True
        assert await storage.compact(done, 4, [entry(0, b'"y"')]) is False
        assert await storage.read(done, 0, 10) == one
        with pytest.raises(InvalidArgumentError, match="between 1"):
            await storage.compact(done, 4, [])


async def test_a_long_stream_shrinks_to_one_document(make_storage: MakeStorage) -> None:
    sid = "long-stream-0000001"
    async with started(make_storage) as storage:
        await finished_stream(storage, sid, 10)
        await stored_batches(storage, sid, 5000)
        docs_before, bytes_before = await footprint(storage.client, sid)
        entries = summary(5000, 3)
        assert await storage.compact(sid, 5000, entries) is True
        docs_after, bytes_after = await footprint(storage.client, sid)
        assert await storage.read(sid, 0, 5000) == entries
    print(f"\nfirestore 5,000 chunks: {docs_before} documents / {bytes_before} bytes -> "
          f"{docs_after} document / {bytes_after} bytes")  # fmt: skip
    assert (docs_before, docs_after) == (500, 1)
    assert bytes_after == sum(map(len, entries)) + 2 < bytes_before // 100


async def test_entries_spanning_several_documents_are_read_back_whole(
    make_storage: MakeStorage,
) -> None:
    sid = "wide-entries-000001"
    big = [entry(i * 10, b'"' + bytes([97 + i]) * 400_000 + b'"') for i in range(5)]
    async with started(make_storage) as storage:
        await finished_stream(storage, sid, 50)
        assert await storage.compact(sid, 50, big) is True
        assert await storage.read(sid, 0, 50) == big
        assert await storage.read(sid, 3, 1) == big[3:4]
        assert await storage.read(sid, 4, 9) == big[4:]
        assert await storage.read(sid, 5, 9) == []
        docs, _ = await footprint(storage.client, sid)
    assert docs == 3  # 900 KiB at most each


async def test_a_read_racing_compaction_sees_the_chunks_or_the_entries(
    make_storage: MakeStorage,
) -> None:
    sid = "racing-stream-00001"
    async with started(make_storage) as storage, started(make_storage) as other:
        chunks = await finished_stream(storage, sid, 400)
        entries = summary(400, 4)
        seen: list[tuple[int, list[bytes]]] = []
        compacted = anyio.Event()

        async def reader() -> None:
            for i in range(2000):  # bounded; stops once it has read after the compaction
                at = (0, 2, 10, 35, 200)[i % 5]
                seen.append((at, await other.read(sid, at, 400)))
                if compacted.is_set():
                    seen.append((0, await other.read(sid, 0, 400)))
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.lowlevel.checkpoint()
            assert await storage.compact(sid, 400, entries) is True
            compacted.set()
    for at, got in seen:
        assert got in (chunks[at : at + len(got)], entries[at : at + len(got)]), (at, got[:3])
    assert seen[-1] == (0, entries)


async def test_a_crash_before_the_old_batches_go_leaves_the_entries_readable(
    make_storage: MakeStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after the mark: `read` of ``0..k-1`` gives the entries,
    a later `compact` call deletes the rest, and `purge` deletes everything."""
    crashed, finished = "crashed-stream-0001", "crashed-stream-0002"
    entries = summary(120, 50)  # the entries cover batches 0 to 40 of 0 to 110

    async def dies(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("the process died")

    async with started(make_storage) as storage:
        for sid in (crashed, finished):
            await finished_stream(storage, sid, 120)
        with monkeypatch.context() as patch:
            patch.setattr(_compaction, "delete_leftovers", dies)
            for sid in (crashed, finished):
                with pytest.raises(RuntimeError, match="died"):
                    await storage.compact(sid, 120, entries)
        for sid in (crashed, finished):
            record = await storage.load(sid)
            assert record is not None and (record.compacted, record.length) == (50, 120)
            assert await storage.read(sid, 0, 50) == entries
            assert await storage.read(sid, 0, 120) == entries
            assert await storage.read(sid, 1, 5) == entries[1:6]
            assert await storage.read(sid, 10, 5) == entries[10:15]
            assert await storage.read(sid, 40, 20) == entries[40:]
            docs, _ = await footprint(storage.client, sid)
            assert docs == 8  # the entries, old batches 50 to 110
        # Asked again, it refuses but finishes the job.
        assert await storage.compact(finished, 120, entries) is False
        assert await footprint(storage.client, finished) == (1, len(b"\n".join(entries)))
        assert await storage.purge(9499.0) == 0
        assert await storage.purge(9500.0) == 2
        for sid in (crashed, finished):
            assert await storage.load(sid) is None
            assert await footprint(storage.client, sid) == (0, 0)
