"""The storage on its own: schema and migrations, layout, retries, purge, errors, LISTEN."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any, cast

import anyio
import asyncpg
import pytest

from stream_gateway import (
    PermissionDeniedError,
    StreamClosedError,
    StreamExistsError,
    StreamNotFoundError,
    UnavailableError,
)
from stream_gateway.streams import StreamRecord, Terminal
from stream_gateway_postgres import PostgresStreamStorage
from stream_gateway_postgres._layout import STREAMS_MIGRATIONS
from stream_gateway_postgres._migrations import Migration, migrate
from stream_gateway_postgres.testing import PostgresServer, drop_schema, new_schema

pytestmark = pytest.mark.anyio
MakeStorage = Callable[..., PostgresStreamStorage]


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


def record(stream_id: str, now: float = 1000.0, ttl: float = 3600.0) -> StreamRecord:
    return StreamRecord(stream_id, "f", now, now, now + ttl, lease_until=now + 10)


# -- schema and migrations ------------------------------------------------------------


async def test_processes_starting_together_migrate_once(
    make_storage: MakeStorage, server: PostgresServer, schema: str
) -> None:
    storages = [make_storage() for _ in range(4)]
    try:
        async with anyio.create_task_group() as tg:
            for storage in storages:
                tg.start_soon(storage.start)
        await storages[0].create(record("migrated-stream-0001"))
        await storages[0].append("migrated-stream-0001", 0, [b"1", b"2"])
        loaded = await storages[3].load("migrated-stream-0001")
        assert loaded is not None and loaded.length == 2
    finally:
        for storage in storages:
            await storage.close()
    async with connected(server) as conn:
        rows = await conn.fetch(
            f'SELECT component, version, name FROM "{schema}".schema_migrations'
        )
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1", schema
        )
    assert [tuple(r) for r in rows] == [("streams", m.version, m.name) for m in STREAMS_MIGRATIONS]
    assert [r["tablename"] for r in tables] == ["schema_migrations", "stream_batches", "streams"]


async def test_a_component_adds_migrations_later(
    server: PostgresServer, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = Migration(1, "a table", "CREATE TABLE {schema}.things (id int PRIMARY KEY)")
    second = Migration(2, "a column", "ALTER TABLE {schema}.things ADD COLUMN name text")
    async with connected(server) as conn:
        assert await migrate(conn, schema, "example", [first]) == [1]
        assert await migrate(conn, schema, "example", [first, second]) == [2]
        assert await migrate(conn, schema, "example", [first, second]) == []
        # Another component's versions are its own.
        assert await migrate(conn, schema, "streams", STREAMS_MIGRATIONS) == [1, 2, 3, 4]
        await conn.execute(f'INSERT INTO "{schema}".things VALUES (1, $1)', "kept")
        # An older release (knowing only the first step) uses the newer schema as is.
        with caplog.at_level(logging.WARNING):
            assert await migrate(conn, schema, "example", [first]) == []
        assert "does not know" in caplog.text
        assert await conn.fetchval(f'SELECT name FROM "{schema}".things') == "kept"
        with pytest.raises(ValueError, match="numbered"):
            await migrate(conn, schema, "example", [second])


async def test_a_database_made_by_the_first_release_is_migrated_in_place(
    make_storage: MakeStorage, server: PostgresServer, schema: str
) -> None:
    sid = "first-release-stream1"
    async with connected(server) as conn:
        assert await migrate(conn, schema, "streams", STREAMS_MIGRATIONS[:1]) == [1]
        await conn.execute(
            f"""INSERT INTO "{schema}".streams (stream_id, flow, created_at, updated_at,
                expires_at, lease_until, cancel_requested)
                VALUES ($1, 'f', now(), now(), now() + interval '1 hour',
                        now() + interval '1 hour', true)""",
            sid,
        )
    async with started(make_storage) as storage:
        loaded = await storage.load(sid)
        assert loaded is not None and loaded.status == "open"
        assert (loaded.cancel_requested, loaded.stop_requested) == (True, False)
        await storage.create(record("second-release-strm1"))
        assert await storage.request_stop("second-release-strm1") is True
        stopped = await storage.load("second-release-strm1")
        assert stopped is not None and stopped.stop_requested
    async with connected(server) as conn:
        versions = await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations ORDER BY 1')
    assert [row["version"] for row in versions] == [1, 2, 3, 4]


async def test_a_failed_migration_leaves_nothing_half_done(
    server: PostgresServer, schema: str
) -> None:
    good = Migration(1, "a table", "CREATE TABLE {schema}.things (id int)")
    bad = Migration(2, "broken", "ALTER TABLE {schema}.things ADD COLUMN id int")
    async with connected(server) as conn:
        with pytest.raises(asyncpg.DuplicateColumnError):
            await migrate(conn, schema, "example", [good, bad])
        assert await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema) is None
        assert await migrate(conn, schema, "example", [good]) == [1]


def test_schema_names_are_checked() -> None:
    for bad in ["", "Upper", "1digit", "has-dash", 'quote"', "x" * 64]:
        with pytest.raises(ValueError, match="schema"):
            PostgresStreamStorage("postgresql://localhost/db", schema=bad)


# -- the rows ----------------------------------------------------------------------


async def test_one_row_per_flush_keyed_by_offset(
    make_storage: MakeStorage, server: PostgresServer, schema: str
) -> None:
    sid = "layout-stream-000001"
    async with started(make_storage) as storage:
        await storage.create(record(sid))
        await storage.append(sid, 0, [b"0", b"1", b"2"])
        await storage.append(sid, 3, [b'{"a":1}'])
        await storage.finish(sid, 4, Terminal("done", b'"r"'), now=2000.0, expires_at=5600.0)
        stored = await storage.load(sid)
    async with connected(server) as conn:
        batches = await conn.fetch(
            f'SELECT first_offset, count, chunks FROM "{schema}".stream_batches '
            "WHERE stream_id = $1 ORDER BY first_offset",
            sid,
        )
        row = await conn.fetchrow(f'SELECT * FROM "{schema}".streams WHERE stream_id = $1', sid)
    assert [tuple(b) for b in batches] == [(0, 3, b"0\n1\n2"), (3, 1, b'{"a":1}')]
    assert row is not None
    assert (row["status"], row["length"], row["lease_until"]) == ("done", 4, None)
    assert row["expires_at"].timestamp() == 5600.0
    assert stored is not None and stored.terminal == Terminal("done", b'"r"')
    assert (stored.updated_at, stored.expires_at, stored.length) == (2000.0, 5600.0, 4)


async def test_times_beyond_python_datetimes_mean_never(make_storage: MakeStorage) -> None:
    sid = "forever-stream-000001"
    async with started(make_storage) as storage:
        await storage.create(record(sid, ttl=1e15))  # a ttl meant as "keep forever"
        await storage.renew([sid], 1e15, 1e16)
        assert await storage.purge(4e9) == 0
        stored = await storage.load(sid)
    assert stored is not None and stored.expires_at > 2e11  # year 9999


async def test_reads_seek_to_the_batch_holding_the_offset(make_storage: MakeStorage) -> None:
    sid = "seek-stream-0000001"
    async with started(make_storage) as storage:
        await storage.create(record(sid))
        for b in range(40):
            await storage.append(sid, b * 5, [str(b * 5 + k).encode() for k in range(5)])
        assert await storage.read(sid, 0, 3) == [b"0", b"1", b"2"]
        assert await storage.read(sid, 7, 6) == [str(i).encode() for i in range(7, 13)]
        assert await storage.read(sid, 197, 10) == [b"197", b"198", b"199"]
        assert await storage.read(sid, 200, 10) == []
        assert await storage.read("unknown-stream-00001", 0, 10) == []


async def test_writes_to_a_missing_stream_are_refused(make_storage: MakeStorage) -> None:
    async with started(make_storage) as storage:
        with pytest.raises(StreamNotFoundError):
            await storage.append("missing-stream-00001", 0, [b"1"])
        with pytest.raises(StreamNotFoundError):
            await storage.finish(
                "missing-stream-00001", 0, Terminal("done", b"1"), now=1.0, expires_at=2.0
            )
        assert await storage.request_cancel("missing-stream-00001") is False
        assert await storage.request_stop("missing-stream-00001") is False
        # Gone: reported, so that a writer of it stops.
        assert await storage.renew(["missing-stream-00001"], 1.0, 2.0) == {"missing-stream-00001"}


async def test_a_create_whose_answer_was_lost_is_not_a_conflict(
    make_storage: MakeStorage, server: PostgresServer, schema: str
) -> None:
    sid = "retried-create-00001"
    async with started(make_storage) as storage:
        await storage.create(record(sid))
        # As if the answer had been lost and the manager retried: the storage still
        # holds its token, and the row carries it.
        async with connected(server) as conn:
            token = await conn.fetchval(
                f'SELECT create_token FROM "{schema}".streams WHERE stream_id = $1', sid
            )
        storage._create_tokens[sid] = token
        await storage.create(record(sid))
        # Any other create of the same id is refused.
        with pytest.raises(StreamExistsError):
            await storage.create(record(sid))
        async with started(make_storage) as other:
            with pytest.raises(StreamExistsError):
                await other.create(record(sid))


async def test_renew_reports_cancels_stops_and_ends_and_never_revives_a_finished_stream(
    make_storage: MakeStorage,
) -> None:
    ids = [f"renewed-stream-{n:05}" for n in range(1, 5)]
    async with started(make_storage) as storage:
        for sid in ids:
            await storage.create(record(sid))
        assert await storage.request_cancel(ids[1]) is True
        await storage.finish(ids[2], 0, Terminal("done", b"1"), now=1.0, expires_at=50.0)
        assert await storage.request_cancel(ids[2]) is False
        assert await storage.request_stop(ids[2]) is False
        assert await storage.request_stop(ids[3]) is True
        renewed = await storage.renew([ids[2], ids[0], ids[1], ids[3]], 3000.0, 9000.0)
        assert renewed == {ids[1], ids[2], ids[3]}
        first = await storage.load(ids[0])
        finished = await storage.load(ids[2])
        stopped = await storage.load(ids[3])
    assert first is not None and (first.lease_until, first.expires_at) == (3000.0, 9000.0)
    assert (first.cancel_requested, first.stop_requested) == (False, False)
    assert finished is not None
    assert (finished.status, finished.lease_until, finished.expires_at) == ("done", None, 50.0)
    assert stopped is not None and stopped.lease_until == 3000.0
    assert (stopped.cancel_requested, stopped.stop_requested) == (False, True)


async def test_a_cancel_outranks_a_stop_either_way(make_storage: MakeStorage) -> None:
    async with started(make_storage) as storage:
        for sid in ("ranked-stream-000001", "ranked-stream-000002"):
            await storage.create(record(sid))
        assert await storage.request_stop("ranked-stream-000001") is True
        assert await storage.request_cancel("ranked-stream-000001") is True
        # A stop after a cancel is accepted (the stream is open) but changes nothing.
        assert await storage.request_cancel("ranked-stream-000002") is True
        assert await storage.request_stop("ranked-stream-000002") is True
        for sid in ("ranked-stream-000001", "ranked-stream-000002"):
            loaded = await storage.load(sid)
            assert loaded is not None
            assert (loaded.cancel_requested, loaded.stop_requested) == (True, False)


# -- abandonment ------------------------------------------------------------------------

_ABANDONED = Terminal("error", b'{"status":"UNAVAILABLE","message":"stream abandoned"}')


async def test_abandon_records_the_committed_length_and_wakes_watchers(
    make_storage: MakeStorage,
) -> None:
    sid = "abandoned-stream-0001"
    async with started(make_storage) as storage, started(make_storage) as writer:
        await writer.create(record(sid))  # lease until 1010
        await writer.append(sid, 0, [b"1", b"2"])
        await writer.append(sid, 2, [b"3"])
        async with aclosing(watching(storage, sid)) as watch:
            await next_wake(watch)  # in place
            # Still leased at 1005; lapsed at 1011.
            assert await storage.abandon(sid, _ABANDONED, now=1005.0, expires_at=2000.0) is False
            assert await storage.abandon(sid, _ABANDONED, now=1011.0, expires_at=2000.0) is True
            await next_wake(watch)  # the NOTIFY went out with the commit
        assert await storage.abandon(sid, _ABANDONED, now=1012.0, expires_at=3000.0) is False
        assert (
            await storage.abandon("never-made-stream-01", _ABANDONED, now=1.0, expires_at=2.0)
            is False
        )
        loaded = await storage.load(sid)
        assert loaded is not None and loaded.terminal == _ABANDONED
        assert (loaded.status, loaded.length, loaded.lease_until) == ("error", 3, None)
        assert (loaded.updated_at, loaded.expires_at) == (1011.0, 2000.0)

        # The stalled writer comes back: its flush is refused, its finish changes
        # nothing, its renewal reports the stream, and no stop or cancel is taken.
        with pytest.raises(StreamClosedError):
            await writer.append(sid, 3, [b"4"])
        await writer.finish(sid, 4, Terminal("done", b"9"), now=1013.0, expires_at=4000.0)
        assert await writer.renew([sid], 5000.0, 6000.0) == {sid}
        assert await writer.request_stop(sid) is False
        assert await writer.request_cancel(sid) is False
        after = await storage.load(sid)
        assert after == loaded
        assert await storage.read(sid, 0, 10) == [b"1", b"2", b"3"]
        with pytest.raises(StreamNotFoundError):
            await writer.finish(
                "never-made-stream-01", 0, Terminal("done", b"1"), now=1.0, expires_at=2.0
            )


async def test_a_finished_stream_refuses_appends_and_keeps_its_first_end(
    make_storage: MakeStorage,
) -> None:
    sid = "finished-stream-00001"
    async with started(make_storage) as storage:
        await storage.create(record(sid))
        await storage.append(sid, 0, [b"1"])
        await storage.finish(sid, 1, Terminal("done", b"1"), now=1001.0, expires_at=2000.0)
        await storage.finish(sid, 1, Terminal("done", b"1"), now=1001.0, expires_at=2000.0)
        await storage.finish(sid, 1, Terminal("done", b"2"), now=1002.0, expires_at=3000.0)
        with pytest.raises(StreamClosedError):
            await storage.append(sid, 1, [b"2"])
        loaded = await storage.load(sid)
    assert loaded is not None and loaded.terminal == Terminal("done", b"1")
    assert (loaded.length, loaded.updated_at, loaded.expires_at) == (1, 1001.0, 2000.0)


async def test_purge_deletes_in_rounds_with_the_batches(
    make_storage: MakeStorage, server: PostgresServer, schema: str
) -> None:
    async with started(make_storage) as storage:
        async with connected(server) as conn:  # 1,200 expired streams, in one statement
            await conn.execute(
                f"""INSERT INTO "{schema}".streams
                    (stream_id, flow, created_at, updated_at, expires_at)
                SELECT 'expired-stream-' || lpad(n::text, 6, '0'), 'f',
                    to_timestamp(1), to_timestamp(1), to_timestamp(100)
                FROM generate_series(1, 1200) n"""
            )
            await conn.execute(
                f"""INSERT INTO "{schema}".stream_batches
                SELECT stream_id, 0, 1, '1'::bytea FROM "{schema}".streams"""
            )
        await storage.create(record("kept-stream-0000001", now=1000.0))
        assert await storage.purge(1000.0) == 1200
        assert await storage.purge(1000.0) == 0
        async with connected(server) as conn:
            batches = await conn.fetchval(f'SELECT count(*) FROM "{schema}".stream_batches')
        assert batches == 0
        assert await storage.load("kept-stream-0000001") is not None


# -- errors ------------------------------------------------------------------------


async def test_an_unreachable_server_is_unavailable_and_says_where() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        storage = PostgresStreamStorage(
            f"postgresql://nobody:secret@127.0.0.1:{port}/db", command_timeout=2
        )
        with pytest.raises(UnavailableError, match=f"127.0.0.1:{port}/db") as caught:
            await storage.start()
    assert "secret" not in str(caught.value)
    with pytest.raises(RuntimeError, match="not started"):
        await storage.load("never-started-00001")


async def test_a_role_without_privileges_is_permission_denied(server: PostgresServer) -> None:
    schema = new_schema()
    role = f"limited_{schema}"
    async with connected(server) as conn:
        await conn.execute(f'CREATE ROLE "{role}" LOGIN')
        await conn.execute(f'CREATE SCHEMA "{schema}"')  # exists, but not the role's
    dsn = server.dsn.replace("postgres@", f"{role}@", 1)
    try:
        with pytest.raises(PermissionDeniedError, match="PostgreSQL refused"):
            await PostgresStreamStorage(dsn, schema=schema).start()
        # Once an owner has migrated, the documented grants are enough to run.
        owner = PostgresStreamStorage(server.dsn, schema=schema)
        await owner.start()
        await owner.close()
        async with connected(server) as conn:
            await conn.execute(
                f"""GRANT USAGE ON SCHEMA "{schema}" TO "{role}";
                GRANT SELECT ON "{schema}".schema_migrations TO "{role}";
                GRANT SELECT, INSERT, UPDATE, DELETE
                    ON "{schema}".streams, "{schema}".stream_batches TO "{role}";"""
            )
        limited = PostgresStreamStorage(dsn, schema=schema)
        await limited.start()
        try:
            await limited.create(record("limited-role-stream-1"))
            await limited.append("limited-role-stream-1", 0, [b"1"])
            assert await limited.read("limited-role-stream-1", 0, 5) == [b"1"]
            assert await limited.purge(4e9) == 1
        finally:
            await limited.close()
    finally:
        await drop_schema(server.dsn, schema)
        async with connected(server) as conn:
            await conn.execute(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')


# -- LISTEN ------------------------------------------------------------------------


def watching(storage: PostgresStreamStorage, stream_id: str) -> AsyncGenerator[None, None]:
    return cast(AsyncGenerator[None, None], storage.watch(stream_id))


async def next_wake(watch: AsyncIterator[None]) -> None:
    with anyio.fail_after(10):
        await watch.__anext__()


async def test_watches_share_one_connection_and_drop_unwatched_channels(
    make_storage: MakeStorage, server: PostgresServer
) -> None:
    async with started(make_storage) as storage, started(make_storage) as writer:
        ids = [f"watched-stream-{n:05}" for n in range(5)]
        for sid in ids:
            await writer.create(record(sid))
        opened = [watching(storage, sid) for sid in ids]
        for watch in opened:
            await next_wake(watch)  # in place
        await writer.append(ids[2], 0, [b"1"])
        await next_wake(opened[2])
        assert storage.listen_connections == 1
        async with connected(server) as conn:
            listeners = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
            )
        assert listeners >= 1
        for watch in opened[1:]:
            await watch.aclose()
        # The next LISTEN drops the channels nobody watches any more.
        await writer.create(record("watched-stream-late1"))
        late = watching(storage, "watched-stream-late1")
        await next_wake(late)
        conn_listening = storage._notifier._listening
        assert len(conn_listening) == 2
        await writer.append(ids[0], 0, [b"1"])
        await next_wake(opened[0])
        await opened[0].aclose()
        await late.aclose()


async def test_a_lost_listen_connection_reconnects_and_wakes_every_watch(
    make_storage: MakeStorage, server: PostgresServer
) -> None:
    async with started(make_storage) as storage, started(make_storage) as writer:
        sid = "reconnecting-stream-01"
        await writer.create(record(sid))
        async with aclosing(watching(storage, sid)) as watch:
            await next_wake(watch)
            async with connected(server) as conn:
                killed = await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
                )
            assert killed >= 1
            await next_wake(watch)  # reconnected: re-read, changes meanwhile are unknown
            assert storage.listen_connections == 2
            await writer.append(sid, 0, [b"1"])
            await next_wake(watch)  # and notifications flow on the new connection


async def test_a_closed_storage_refuses_to_watch(make_storage: MakeStorage) -> None:
    storage = make_storage()
    await storage.start()
    watch = storage.watch("closed-watch-stream-1")
    await storage.close()
    with pytest.raises(UnavailableError, match="closed"):
        await next_wake(watch)


async def test_close_in_a_cancelled_task_still_closes_every_connection(
    make_storage: MakeStorage, server: PostgresServer, schema: str
) -> None:
    name = f"closing-{schema}"
    storage = make_storage(connect_options={"server_settings": {"application_name": name}})
    await storage.start()
    await storage.create(record("closing-stream-00001"))
    watch = watching(storage, "closing-stream-00001")
    await next_wake(watch)  # the LISTEN connection is open too
    count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
    async with connected(server) as conn:
        assert await conn.fetchval(count, name) == 2
        with anyio.CancelScope() as scope:
            scope.cancel()
            await storage.close()
        await watch.aclose()
        with anyio.fail_after(10):  # a backend leaves the view once its exit is done
            while await conn.fetchval(count, name):  # noqa: ASYNC110 - the server's view
                await anyio.sleep(0.05)
