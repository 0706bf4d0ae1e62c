"""Compaction in the Realtime Database: one entries batch in place of the batches, its
conditions and claim, the footprint, readers and listeners racing it, and a process
that dies before deleting the old batches."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import replace
from typing import Any, cast

import anyio
import anyio.lowlevel
import pytest

from stream_gateway import InvalidArgumentError, UnavailableError
from stream_gateway.streams import StreamFilter, StreamRecord, Terminal
from stream_gateway_rtdb import RtdbStreamStorage, _compaction
from stream_gateway_rtdb._layout import batch_key, encode_batch

from rtdb_support import Site

pytestmark = pytest.mark.anyio
RESULT = Terminal("done", b'{"answer":"ok"}')


@asynccontextmanager
async def started(site: Site) -> AsyncIterator[RtdbStreamStorage]:
    storage = RtdbStreamStorage(site.url, keepalive=1.0)
    await storage.start()
    try:
        yield storage
    finally:
        await storage.close()


def watching_generator(storage: Any, stream_id: str) -> AsyncGenerator[None, None]:
    """The storage's watch, which is an async generator (so that it can be closed)."""
    return cast("AsyncGenerator[None, None]", storage.watch(stream_id))


def entry(start: int, raw: bytes) -> bytes:
    """A compacted entry's stored form (as the manager makes it)."""
    return b"#c " + str(start).encode() + b" " + raw


def token(i: int) -> bytes:
    return json.dumps({"delta": f"word{i} "}, separators=(",", ":")).encode()


def summary(length: int, pieces: int) -> list[bytes]:
    """``pieces`` entries standing for ``length`` chunks (contents do not matter here)."""
    step = length // pieces
    return [entry(p * step, b'{"delta":"' + b"x" * 40 + b'"}') for p in range(pieces)]


async def open_stream(storage: RtdbStreamStorage, sid: str) -> None:
    now = time.time()
    await storage.create(StreamRecord(sid, "f", now, now, now + 600, lease_until=now + 60))


async def finished_stream(
    storage: RtdbStreamStorage, sid: str, length: int, batch: int = 10
) -> list[bytes]:
    """A finished stream of ``length`` chunks written in batches of ``batch``."""
    await open_stream(storage, sid)
    chunks = [token(i) for i in range(length)]
    for first in range(0, length, batch):
        await storage.append(sid, first, chunks[first : first + batch])
    now = time.time()
    await storage.finish(sid, length, RESULT, now=now, expires_at=now + 600)
    return chunks


async def footprint(site: Site, sid: str) -> tuple[int, int]:
    """(batch nodes, bytes of their JSON) the stream holds, as the server has them."""
    batches = await site.dump(f"streams/batches/{sid}")
    if not batches:
        return 0, 0
    return len(batches), len(json.dumps(batches, separators=(",", ":")))


async def test_one_entries_batch_replaces_the_batches_and_the_meta_is_marked(
    site: Site,
) -> None:
    sid = "compact-stream-00001"
    entries = [entry(0, b'"abc"'), entry(3, b'{"tool":1}'), entry(4, b'"de"')]
    async with started(site) as storage:
        await finished_stream(storage, sid, 6, batch=2)
        before = await storage.load(sid)
        assert before is not None and before.compacted is None
        assert await storage.compact(sid, 6, entries) is True
        assert await storage.read(sid, 0, 10) == entries
        assert await storage.read(sid, 2, 10) == entries[2:]
        assert await storage.read(sid, 3, 10) == []
        after = await storage.load(sid)
        listed = (await storage.list_streams(StreamFilter())).records
    assert after == replace(before, compacted=3)  # nothing else moved
    assert [(r.stream_id, r.compacted, r.length) for r in listed] == [(sid, 3, 6)]
    meta = await site.dump(f"streams/meta/{sid}")
    assert meta["compacted"] == 3 and "compacting" not in meta
    assert await site.dump(f"streams/batches/{sid}") == {
        "000000000000": {"o": 0, "n": 3, "k": 3, "c": [e.decode() for e in entries]}
    }


async def test_compaction_is_refused_unless_finished_uncompacted_and_at_its_length(
    site: Site,
) -> None:
    done, live = "refused-done-000001", "refused-open-000001"
    one = [entry(0, b'"x"')]
    async with started(site) as storage:
        chunks = await finished_stream(storage, done, 4)
        await open_stream(storage, live)
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


async def test_a_claim_refuses_a_second_compaction_until_it_lapses(site: Site) -> None:
    """The claim is the only condition the REST API can carry (an ETag on one PUT):
    a fresh one keeps others off; one left by a process that died lapses."""
    sid = "claimed-stream-00001"
    one = [entry(0, b'"x"')]
    async with started(site) as storage:
        chunks = await finished_stream(storage, sid, 4)
        meta = storage.client
        await meta.patch(f"streams/meta/{sid}", {"compacting": time.time()})
        assert await storage.compact(sid, 4, one) is False
        assert await storage.read(sid, 0, 10) == chunks
        lapsed = time.time() - _compaction.CLAIM_LAPSE - 1
        await meta.patch(f"streams/meta/{sid}", {"compacting": lapsed})
        assert await storage.compact(sid, 4, one) is True
        assert await storage.read(sid, 0, 10) == one


async def test_a_retry_after_a_failed_mark_takes_its_own_claim_again(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = "retried-stream-00001"
    one = [entry(0, b'"x"')]

    async def fails(*args: Any, **kwargs: Any) -> None:
        raise UnavailableError("the PATCH timed out")

    async with started(site) as storage, started(site) as other:
        chunks = await finished_stream(storage, sid, 4)
        with monkeypatch.context() as patch:
            patch.setattr(_compaction, "mark", fails)
            with pytest.raises(UnavailableError):
                await storage.compact(sid, 4, one)
        assert await storage.read(sid, 0, 10) == chunks
        assert await other.compact(sid, 4, one) is False  # claimed by the first
        assert await storage.compact(sid, 4, one) is True  # the first's retry
        assert await storage.read(sid, 0, 10) == one


async def test_a_long_stream_shrinks_to_one_batch(site: Site) -> None:
    sid = "long-stream-0000001"
    async with started(site) as storage:
        await finished_stream(storage, sid, 10)
        # The batches `append` writes for 5,000 chunks flushed 10 at a time, in one
        # request to keep the test short; the meta says 5,000.
        batches = {
            batch_key(first): encode_batch(first, [token(i) for i in range(first, first + 10)])
            for first in range(0, 5000, 10)
        }
        await storage.client.put(f"streams/batches/{sid}", batches)
        await storage.client.patch(f"streams/meta/{sid}", {"length": 5000})
        nodes_before, bytes_before = await footprint(site, sid)
        entries = summary(5000, 3)
        assert await storage.compact(sid, 5000, entries) is True
        nodes_after, bytes_after = await footprint(site, sid)
        assert await storage.read(sid, 0, 5000) == entries
    print(f"\nrtdb 5,000 chunks: {nodes_before} batch nodes / {bytes_before} bytes of JSON -> "
          f"{nodes_after} / {bytes_after} bytes")  # fmt: skip
    assert (nodes_before, nodes_after) == (500, 1)
    assert bytes_after * 100 < bytes_before


async def test_a_read_racing_compaction_sees_the_chunks_or_the_entries(site: Site) -> None:
    sid = "racing-stream-00001"
    async with started(site) as storage, started(site) as other:
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


async def test_listeners_drop_the_batches_they_held_once_compacted(site: Site) -> None:
    """A following process answers reads from the batches its listener received; the
    mark on the meta (elsewhere) or the compaction itself (here) ends that."""
    sid = "listened-stream-0001"
    entries = [entry(0, b'"0123"')]
    send, woke = anyio.create_memory_object_stream[None](100)

    async def follow(storage: RtdbStreamStorage) -> None:
        async with aclosing(watching_generator(storage, sid)) as watch:
            async for _ in watch:
                await send.send(None)

    async with started(site) as writing, started(site) as watching, send, woke:
        await open_stream(writing, sid)
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow, watching)
            with anyio.fail_after(10):
                await woke.receive()
                cache = watching._caches[sid]
                await writing.append(sid, 0, [b"0", b"1"])
                await writing.append(sid, 2, [b"2", b"3"])
                while cache.read(0, 10) != [b"0", b"1", b"2", b"3"]:
                    await woke.receive()
                now = time.time()
                await writing.finish(sid, 4, RESULT, now=now, expires_at=now + 600)
                assert await writing.compact(sid, 4, entries) is True
                while cache.read(0, 10):
                    await woke.receive()
                assert await watching.read(sid, 0, 10) == entries
            tg.cancel_scope.cancel()


async def test_a_crash_before_the_old_batches_go_leaves_the_entries_readable(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after the mark: `read` of ``0..k-1`` gives the entries,
    a later `compact` call deletes the rest, and `purge` deletes everything."""
    crashed, finished = "crashed-stream-0001", "crashed-stream-0002"
    entries = summary(120, 50)  # the entries cover batches 0 to 40 of 0 to 110

    async def dies(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("the process died")

    async with started(site) as storage:
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
            assert (await footprint(site, sid))[0] == 8  # the entries, old batches 50 to 110
        # Asked again, it refuses but finishes the job.
        assert await storage.compact(finished, 120, entries) is False
        assert (await footprint(site, finished))[0] == 1
        assert record is not None
        expires_at = record.expires_at
        assert await storage.purge(expires_at - 60) == 0
        assert await storage.purge(expires_at + 1) == 2
        for sid in (crashed, finished):
            assert await storage.load(sid) is None
            assert await footprint(site, sid) == (0, 0)
