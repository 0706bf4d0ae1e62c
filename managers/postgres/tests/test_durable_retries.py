"""When the durable store's connection layer tries a call again, on a real server.

A one-statement write (`Database.statement`) commits as it ends: tried again only when
the server says it rolled it back; a connection lost while it ran may have committed
it. A transaction that failed before its COMMIT, and a read, are tried again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from asyncpg.exceptions import InternalClientError

from stream_gateway.durable import DurableStoreError, LeaseLostError
from stream_gateway_postgres._durable_conn import Database
from stream_gateway_postgres._durable_layout import LEASE_LOST, REFUSED
from stream_gateway_postgres._migrations import Connection
from stream_gateway_postgres.testing import PostgresServer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def db(server: PostgresServer, schema: str) -> AsyncIterator[Database]:
    async def prepare(conn: Connection) -> None:
        await conn.execute(f'CREATE SCHEMA "{schema}"; CREATE TABLE "{schema}".t (n int)')

    database = Database(
        server.dsn, max_connections=2, command_timeout=10, retries=2, options={}, prepare=prepare
    )
    await database.open()
    yield database
    await database.close()


def raising(sqlstate: str) -> str:
    """A statement the server fails with ``sqlstate`` (it rolls the statement back)."""
    return f"DO $$ BEGIN RAISE EXCEPTION 'refused' USING ERRCODE = '{sqlstate}'; END $$"


async def rows(db: Database, schema: str) -> int:
    count: int = await db.read(
        "counting", lambda c: c.fetchval(f'SELECT count(*) FROM "{schema}".t')
    )
    return count


async def test_a_statement_the_server_rolled_back_is_tried_again(db: Database, schema: str) -> None:
    calls = 0

    async def body(conn: Connection) -> None:
        nonlocal calls
        calls += 1
        await conn.execute(
            raising("40P01") if calls == 1 else f'INSERT INTO "{schema}".t VALUES (1)'
        )

    await db.statement("inserting", body)
    assert calls == 2 and await rows(db, schema) == 1


async def test_a_statement_asyncpg_refused_to_send_is_tried_again(
    db: Database, schema: str
) -> None:
    """A pooled connection the server closed while idle, before asyncpg noticed: the
    next call fails in asyncpg's protocol, before anything is sent. What asyncpg
    raises then is raised here, by the body, on the real connection."""
    calls = 0

    async def body(conn: Connection) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise InternalClientError(
                "cannot switch to state 11; another operation (2) is in progress"
            )
        await conn.execute(f'INSERT INTO "{schema}".t VALUES (1)')

    await db.statement("inserting", body)
    assert calls == 2 and await rows(db, schema) == 1


async def test_a_statement_whose_connection_dropped_is_not_tried_again(
    db: Database, schema: str
) -> None:
    calls = 0

    async def body(conn: Connection) -> None:
        nonlocal calls
        calls += 1
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    with pytest.raises(DurableStoreError, match="while inserting"):
        await db.statement("inserting", body)
    assert calls == 1  # it may have committed: the engine replays from the journal


async def test_a_transaction_that_failed_before_its_commit_is_tried_again(
    db: Database, schema: str
) -> None:
    calls = 0

    async def body(conn: Connection) -> None:
        nonlocal calls
        calls += 1
        await conn.execute(f'INSERT INTO "{schema}".t VALUES (1)')
        if calls == 1:
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    await db.write("inserting", body)
    assert calls == 2 and await rows(db, schema) == 1  # the first one rolled back


async def test_the_durable_functions_sqlstates_are_the_contracts_errors(db: Database) -> None:
    with pytest.raises(LeaseLostError, match="refused"):
        await db.statement("writing", lambda c: c.execute(raising(LEASE_LOST)))
    with pytest.raises(ValueError, match="refused"):
        await db.statement("writing", lambda c: c.execute(raising(REFUSED)))
    with pytest.raises(asyncpg.UndefinedTableError):  # anything else: as it is
        await db.statement("writing", lambda c: c.execute("SELECT * FROM nowhere"))
