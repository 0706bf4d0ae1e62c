"""SQLite specifics: real OS processes sharing one file, crash durability, the schema,
indexed reads, the change poller and error mapping. The stream contract itself is in
`test_contract.py` (run with ``STREAM_BACKENDS=sqlite``)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from stream_gateway import InternalError, StreamExistsError, UnavailableError
from stream_gateway._json import dumps, loads
from stream_gateway.streams import (
    ChunkEvent,
    ErrorEvent,
    ResultEvent,
    SqliteStreamManager,
    SqliteStreamStorage,
    StreamEvent,
    StreamRecord,
    Terminal,
)
from stream_gateway.streams import _sqlite_db as db_schema
from stream_gateway.streams._sqlite_db import SCHEMA_VERSION

pytestmark = pytest.mark.anyio

WRITER_SCRIPT = Path(__file__).with_name("sqlite_writer_proc.py")
POLLER_THREAD = "stream-gateway-sqlite-poller"
_serial = itertools.count()


class Child:
    """A `sqlite_writer_proc.py` process: stdout read by lines, stderr kept in a file."""

    def __init__(self, process: Process, stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        assert process.stdout is not None
        self._stdout = BufferedByteReceiveStream(process.stdout)

    async def line(self) -> str:
        return (await self._stdout.receive_until(b"\n", 1 << 16)).decode()

    async def rest(self) -> list[str]:
        """Every line up to the end of stdout."""
        lines = []
        with contextlib.suppress(anyio.EndOfStream, anyio.IncompleteRead):
            while True:
                lines.append(await self.line())
        return lines

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(line.encode() + b"\n")

    def stderr(self) -> str:
        return self.stderr_path.read_text()


@asynccontextmanager
async def writer_process(tmp_path: Path, *args: str) -> AsyncIterator[Child]:
    stderr_path = tmp_path / f"writer-{next(_serial)}.stderr"
    with stderr_path.open("wb") as stderr:
        process = await anyio.open_process(
            [sys.executable, str(WRITER_SCRIPT), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        yield Child(process, stderr_path)
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            await process.aclose()


def record(stream_id: str, now: float = 1000.0) -> StreamRecord:
    return StreamRecord(stream_id, "f", now, now, now + 3600, lease_until=now + 10)


@asynccontextmanager
async def started(path: Path, **options: Any) -> AsyncIterator[SqliteStreamStorage]:
    storage = SqliteStreamStorage(path, **options)
    await storage.start()
    try:
        yield storage
    finally:
        await storage.close()


def chunks_of(events: list[StreamEvent]) -> list[tuple[int, Any]]:
    return [(e.offset, e.data) for e in events if isinstance(e, ChunkEvent)]


# -- across OS processes ---------------------------------------------------------------


async def test_stream_written_by_another_process_is_followed_live(tmp_path: Path) -> None:
    db, sid = tmp_path / "streams.db", "followed-live-stream-01"
    received: list[StreamEvent] = []
    async with (
        SqliteStreamManager(db) as manager,
        writer_process(
            tmp_path, str(db), sid, "--chunks=20", "--wait-after=10", "--pause=0.01", "--no-report"
        ) as child,
    ):
        with anyio.fail_after(30):
            assert await child.line() == "opened"
            async with aclosing(manager.subscribe(sid)) as events:
                async for event in events:
                    received.append(event)
                    if isinstance(event, ChunkEvent) and event.offset == 9:
                        # The writer waits for this line: chunks 0-9 came in live.
                        await child.send("go")
            assert await child.line() == "done"
            assert await child.process.wait() == 0, child.stderr()

    assert chunks_of(received) == [(i, {"i": i}) for i in range(20)]
    assert received[-1] == ResultEvent(b'{"n":20}')
    assert len(received) == 21


async def test_killed_writer_is_abandoned_and_its_flushed_chunks_survive(tmp_path: Path) -> None:
    db, sid = tmp_path / "streams.db", "killed-writer-stream-01"
    received: list[StreamEvent] = []
    flushed = 0
    async with (
        SqliteStreamManager(db) as manager,
        writer_process(tmp_path, str(db), sid, "--chunks=0", "--pause=0.005", "--lease=1") as child,
    ):
        with anyio.fail_after(30):
            assert await child.line() == "opened"

        async def follow() -> None:
            async with aclosing(manager.subscribe(sid)) as events:
                async for event in events:
                    received.append(event)

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            with anyio.fail_after(30):
                while flushed < 40 or not received:
                    flushed = int((await child.line()).removeprefix("flushed "))
            child.process.send_signal(signal.SIGKILL)
            with anyio.fail_after(10):  # ten leases: the subscriber must end by itself
                for line in await child.rest():
                    flushed = int(line.removeprefix("flushed "))
                assert await child.process.wait() == -signal.SIGKILL

    assert received[-1] == ErrorEvent("UNAVAILABLE", "stream abandoned")
    followed = chunks_of(received)
    assert followed == [(i, {"i": i}) for i in range(len(followed))]
    assert len(followed) >= flushed

    # "After a restart": a fresh storage on the same file has every flushed chunk, and
    # the end the subscriber recorded.
    async with started(db) as storage:
        stored = await storage.load(sid)
        assert stored is not None and stored.status == "error"
        assert stored.terminal is not None and b"stream abandoned" in stored.terminal.payload
        assert stored.length >= flushed
        chunks = await storage.read(sid, 0, 1_000_000)
        assert len(chunks) == stored.length
        assert [loads(c) for c in chunks] == [{"i": i} for i in range(stored.length)]


async def test_processes_appending_at_once_never_see_database_locked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "fresh.db"  # no schema yet: the processes race to create it
    ids = [f"concurrent-stream-{n:05}" for n in range(3)]
    n = 1000
    async with AsyncExitStack() as stack:
        children = [
            await stack.enter_async_context(
                # Each chunk flushed on its own: one transaction per chunk.
                writer_process(tmp_path, str(db), sid, f"--chunks={n}")
            )
            for sid in ids[:2]
        ]
        # This process writes a third stream meanwhile, one transaction per chunk too.
        with caplog.at_level(logging.WARNING), anyio.fail_after(120):
            async with SqliteStreamManager(db) as manager:
                writer = await manager.open(ids[2])
                for i in range(n):
                    await writer.write({"i": i})
                    await writer.flush()
                await writer.done({"n": n})
            for child in children:
                assert await child.process.wait() == 0, child.stderr()

    for child in children:
        assert "locked" not in child.stderr()
        assert "unavailable" not in child.stderr()
    assert not [r for r in caplog.records if "locked" in r.getMessage()]
    async with started(db) as storage:
        for sid in ids:
            stored = await storage.load(sid)
            assert stored is not None and (stored.status, stored.length) == ("done", n)
            assert [loads(c) for c in await storage.read(sid, 0, n + 1)] == [
                {"i": i} for i in range(n)
            ]


# -- schema, layout, reads -----------------------------------------------------------------


async def test_schema_creation_is_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "streams.db"
    async with started(db) as first, started(db) as second:
        await first.create(record("schema-stream-00001"))
        await first.append("schema-stream-00001", 0, [b"1", b"2"])
        loaded = await second.load("schema-stream-00001")
        assert loaded is not None and loaded.length == 2
    async with started(db) as third:  # reopened later: nothing recreated or lost
        assert await third.read("schema-stream-00001", 0, 10) == [b"1", b"2"]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        assert {"streams", "batches", "streams_by_expiry"} <= tables


async def test_a_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    """Files made before compaction (schema v1, no ``compacted`` column) keep their
    streams, gain the column when opened, and their streams can then be compacted."""
    path = tmp_path / "v1.db"
    v1 = db_schema._SCHEMA[0].replace(", compacted INTEGER)", ")")
    assert "compacted" not in v1
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(v1)
        conn.execute(
            "CREATE TABLE batches (stream_id TEXT NOT NULL, first_offset INTEGER NOT NULL,"
            " count INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (stream_id, first_offset))"
        )
        conn.execute(
            "INSERT INTO streams (id, flow, status, length, created_at, updated_at, expires_at,"
            " terminal_kind, terminal_payload) VALUES ('old-stream-0000001', 'f', 'done', 3,"
            " 1000, 1000, 1e12, 'done', ?)",
            (b'"r"',),
        )
        conn.execute(
            "INSERT INTO batches VALUES ('old-stream-0000001', 0, 3, ?)", (b'"a"\n"b"\n"c"',)
        )
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    async with SqliteStreamManager(path) as manager:
        record = await manager.info("old-stream-0000001")
        assert (record.length, record.compacted) == (3, None)
        assert (await manager.compact("old-stream-0000001")).entries_after == 1
        events = [e async for e in manager.subscribe("old-stream-0000001")]
        assert events == [ChunkEvent(0, b'"abc"', 3), ResultEvent(b'"r"')]
    async with started(path) as again:  # opening it again changes nothing
        reopened = await again.load("old-stream-0000001")
        assert reopened is not None and reopened.compacted == 1
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (2,)
        (rows,) = conn.execute("SELECT count(*) FROM batches").fetchone()
        assert rows == 1


async def test_read_cost_does_not_grow_with_stream_length(tmp_path: Path) -> None:
    async with started(tmp_path / "streams.db") as storage:
        for sid, batches in (("short-stream-000001", 4), ("long-stream-0000001", 3000)):
            await storage.create(record(sid))
            for b in range(batches):
                await storage.append(sid, b * 5, [dumps(b * 5 + k) for k in range(5)])

        steps = 0

        def count_step() -> int:
            nonlocal steps
            steps += 1
            return 0

        # Count SQLite VM instructions on the read connection: a scan of the stream's
        # batches would cost thousands more on the long stream than on the short one.
        assert storage._reader is not None
        storage._reader.set_progress_handler(count_step, 1)

        async def cost(sid: str, offset: int) -> tuple[int, list[bytes]]:
            nonlocal steps
            steps = 0
            chunks = await storage.read(sid, offset, 6)
            return steps, chunks

        short_cost, short_chunks = await cost("short-stream-000001", 12)
        long_cost, long_chunks = await cost("long-stream-0000001", 14_992)
        assert short_chunks == [dumps(i) for i in range(12, 18)]
        assert long_chunks == [dumps(i) for i in range(14_992, 14_998)]
        assert 0 < long_cost < 2 * short_cost
        # Past the end, and in the middle of a batch up to the end.
        assert await storage.read("long-stream-0000001", 15_000, 6) == []
        tail = await storage.read("long-stream-0000001", 14_997, 100)
        assert tail == [b"14997", b"14998", b"14999"]


async def test_retried_append_replaces_its_batch(tmp_path: Path) -> None:
    async with started(tmp_path / "streams.db") as storage:
        sid = "retried-append-00001"
        await storage.create(record(sid))
        await storage.append(sid, 0, [b"0", b"1"])
        # The same offset again (the first attempt's commit was not acknowledged),
        # now with the chunks buffered since: one batch, exact length.
        await storage.append(sid, 0, [b"0", b"1", b"2"])
        await storage.append(sid, 3, [b"3"])
        assert await storage.read(sid, 0, 10) == [b"0", b"1", b"2", b"3"]
        loaded = await storage.load(sid)
        assert loaded is not None and loaded.length == 4
        with pytest.raises(StreamExistsError):
            await storage.create(record(sid))


async def test_purge_removes_records_and_batches(tmp_path: Path) -> None:
    async with started(tmp_path / "streams.db") as storage:
        for n in range(300):  # more than one purge round
            await storage.create(record(f"expiring-stream-{n:04}", now=float(n)))
            await storage.append(f"expiring-stream-{n:04}", 0, [b"x"])
        assert await storage.purge(now=3600.0 + 279) == 280
        assert await storage.load("expiring-stream-0279") is None
        assert await storage.read("expiring-stream-0279", 0, 10) == []
        assert await storage.read("expiring-stream-0280", 0, 10) == [b"x"]
    with contextlib.closing(sqlite3.connect(tmp_path / "streams.db")) as conn:
        assert conn.execute("SELECT COUNT(*) FROM batches").fetchone() == (20,)


# -- the change poller -------------------------------------------------------------------------


def poller_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == POLLER_THREAD]


async def test_one_poller_wakes_only_the_watchers_of_changed_streams(tmp_path: Path) -> None:
    db = tmp_path / "streams.db"
    ids = [f"watched-stream-{n:06}" for n in range(50)]
    woken: list[str] = []
    wake = anyio.Event()

    async def follow(storage: SqliteStreamStorage, sid: str) -> None:
        nonlocal wake
        async for _ in storage.watch(sid):
            woken.append(sid)
            wake.set()
            wake = anyio.Event()

    async def until(done: Callable[[], bool]) -> None:
        while not done():
            await wake.wait()

    async with started(db) as watching, started(db) as other:
        for sid in [*ids, "unwatched-stream-0001"]:
            await other.create(record(sid))
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for sid in ids:
                    tg.start_soon(follow, watching, sid)
                # Each watcher yields once at the start, and once more at the first
                # change anywhere (it has no baseline yet): poke an unwatched stream.
                poke = 0
                while any(woken.count(sid) < 2 for sid in ids):
                    await other.append("unwatched-stream-0001", poke, [b"0"])
                    poke += 1
                    with anyio.move_on_after(0.05):
                        await until(lambda: all(woken.count(sid) >= 2 for sid in ids))
                assert len(poller_threads()) == 1
                woken.clear()
                # From now on, only a changed stream wakes its watcher.
                await other.append("unwatched-stream-0001", poke, [b"0"])
                await other.append(ids[7], 0, [b"0"])
                await until(lambda: ids[7] in woken)
                await other.finish(ids[8], 0, Terminal("done", b"1"), now=1.0, expires_at=5e3)
                await until(lambda: ids[8] in woken)
                await anyio.wait_all_tasks_blocked()
                assert sorted(woken) == [ids[7], ids[8]]
                tg.cancel_scope.cancel()
        # The last watcher gone, the poller stops by itself.
        for thread in poller_threads():
            await anyio.to_thread.run_sync(thread.join, 10)
        assert not poller_threads()


# -- errors and lifecycle -------------------------------------------------------------------------


async def test_a_held_write_lock_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    db = tmp_path / "streams.db"
    async with started(db, busy_timeout=0.05) as storage:
        await storage.create(record("locked-out-stream-01"))
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as blocker:
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with pytest.raises(UnavailableError):
                await storage.append("locked-out-stream-01", 0, [b"1"])
            assert await storage.read("locked-out-stream-01", 0, 1) == []  # reads go on
            blocker.execute("ROLLBACK")
        await storage.append("locked-out-stream-01", 0, [b"1"])
        assert await storage.read("locked-out-stream-01", 0, 1) == [b"1"]


async def test_manager_retries_through_a_briefly_held_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "streams.db"
    async with SqliteStreamManager(db, busy_timeout=0.05) as manager:
        writer = await manager.open()
        storage = manager.storage
        refused = anyio.Event()
        append = storage.append

        async def spied_append(stream_id: str, offset: int, chunks: Any) -> None:
            try:
                await append(stream_id, offset, chunks)
            except UnavailableError:
                refused.set()
                raise

        async def write() -> None:
            await writer.write("waited")
            await writer.flush()

        storage.append = spied_append  # type: ignore[method-assign]
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as blocker:
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with caplog.at_level(logging.WARNING), anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(write)
                    await refused.wait()  # the manager will try again
                    blocker.execute("ROLLBACK")
        await writer.done(None)
        events = [e async for e in manager.subscribe(writer.stream_id)]
        assert events == [ChunkEvent(0, b'"waited"'), ResultEvent(b"null")]
        assert any("unavailable" in r.getMessage() for r in caplog.records)


async def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "not-a-database.db"
    db.write_bytes(b"this is not a SQLite file, just some text " * 100)
    storage = SqliteStreamStorage(db)
    with pytest.raises(InternalError, match=r"not-a-database\.db"):
        await storage.start()


async def test_missing_parent_directories_are_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The README's quick start, pasted into an empty directory: a relative path whose
    # directory does not exist yet.
    monkeypatch.chdir(tmp_path)
    async with SqliteStreamManager(".data/streams.db") as manager:
        writer = await manager.open()
        await writer.write("hello")
        await writer.done("bye")
        events = [e async for e in manager.subscribe(writer.stream_id)]
    assert events == [ChunkEvent(0, b'"hello"'), ResultEvent(b'"bye"')]
    assert (tmp_path / ".data" / "streams.db").is_file()

    nested = tmp_path / "a" / "b" / "c" / "streams.db"
    storage = SqliteStreamStorage(nested)
    await storage.start()
    await storage.close()
    assert nested.is_file()


async def test_a_parent_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("not a directory")
    storage = SqliteStreamStorage(tmp_path / "plain-file" / "streams.db")
    with pytest.raises(InternalError, match=r"cannot create the directory .*plain-file"):
        await storage.start()


async def test_calls_before_start_and_after_close_are_clear_errors(tmp_path: Path) -> None:
    storage = SqliteStreamStorage(tmp_path / "streams.db")
    with pytest.raises(RuntimeError, match="not started"):
        await storage.load("never-started-stream-1")
    with pytest.raises(RuntimeError, match="not started"):
        storage.watch("never-started-stream-1")
    await storage.start()
    await storage.close()
    with pytest.raises(RuntimeError, match="closed"):
        await storage.read("never-started-stream-1", 0, 1)
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStreamStorage(tmp_path / "x.db", synchronous="SOMETIMES")


async def test_commits_are_synced_by_default_and_normal_is_an_option(tmp_path: Path) -> None:
    """FULL by default: an OS crash or power loss then loses nothing committed."""
    levels = {"NORMAL": 1, "FULL": 2}
    managers = {
        "FULL": SqliteStreamManager(tmp_path / "default.db"),
        "NORMAL": SqliteStreamManager(tmp_path / "normal.db", synchronous="normal"),
    }
    for expected, manager in managers.items():
        async with manager:
            storage = manager.storage
            assert isinstance(storage, SqliteStreamStorage)
            assert storage.synchronous == expected
            for write in (True, False):
                (level,) = await storage._run(
                    write, lambda conn: conn.execute("PRAGMA synchronous").fetchone()
                )
                assert level == levels[expected]
