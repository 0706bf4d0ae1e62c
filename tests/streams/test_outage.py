"""A backend outage longer than the retry window, while a flow writes at LLM rates.

The storage is a real SQLite file behind `FlakyStorage`, which fails on demand the way
a backend that stopped answering does (`UnavailableError` from every call).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from stream_gateway import FlowContext, RequestContext, UnavailableError, flow
from stream_gateway.asgi.runner import FlowRunner
from stream_gateway.streams import (
    ChunkEvent,
    ErrorEvent,
    StreamEvent,
    StreamManager,
    StreamWriter,
)
from stream_gateway.streams.sqlite import SqliteStreamStorage
from tests.faults import FlakyStorage

pytestmark = pytest.mark.anyio
WINDOW = 0.5  # write_retry_for


@flow
async def ticker(data: Any, ctx: FlowContext[Any]) -> str:
    """100 chunks a second until stopped."""
    for i in range(100_000):
        await ctx.send_chunk(i)
        await anyio.sleep(0.01)
    return "never"


async def until(condition: Callable[[], bool]) -> None:
    """Wait (at most 30 s, against hangs only) until ``condition()`` holds."""
    with anyio.fail_after(30):
        while not condition():  # noqa: ASYNC110 - polls state owned by the code under test
            await anyio.sleep(0.01)


@pytest.fixture
def db_path() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp) / "streams.db"


class Follower:
    """A local subscriber that records what it saw and signals progress."""

    def __init__(self, manager: StreamManager, stream_id: str) -> None:
        self.manager, self.stream_id = manager, stream_id
        self.events: list[StreamEvent] = []
        self.ended = anyio.Event()

    async def run(self) -> None:
        try:
            async for event in self.manager.subscribe(self.stream_id):
                self.events.append(event)
        finally:
            self.ended.set()

    def offsets(self) -> list[int]:
        return [e.offset for e in self.events if isinstance(e, ChunkEvent)]

    async def wait_for_chunks(self, count: int) -> None:
        await until(lambda: len(self.offsets()) >= count)


async def run_ticker(runner: FlowRunner, manager: StreamManager) -> tuple[StreamWriter, Follower]:
    writer = await manager.open(flow="ticker")
    runner.start(
        ticker, None, writer, RequestContext(), max_chunk_bytes=1000, max_stream_chunks=10**6
    )
    return writer, Follower(manager, writer.stream_id)


async def test_an_outage_past_the_window_ends_the_stream_while_the_backend_is_still_down(
    db_path: Path,
) -> None:
    storage = FlakyStorage(SqliteStreamStorage(db_path))
    manager = StreamManager(storage, write_retry_for=WINDOW, lease=1.0)
    async with manager, FlowRunner(grace=1.0) as runner, anyio.create_task_group() as tg:
        writer, follower = await run_ticker(runner, manager)
        tg.start_soon(follower.run)
        await follower.wait_for_chunks(20)
        storage.down = True  # and it stays down past twice the window

        # The flow is stopped and its local subscriber told, with the backend still
        # down: nothing waits behind a queue of flushes or an open-ended wait.
        with anyio.fail_after(30):
            await follower.ended.wait()
        await until(lambda: runner.running == 0)
        assert storage.down
        assert writer.failure is not None
        last = follower.events[-1]
        assert isinstance(last, ErrorEvent) and last.status == "UNAVAILABLE"
        offsets = follower.offsets()
        assert offsets == list(range(len(offsets)))  # no gap, no repeat
        # One flusher: never two appends at once, and one retry window of attempts
        # (backoff 50, 100, 200 ms...) plus the finish's single try, not one window
        # per 20 ms of chunks.
        assert storage.most_appending == 1
        assert storage.appends_while_down <= 10

        # Back up: the end could not be recorded, so the writer's lease (no longer
        # renewed) lapses and every reader, now or later, sees the stream abandoned.
        storage.down = False
        with anyio.fail_after(30):
            later = [e async for e in manager.subscribe(writer.stream_id)]
        assert later[-1] == ErrorEvent("UNAVAILABLE", "stream abandoned")
        assert [e.offset for e in later if isinstance(e, ChunkEvent)] == offsets


async def test_a_backend_back_within_the_second_window_records_the_error(
    db_path: Path,
) -> None:
    storage = FlakyStorage(SqliteStreamStorage(db_path))
    manager = StreamManager(storage, write_retry_for=WINDOW, lease=5.0)
    async with manager, FlowRunner(grace=1.0) as runner, anyio.create_task_group() as tg:
        writer, follower = await run_ticker(runner, manager)
        tg.start_soon(follower.run)
        await follower.wait_for_chunks(20)
        storage.down = True
        await until(lambda: writer.failure is not None)  # the first window ran out
        storage.down = False  # back while the end is being recorded
        await until(lambda: runner.running == 0)
        with anyio.fail_after(30):
            await follower.ended.wait()
        record = await manager.info(writer.stream_id)
        assert record.status == "error"
        events = [e async for e in manager.subscribe(writer.stream_id)]
    assert isinstance(events[-1], ErrorEvent) and events[-1].status == "UNAVAILABLE"
    chunks = [e.offset for e in events if isinstance(e, ChunkEvent)]
    assert chunks == list(range(record.length))
    assert follower.offsets() == chunks


async def test_a_failed_writer_refuses_writes_at_once_and_never_ends_with_a_result(
    db_path: Path,
) -> None:
    storage = FlakyStorage(SqliteStreamStorage(db_path))
    async with StreamManager(storage, write_retry_for=WINDOW, lease=5.0) as manager:
        writer = await manager.open()
        await writer.write(0)
        await writer.flush()
        storage.down = True
        await writer.write(1)
        with anyio.fail_after(30), pytest.raises(UnavailableError):
            await writer.flush()
        attempts = storage.appends_while_down
        with pytest.raises(UnavailableError):
            await writer.write(2)  # fail fast: no second retry window
        assert storage.appends_while_down == attempts
        storage.down = False
        # Back up: the end is recorded, as an error, and the chunk buffered when the
        # writer gave up is dropped (its subscribers had been told the stream ended).
        await writer.done("looks fine")
        events = [e async for e in manager.subscribe(writer.stream_id)]
    assert [e.offset for e in events if isinstance(e, ChunkEvent)] == [0]
    assert isinstance(events[-1], ErrorEvent) and events[-1].status == "UNAVAILABLE"


async def test_a_local_subscriber_trusts_its_writer_only_while_the_lease_holds(
    db_path: Path,
) -> None:
    # The writer here is alive, but its lease renewals fail: to every other process
    # the stream is abandoned once the lease lapses, and so it is to local readers.
    storage = FlakyStorage(SqliteStreamStorage(db_path))
    async with StreamManager(storage, lease=0.6) as manager:
        writer = await manager.open()
        await writer.write(0)
        await writer.flush()
        follower = Follower(manager, writer.stream_id)
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower.run)
            await follower.wait_for_chunks(1)
            storage.renewals_down = True
            with anyio.fail_after(30):
                await follower.ended.wait()
        await writer.done("too late")
    assert follower.events == [ChunkEvent(0, b"0"), ErrorEvent("UNAVAILABLE", "stream abandoned")]
