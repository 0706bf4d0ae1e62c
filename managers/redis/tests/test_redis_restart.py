"""Redis going away mid-stream: writers and readers retry, nothing flushed is lost, and
no reader skips or repeats an offset.

Each test runs a redis-server of its own with the append-only file on: stopped with
SIGTERM (it syncs the AOF; ``appendfsync everysec``, Redis's default) or killed with
SIGKILL (``appendfsync always``: every acknowledged write is on disk), then started
again on the same port and directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from stream_gateway import StreamNotFoundError
from stream_gateway.streams import ErrorEvent, ResultEvent, StreamEvent, StreamManager
from stream_gateway_redis.testing import RedisServer

from redis_support import Site, chunks_of, collect, new_prefix

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHUNKS = 240
OUTAGE_AT = 80  # chunks flushed before the server goes away


@pytest.mark.parametrize(
    ("how", "appendfsync"), [("stop", "everysec"), ("kill", "always")], ids=["sigterm", "sigkill"]
)
async def test_writers_and_readers_ride_out_a_restart(
    tmp_path: Path, how: str, appendfsync: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stream_gateway.streams")
    server = RedisServer(directory=tmp_path / "redis", appendfsync=appendfsync)
    server.directory.mkdir()
    server.start()
    try:
        site = Site(server.url, new_prefix())
        await run_through_outage(site, server, how)
    finally:
        server.cleanup()
    # The outage was felt: a flush retried, and the follower's blocking read restarted.
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("backend unavailable, retrying") for m in messages), messages
    assert any(m.startswith("listener for ") for m in messages), messages


async def run_through_outage(site: Site, server: RedisServer, how: str) -> None:
    options = {"lease": 5.0, "write_retry_for": 60.0}
    results: dict[str, list[StreamEvent]] = {}
    flushed_before = 0
    async with (
        site.manager(**options) as writing,
        site.manager(**options) as reading,
        site.manager(**options) as joining,
    ):
        writer = await writing.open(flow="restart")
        outage_due = anyio.Event()
        outage_over = anyio.Event()

        async def follow(name: str, manager: StreamManager, start: int) -> None:
            results[name] = await collect(manager, writer.stream_id, start, within=120)

        async def write() -> None:
            nonlocal flushed_before
            for i in range(CHUNKS):
                await writer.write({"i": i})
                if i % 3 == 2:
                    await writer.flush()
                if i == OUTAGE_AT:
                    await writer.flush()
                    flushed_before = writer.length
                    outage_due.set()
                    await outage_over.wait()  # then write on: some flushes meet a cold cache
                await anyio.sleep(0.005)
            await writer.done({"n": CHUNKS})

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow, "from-start", reading, 0)
            tg.start_soon(write)
            await outage_due.wait()
            tg.start_soon(follow, "mid-stream", joining, 50)
            await anyio.sleep(0.05)
            if how == "kill":
                await anyio.to_thread.run_sync(server.kill)
            else:
                await anyio.to_thread.run_sync(server.stop)
            # Down for a moment: writes buffer, flushes and reads retry meanwhile.
            async with anyio.create_task_group() as during:
                during.start_soon(writer.write, {"during": True})
                await anyio.sleep(0.3)
                await anyio.to_thread.run_sync(server.start)
            outage_over.set()

    assert flushed_before > OUTAGE_AT
    expected: list[tuple[int, object]] = [(i, {"i": i}) for i in range(OUTAGE_AT + 1)]
    expected.append((OUTAGE_AT + 1, {"during": True}))
    expected += [(i + 1, {"i": i}) for i in range(OUTAGE_AT + 1, CHUNKS)]
    for name, start in (("from-start", 0), ("mid-stream", 50)):
        events = results[name]
        assert chunks_of(events) == expected[start:], name
        assert events[-1] == ResultEvent(b'{"n":%d}' % CHUNKS), name
    async with site.manager() as later:  # and what is stored is exactly that
        again = await collect(later, writer.stream_id)
    assert chunks_of(again) == expected


async def test_a_redis_without_persistence_forgets_its_streams_and_says_so(
    tmp_path: Path,
) -> None:
    server = RedisServer(directory=tmp_path / "redis", persistence=False)
    server.directory.mkdir()
    server.start()
    try:
        site = Site(server.url, new_prefix())
        async with site.manager(write_retry_for=30) as writing, site.manager() as reading:
            writer = await writing.open()
            await writer.write("kept only in memory")
            await writer.flush()
            follower = reading.subscribe(writer.stream_id)
            assert (await follower.__anext__()).offset == 0  # type: ignore[union-attr]
            await anyio.to_thread.run_sync(server.restart)
            # The follower learns the stream is gone; so does the writer's next flush.
            with anyio.fail_after(30):
                rest = [event async for event in follower]
            assert rest == [ErrorEvent("NOT_FOUND", "stream not found")]
            await writer.write("after")
            with pytest.raises(StreamNotFoundError):
                await writer.flush()
            with pytest.raises(StreamNotFoundError):
                await reading.info(writer.stream_id)
    finally:
        server.cleanup()
