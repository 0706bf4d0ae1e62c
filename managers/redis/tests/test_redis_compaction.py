"""Compaction in Redis: the log made anew, its conditions, the footprint, readers
racing it, watches that held the old batches, and a crash right after it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.lowlevel
import pytest
from redis.asyncio import Redis

from stream_gateway import InvalidArgumentError
from stream_gateway.streams import StreamFilter, StreamRecord, Terminal
from stream_gateway_redis import RedisStreamStorage
from stream_gateway_redis._layout import log_key, meta_key
from stream_gateway_redis.testing import RedisServer

from redis_support import Site, new_prefix, new_stream_id

pytestmark = pytest.mark.anyio
RESULT = Terminal("done", b'{"answer":"ok"}')


@asynccontextmanager
async def started(site: Site) -> AsyncIterator[RedisStreamStorage]:
    storage = RedisStreamStorage(site.url, prefix=site.prefix)
    await storage.start()
    try:
        yield storage
    finally:
        await storage.close()


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


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


async def open_stream(storage: RedisStreamStorage, sid: str) -> None:
    now = time.time()
    await storage.create(StreamRecord(sid, "f", now, now, now + 600, lease_until=now + 60))


async def finished_stream(
    storage: RedisStreamStorage, sid: str, length: int, batch: int = 10
) -> list[bytes]:
    """A finished stream of ``length`` chunks written in batches of ``batch``."""
    await open_stream(storage, sid)
    chunks = [token(i) for i in range(length)]
    for first in range(0, length, batch):
        await storage.append(sid, first, chunks[first : first + batch])
    now = time.time()
    await storage.finish(sid, length, RESULT, now=now, expires_at=now + 600)
    return chunks


async def test_the_log_is_made_anew_with_the_entries_and_the_record_is_marked(
    site: Site,
) -> None:
    sid = new_stream_id()
    entries = [entry(0, b'"abc"'), entry(3, b'{"tool":1}'), entry(4, b'"de"')]
    async with started(site) as storage, connected(site.url) as client:
        await finished_stream(storage, sid, 6, batch=2)
        before = await storage.load(sid)
        assert before is not None and before.compacted is None
        assert await storage.compact(sid, 6, entries) is True
        assert await storage.read(sid, 0, 10) == entries
        assert await storage.read(sid, 2, 10) == entries[2:]
        assert await storage.read(sid, 3, 10) == []
        assert await storage.read(sid, 6, 10) == []
        after = await storage.load(sid)
        listed = (await storage.list_streams(StreamFilter())).records
        log = await client.xrange(log_key(site.prefix, sid))
        expire_at = await client.pexpiretime(log_key(site.prefix, sid)) / 1000
    assert log == [
        (b"0-3", {b"d": b"\n".join(entries)}),
        (b"6-1", {b"t": b"done"}),
        (b"6-2", {b"c": b"3"}),
    ]
    assert after is not None and after.compacted == 3
    assert after == replace(before, compacted=3)  # nothing else moved
    assert abs(expire_at - after.expires_at) < 0.01  # the new log expires with the record
    assert [(r.stream_id, r.compacted, r.length) for r in listed] == [(sid, 3, 6)]


async def test_compaction_is_refused_unless_finished_uncompacted_and_at_its_length(
    site: Site,
) -> None:
    done, live = new_stream_id(), new_stream_id()
    one = [entry(0, b'"x"')]
    async with started(site) as storage:
        chunks = await finished_stream(storage, done, 4)
        await open_stream(storage, live)
        await storage.append(live, 0, [b"1", b"2"])
        assert await storage.compact(new_stream_id(), 4, one) is False
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
        with pytest.raises(InvalidArgumentError, match="raw newline"):
            await storage.compact(done, 4, [b'#c 0 "a\nb"'])


async def test_a_long_stream_shrinks_to_a_few_entries(site: Site) -> None:
    sid = new_stream_id()
    async with started(site) as storage, connected(site.url) as client:
        await finished_stream(storage, sid, 5000)
        log = log_key(site.prefix, sid)
        entries_before = await client.xlen(log)
        bytes_before = await client.memory_usage(log, samples=0)
        entries = summary(5000, 3)
        assert await storage.compact(sid, 5000, entries) is True
        entries_after = await client.xlen(log)
        bytes_after = await client.memory_usage(log, samples=0)
        assert await storage.read(sid, 0, 5000) == entries
    print(f"\nredis 5,000 chunks: log {entries_before} entries / {bytes_before} bytes -> "
          f"{entries_after} entries / {bytes_after} bytes")  # fmt: skip
    assert (entries_before, entries_after) == (501, 3)  # batches + terminal; 1 + 2
    assert bytes_before is not None and bytes_after is not None
    assert bytes_after * 20 < bytes_before


async def test_a_read_racing_compaction_sees_the_chunks_or_the_entries(site: Site) -> None:
    sid = new_stream_id()
    async with started(site) as storage, started(site) as other:
        chunks = await finished_stream(storage, sid, 400)
        entries = summary(400, 4)
        seen: list[list[bytes]] = []
        compacted = anyio.Event()

        async def reader() -> None:
            for _ in range(2000):  # bounded; stops once it has read after the compaction
                seen.append(await other.read(sid, 0, 400))
                if compacted.is_set():
                    seen.append(await other.read(sid, 0, 400))
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.lowlevel.checkpoint()
            assert await storage.compact(sid, 400, entries) is True
            compacted.set()
    for got in seen:
        assert got in (chunks[: len(got)], entries[: len(got)])
    assert seen[-1] == entries


async def test_watches_drop_the_batches_they_held_once_compacted(site: Site) -> None:
    """A watching process answers reads from the batches its blocking read received;
    the compaction's marker (elsewhere) or the compaction itself (here) ends that."""
    sid = new_stream_id()
    entries = [entry(0, b'"0123"')]
    async with started(site) as writing, started(site) as watching:
        await open_stream(writing, sid)
        async with (
            aclosing(watching_generator(watching, sid)) as elsewhere,
            aclosing(watching_generator(writing, sid)) as here,
        ):
            with anyio.fail_after(10):
                await anext(elsewhere)
                await anext(here)
                await writing.append(sid, 0, [b"0", b"1", b"2", b"3"])
                await anext(elsewhere)
                await anext(here)
                # Served from memory: the batches are dropped from Redis underneath
                # to show that no round trip is made.
                async with connected(site.url) as client:
                    log = log_key(site.prefix, sid)
                    saved = await client.dump(log)
                    assert saved is not None
                    await client.delete(log)
                    assert await watching.read(sid, 0, 10) == [b"0", b"1", b"2", b"3"]
                    assert await writing.read(sid, 0, 10) == [b"0", b"1", b"2", b"3"]
                    await client.restore(log, 0, saved)
                now = time.time()
                await writing.finish(sid, 4, RESULT, now=now, expires_at=now + 600)
                await anext(elsewhere)
                assert await writing.compact(sid, 4, entries) is True
                assert await writing.read(sid, 0, 10) == entries
                await anext(elsewhere)  # the marker
                assert await watching.read(sid, 0, 10) == entries


async def test_a_crash_right_after_compaction_keeps_it_whole_and_purge_removes_it(
    tmp_path: Path,
) -> None:
    """The script is one atomic unit in the append-only file: a server killed right
    after it (``appendfsync always``) comes back with the stream compacted, and
    `purge` then deletes every key of it."""
    server = RedisServer(directory=tmp_path / "redis", appendfsync="always")
    server.directory.mkdir()
    server.start()
    try:
        site = Site(server.url, new_prefix())
        sid = new_stream_id()
        entries = summary(300, 3)
        async with started(site) as storage:
            await finished_stream(storage, sid, 300)
            assert await storage.compact(sid, 300, entries) is True
        server.kill()
        server.start()
        async with started(site) as storage, connected(site.url) as client:
            assert await storage.read(sid, 0, 300) == entries
            record = await storage.load(sid)
            assert record is not None and (record.compacted, record.length) == (3, 300)
            assert await storage.purge(record.expires_at - 1) == 0
            assert await storage.purge(record.expires_at) == 1
            assert await storage.read(sid, 0, 10) == []
            assert [k async for k in client.scan_iter(match=f"{site.prefix}:*")] == []
            assert not await client.exists(meta_key(site.prefix, sid))
    finally:
        server.cleanup()
