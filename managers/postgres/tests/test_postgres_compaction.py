"""Compaction on PostgreSQL: the rows it leaves, its conditions, readers racing it,
a failure part-way, purge, and the migration that adds the column."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import asyncpg
import pytest

from stream_gateway import InvalidArgumentError
from stream_gateway.streams import StreamFilter, StreamRecord, Terminal
from stream_gateway_postgres import PostgresStreamStorage
from stream_gateway_postgres._layout import STREAMS_MIGRATIONS
from stream_gateway_postgres._migrations import migrate
from stream_gateway_postgres.testing import PostgresServer

pytestmark = pytest.mark.anyio
MakeStorage = Callable[..., PostgresStreamStorage]
RESULT = Terminal("done", b'{"answer":"ok"}')


@asynccontextmanager
async def started(make: MakeStorage, **options: Any) -> AsyncIterator[PostgresStreamStorage]:
    storage = make(**options)
    await storage.start()
    try:
        yield storage
    finally:
        await storage.close()


@asynccontextmanager
async def connected(server: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(server.dsn)
    try:
        yield conn
    finally:
        await conn.close()


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
    storage: PostgresStreamStorage, sid: str, length: int, batch: int = 10
) -> list[bytes]:
    """A finished stream of ``length`` chunks written in batches of ``batch``."""
    await storage.create(StreamRecord(sid, "f", 1000.0, 1000.0, 9000.0, lease_until=1010.0))
    chunks = [token(i) for i in range(length)]
    for first in range(0, length, batch):
        await storage.append(sid, first, chunks[first : first + batch])
    await storage.finish(sid, length, RESULT, now=1500.0, expires_at=9500.0)
    return chunks


async def footprint(server: PostgresServer, schema: str, sid: str) -> tuple[int, int]:
    """(batch rows, chunk bytes) the stream holds, counted in the table."""
    async with connected(server) as conn:
        row = await conn.fetchrow(
            f"""SELECT count(*) AS n, coalesce(sum(octet_length(chunks)), 0) AS size
                FROM "{schema}".stream_batches WHERE stream_id = $1""",
            sid,
        )
    assert row is not None
    return int(row["n"]), int(row["size"])


async def test_compaction_leaves_one_batch_of_entries_and_keeps_the_record(
    make_storage: MakeStorage, server: PostgresServer, schema: str
) -> None:
    sid = "compact-stream-00001"
    entries = [entry(0, b'"abc"'), entry(3, b'{"tool":1}'), entry(4, b'"de"')]
    async with started(make_storage) as storage:
        await finished_stream(storage, sid, 6, batch=2)
        before = await storage.load(sid)
        assert before is not None and before.compacted is None
        assert await storage.compact(sid, 6, entries) is True
        assert await storage.read(sid, 0, 10) == entries
        assert await storage.read(sid, 1, 1) == entries[1:2]
        assert await storage.read(sid, 3, 10) == []
        after = await storage.load(sid)
        listed = (await storage.list_streams(StreamFilter())).records
    assert after is not None and after.compacted == 3
    assert (after.length, after.status, after.terminal) == (6, "done", RESULT)
    assert (after.created_at, after.updated_at, after.expires_at) == (1000.0, 1500.0, 9500.0)
    assert [(r.stream_id, r.compacted, r.length) for r in listed] == [(sid, 3, 6)]
    async with connected(server) as conn:
        batches = await conn.fetch(
            f'SELECT first_offset, count, chunks FROM "{schema}".stream_batches '
            "WHERE stream_id = $1",
            sid,
        )
    assert [tuple(b) for b in batches] == [(0, 3, b"\n".join(entries))]


async def test_compaction_is_refused_unless_finished_uncompacted_and_at_its_length(
    make_storage: MakeStorage,
) -> None:
    done, live = "refused-done-000001", "refused-open-000001"
    async with started(make_storage) as storage:
        chunks = await finished_stream(storage, done, 4)
        await storage.create(StreamRecord(live, "f", 1000.0, 1000.0, 9000.0, lease_until=1e4))
        await storage.append(live, 0, [b"1", b"2"])
        one = [entry(0, b'"x"')]
        assert await storage.compact("unknown-stream-00001", 4, one) is False
        assert await storage.compact(live, 2, one) is False
        assert await storage.compact(done, 5, one) is False
        assert await storage.compact(done, 3, one) is False
        assert await storage.read(done, 0, 10) == chunks
        assert await storage.read(live, 0, 10) == [b"1", b"2"]
        assert await storage.compact(done, 4, one) is True
        assert await storage.compact(done, 4, [entry(0, b'"y"')]) is False
        assert await storage.read(done, 0, 10) == one
        loaded = await storage.load(done)
        assert loaded is not None and loaded.compacted == 1
        with pytest.raises(InvalidArgumentError, match="between 1"):
            await storage.compact(done, 4, [])


async def test_a_long_stream_shrinks_to_a_few_rows(
    make_storage: MakeStorage, server: PostgresServer, schema: str
) -> None:
    sid = "long-stream-0000001"
    async with started(make_storage) as storage:
        await finished_stream(storage, sid, 5000)
        rows_before, bytes_before = await footprint(server, schema, sid)
        entries = summary(5000, 3)
        assert await storage.compact(sid, 5000, entries) is True
        rows_after, bytes_after = await footprint(server, schema, sid)
        assert await storage.read(sid, 0, 5000) == entries
    print(f"\npostgres 5,000 chunks: {rows_before} rows / {bytes_before} bytes -> "
          f"{rows_after} row / {bytes_after} bytes")  # fmt: skip
    assert (rows_before, rows_after) == (500, 1)
    assert bytes_after == sum(map(len, entries)) + 2 < bytes_before // 100


async def test_a_read_racing_compaction_sees_the_chunks_or_the_entries(
    make_storage: MakeStorage,
) -> None:
    sid = "racing-stream-00001"
    async with started(make_storage) as storage:
        chunks = await finished_stream(storage, sid, 400)
        entries = summary(400, 4)
        seen: list[list[bytes]] = []
        compacted = anyio.Event()

        async def reader() -> None:
            for _ in range(2000):  # bounded; stops once it has read after the compaction
                seen.append(await storage.read(sid, 0, 400))
                if compacted.is_set():
                    seen.append(await storage.read(sid, 0, 400))
                    return
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.lowlevel.checkpoint()
            assert await storage.compact(sid, 400, entries) is True
            compacted.set()
    for got in seen:
        assert got in (chunks[: len(got)], entries[: len(got)])
    assert seen[-1] == entries


async def test_a_failure_after_the_mark_leaves_the_stream_as_it_was(
    make_storage: MakeStorage, server: PostgresServer, schema: str
) -> None:
    """The mark, the deletion and the insert commit together: a deletion that fails
    rolls the mark back, and the next attempt compacts."""
    sid = "failing-stream-00001"
    entries = summary(50, 2)
    async with started(make_storage) as storage:
        chunks = await finished_stream(storage, sid, 50)
        async with connected(server) as conn:
            await conn.execute(
                f"""CREATE FUNCTION "{schema}".refuse() RETURNS trigger LANGUAGE plpgsql
                    AS $$ BEGIN RAISE EXCEPTION 'deletion refused'; END $$;
                CREATE TRIGGER refuse BEFORE DELETE ON "{schema}".stream_batches
                    FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse()"""
            )
        with pytest.raises(asyncpg.RaiseError, match="deletion refused"):
            await storage.compact(sid, 50, entries)
        loaded = await storage.load(sid)
        assert loaded is not None and (loaded.compacted, loaded.length) == (None, 50)
        assert await storage.read(sid, 0, 100) == chunks
        async with connected(server) as conn:
            await conn.execute(f'DROP TRIGGER refuse ON "{schema}".stream_batches')
        assert await storage.compact(sid, 50, entries) is True
        assert await storage.read(sid, 0, 100) == entries


async def test_purge_deletes_a_compacted_stream_entirely(
    make_storage: MakeStorage, server: PostgresServer, schema: str
) -> None:
    sid = "purged-stream-00001"
    async with started(make_storage) as storage:
        await finished_stream(storage, sid, 30)
        assert await storage.compact(sid, 30, summary(30, 2)) is True
        assert await storage.purge(9499.0) == 0
        assert await storage.purge(9500.0) == 1
        assert await storage.load(sid) is None
        assert await storage.read(sid, 0, 10) == []
    assert await footprint(server, schema, sid) == (0, 0)


async def test_a_store_at_the_previous_version_gains_the_column(
    make_storage: MakeStorage, server: PostgresServer, schema: str
) -> None:
    sid = "third-release-strm1"
    async with connected(server) as conn:
        assert await migrate(conn, schema, "streams", STREAMS_MIGRATIONS[:3]) == [1, 2, 3]
        await conn.execute(
            f"""INSERT INTO "{schema}".streams (stream_id, flow, status, length, created_at,
                updated_at, expires_at, terminal_payload)
                VALUES ($1, 'f', 'done', 2, now(), now(), now() + interval '1 hour', '1')""",
            sid,
        )
        await conn.execute(
            f'INSERT INTO "{schema}".stream_batches VALUES ($1, 0, 2, $2)', sid, b'"a"\n"b"'
        )
    async with started(make_storage) as storage:
        loaded = await storage.load(sid)
        assert loaded is not None and (loaded.compacted, loaded.length) == (None, 2)
        assert await storage.read(sid, 0, 5) == [b'"a"', b'"b"']
        assert await storage.compact(sid, 2, [entry(0, b'"ab"')]) is True
        compacted = await storage.load(sid)
        assert compacted is not None and compacted.compacted == 1
    async with connected(server) as conn:
        versions = await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations ORDER BY 1')
    assert [row["version"] for row in versions] == [1, 2, 3, 4]
