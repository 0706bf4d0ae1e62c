"""`PostgresDurableStore` beyond the shared contract (``tests/durable``): wake-ups by
notification, store URLs, migrations, and calls retried over a dropped connection."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import anyio
import asyncpg
import pytest
from tests.durable.helpers import until_status

from stream_gateway import InvalidArgumentError
from stream_gateway.durable import (
    DurableContext,
    DurableEngine,
    ExecutionRecord,
    JournalEntry,
    Lease,
    durable_flow,
    store_from_url,
)
from stream_gateway.stores import open_durable_store, open_stream_storage
from stream_gateway_postgres import PostgresDurableStore, PostgresStreamStorage
from stream_gateway_postgres._durable_layout import DURABLE_MIGRATIONS
from stream_gateway_postgres._layout import STREAMS_MIGRATIONS
from stream_gateway_postgres._migrations import migrate
from stream_gateway_postgres.testing import PostgresServer

pytestmark = pytest.mark.anyio


@durable_flow(input=int, output=int)
async def parked(n: int, ctx: DurableContext) -> int:
    """Waits for the signal ``go``, then adds it to ``n``."""
    go: int = await ctx.wait_for_signal("go", "go")
    return n + go


async def test_a_worker_polling_once_a_minute_is_woken_by_notifications(
    server: PostgresServer, schema: str
) -> None:
    # Two engines on two store instances share no in-process notifier: only the
    # store's NOTIFYs can tell the worker about the other engine's work in time.
    worker_side = DurableEngine([parked], store=PostgresDurableStore(server.dsn, schema=schema))
    client = DurableEngine(
        [parked], store=PostgresDurableStore(server.dsn, schema=schema), poll_interval=0.05
    )
    async with client, worker_side, worker_side.worker(poll_interval=60):
        with anyio.fail_after(30):  # half the poll interval
            now = await client.schedule(parked, 1)
            later = await client.schedule(parked, 2, delay=0.5)  # a timer, set elsewhere
            for op in (now, later):
                await until_status(client, op.name, "waiting")
                await client.signal(op.name, "go", 10)
                await client.wait(op.name)
            assert (await client.get_state(now.name)).response == 11
            assert (await client.get_state(later.name)).response == 12


async def test_store_urls_name_the_schema(server: PostgresServer, schema: str) -> None:
    store = store_from_url(f"{server.dsn}#schema={schema}")
    assert isinstance(store, PostgresDurableStore)
    assert store.schema == schema and "#" not in store.dsn
    assert PostgresDurableStore.from_url(server.dsn).schema == "stream_gateway"
    alias = store_from_url(server.dsn.replace("postgresql://", "postgres://", 1))
    assert isinstance(alias, PostgresDurableStore)
    # The one resolver: the same URL names the durable store and the streams.
    opened = open_durable_store(f"{server.dsn}#schema={schema}")
    assert isinstance(opened, PostgresDurableStore) and opened.schema == schema
    async with opened:
        assert await opened.list_executions() == []
    streams = open_stream_storage(f"{server.dsn}#schema={schema}")
    assert isinstance(streams, PostgresStreamStorage)
    with pytest.raises(InvalidArgumentError, match="unknown option 'shema'"):
        open_durable_store(f"{server.dsn}#shema={schema}")


async def test_migrations_are_recorded_once_next_to_the_streams(
    server: PostgresServer, schema: str
) -> None:
    async with PostgresDurableStore(server.dsn, schema=schema):
        pass
    async with PostgresDurableStore(server.dsn, schema=schema) as again:
        await again.create(ExecutionRecord(id="x" * 22, flow="f", input="1"))
    streams = PostgresStreamStorage(server.dsn, schema=schema)
    await streams.start()
    await streams.close()
    conn = await asyncpg.connect(server.dsn)
    try:
        rows = await conn.fetch(
            f'SELECT component, version FROM "{schema}".schema_migrations ORDER BY 1, 2'
        )
    finally:
        await conn.close()
    assert [(r["component"], r["version"]) for r in rows] == [
        ("durable", m.version) for m in DURABLE_MIGRATIONS
    ] + [("streams", m.version) for m in STREAMS_MIGRATIONS]


async def test_a_database_made_by_the_first_durable_release_is_migrated_in_place(
    server: PostgresServer, schema: str
) -> None:
    flow_id = "m" * 22
    conn = await asyncpg.connect(server.dsn)
    try:
        assert await migrate(conn, schema, "durable", DURABLE_MIGRATIONS[:1]) == [1]
        await conn.execute(
            f'INSERT INTO "{schema}".durable_executions (id, flow, status, input, '
            "created_at, updated_at, due_at) VALUES ($1, 'f', 'pending', '1', 1, 1, 1)",
            flow_id,
        )
    finally:
        await conn.close()
    async with PostgresDurableStore(server.dsn, schema=schema) as store:
        kept = await store.get(flow_id)
        assert kept.status == "pending" and not kept.evict_requested
        [claimed] = await store.claim("w", now=2.0, lease_until=60.0, limit=1, flows=["f"])
        lease = Lease(flow_id, "w", claimed.lease_token)
        assert await store.request_evict(flow_id, 3.0)
        step = JournalEntry(seq=0, kind="step", key="s", status="completed", started_at=3.0)
        await store.append(lease, dataclasses.replace(step, stream_at=7), 3.0)
    async with PostgresDurableStore(server.dsn, schema=schema) as again:
        assert (await again.get(flow_id)).evict_requested
        [kept_entry] = (await again.history(flow_id)).entries
        assert kept_entry.key == "s" and kept_entry.stream_at == 7


async def test_a_call_on_a_dropped_connection_is_tried_again(
    server: PostgresServer, schema: str
) -> None:
    name = f"sg-retry-{schema}"
    options: dict[str, Any] = {"server_settings": {"application_name": name}}

    async def kill_pooled() -> None:
        """What a server restart or a network cut does to idle pooled connections
        (asyncpg may not notice before it hands one out again)."""
        conn = await asyncpg.connect(server.dsn)
        try:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1",
                name,
            )
        finally:
            await conn.close()
        assert killed >= 1

    async with PostgresDurableStore(server.dsn, schema=schema, connect_options=options) as store:
        stored, _ = await store.create(ExecutionRecord(id="y" * 22, flow="f", input="1"))
        await kill_pooled()
        assert (await store.get(stored.id)).seq == stored.seq  # a read
        await kill_pooled()
        assert await store.wake(stored.id, time.time())  # a transaction
        await kill_pooled()
        other, created = await store.create(
            ExecutionRecord(id="z" * 22, flow="f", input="1", due_at=1.0)
        )
        assert created and other.status == "pending"  # a one-statement write
        await kill_pooled()
        claimed = await store.claim(
            "w", now=time.time(), lease_until=time.time() + 60, limit=2, flows=["f"]
        )
        assert sorted(r.id for r in claimed) == [stored.id, other.id]
