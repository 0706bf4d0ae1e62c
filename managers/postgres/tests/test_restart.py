"""PostgreSQL restarted (or crashed) mid-stream: writers and readers retry, nothing
committed is lost, and no reader skips or repeats an offset.

These tests run a server of their own: stopping it disturbs no other test.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest

from stream_gateway.streams import (
    ChunkEvent,
    ResultEvent,
    StreamEvent,
    StreamManager,
    StreamWriter,
)
from stream_gateway_postgres import PostgresStreamStorage
from stream_gateway_postgres.testing import PostgresServer, new_schema

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHUNKS = 300


@pytest.fixture(scope="module")
def private_server() -> Iterator[PostgresServer]:
    # Commits are acknowledged only once in the WAL, as in production, so that an
    # immediate stop (a crash) may not lose an acknowledged commit.
    with PostgresServer(settings={"synchronous_commit": "on"}) as server:
        yield server


def manager(server: PostgresServer, schema: str, **options: Any) -> StreamManager:
    storage = PostgresStreamStorage(server.dsn, schema=schema, command_timeout=3)
    return StreamManager(storage, write_retry_for=60, **options)


class Reader:
    """A subscriber that records every event, from ``start``."""

    def __init__(self, manager: StreamManager, stream_id: str, start: int = 0) -> None:
        self.manager, self.stream_id, self.start = manager, stream_id, start
        self.events: list[StreamEvent] = []

    async def run(self, writer: StreamWriter) -> None:
        # A resume names an offset the stream has reached (a later one is refused).
        while writer.committed < self.start:  # noqa: ASYNC110 - the writer offers no event
            await anyio.sleep(0.01)
        async for event in self.manager.subscribe(self.stream_id, self.start):
            self.events.append(event)

    def offsets(self) -> list[int]:
        return [e.offset for e in self.events if isinstance(e, ChunkEvent)]


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_server_restarted_mid_stream(
    private_server: PostgresServer, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    schema = new_schema()
    caplog.set_level(logging.WARNING)
    async with (
        # A lease that outlasts the outage: the writer cannot renew while it lasts.
        manager(private_server, schema, flush_interval=0.02, lease=30) as writing,
        manager(private_server, schema, poll_fallback=0.5) as reading,
        manager(private_server, schema, poll_fallback=0.5) as other,
    ):
        writer = await writing.open()
        readers = [
            Reader(reading, writer.stream_id),
            Reader(reading, writer.stream_id),
            Reader(other, writer.stream_id, start=50),
        ]
        restarted = anyio.Event()

        async def restart_at(offset: int) -> None:
            # Polls progress made by other tasks, which signal nothing.
            while writer.length < offset or any(len(r.offsets()) < 60 for r in readers[:2]):  # noqa: ASYNC110
                await anyio.sleep(0.01)
            await anyio.to_thread.run_sync(lambda: private_server.stop(mode=mode))
            await anyio.sleep(5)  # down long enough for every side to notice
            await anyio.to_thread.run_sync(private_server.start)
            restarted.set()

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for reader in readers:
                    tg.start_soon(reader.run, writer)
                tg.start_soon(restart_at, 100)
                for i in range(CHUNKS):
                    await writer.write({"i": i})
                    await anyio.sleep(0.003)
                    if i == CHUNKS - 50:
                        await restarted.wait()  # the last chunks go to the new server
                await writer.done({"n": CHUNKS})

    assert any("retrying" in r.getMessage() for r in caplog.records)  # the outage was felt
    for reader in readers:
        assert reader.offsets() == list(range(reader.start, CHUNKS))  # no skip, no repeat
        assert [e.data for e in reader.events if isinstance(e, ChunkEvent)] == [
            {"i": i} for i in range(reader.start, CHUNKS)
        ]
        assert reader.events[-1] == ResultEvent(b'{"n":300}')

    storage = PostgresStreamStorage(private_server.dsn, schema=schema)
    await storage.start()
    try:
        stored = await storage.load(writer.stream_id)
        assert stored is not None and (stored.status, stored.length) == ("done", CHUNKS)
        assert len(await storage.read(writer.stream_id, 0, CHUNKS + 1)) == CHUNKS
    finally:
        await storage.close()
