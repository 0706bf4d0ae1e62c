"""What the storage reads: only the batches a resume needs; ids checked before any call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest
from firestore_spy import Spy

from stream_gateway import InvalidArgumentError, StreamNotFoundError
from stream_gateway.streams import (
    ChunkEvent,
    ResultEvent,
    StreamEvent,
    StreamManager,
    StreamRecord,
    Terminal,
)
from stream_gateway_firestore import FirestoreStreamStorage

pytestmark = pytest.mark.anyio

MakeStorage = Callable[..., FirestoreStreamStorage]


@pytest.fixture
async def finished_stream(make_storage: MakeStorage) -> AsyncIterator[str]:
    """100 chunks in 10 batch documents of 10 (offsets 0, 10, ... 90), then done."""
    async with StreamManager(make_storage(), flush_interval=60) as manager:
        writer = await manager.open()
        for i in range(100):
            await writer.write(i)
            if i % 10 == 9:
                await writer.flush()
        await writer.done("end")
        yield writer.stream_id


async def resume(
    make_storage: MakeStorage, stream_id: str, offset: int
) -> tuple[Spy, list[StreamEvent]]:
    """Subscribe from another process (a storage of its own) and record what it read."""
    async with StreamManager(make_storage()) as reader:
        assert isinstance(reader.storage, FirestoreStreamStorage)
        spy = Spy(reader.storage.client)
        with anyio.fail_after(20):
            events = [e async for e in reader.subscribe(stream_id, offset)]
    return spy, events


def batches_read(spy: Spy) -> set[int]:
    return {int(path.rsplit("/", 1)[1]) for path in spy.reads if "/batches/" in path}


async def test_resume_mid_batch_reads_only_the_batch_holding_it(
    make_storage: MakeStorage, finished_stream: str
) -> None:
    spy, events = await resume(make_storage, finished_stream, 95)
    assert [(e.offset, e.data) for e in events if isinstance(e, ChunkEvent)] == [
        (i, i) for i in range(95, 100)
    ]
    assert events[-1] == ResultEvent(b'"end"')
    assert batches_read(spy) == {90}


async def test_resume_at_a_batch_boundary_reads_nothing_before_it(
    make_storage: MakeStorage, finished_stream: str
) -> None:
    spy, events = await resume(make_storage, finished_stream, 40)
    assert [e.offset for e in events if isinstance(e, ChunkEvent)] == list(range(40, 100))
    assert batches_read(spy) == {40, 50, 60, 70, 80, 90}


async def test_read_limits_and_ends(make_storage: MakeStorage, finished_stream: str) -> None:
    storage = make_storage()
    await storage.start()
    try:
        assert await storage.read(finished_stream, 7, 5) == [str(i).encode() for i in range(7, 12)]
        assert await storage.read(finished_stream, 98, 50) == [b"98", b"99"]
        assert await storage.read(finished_stream, 100, 50) == []
        assert await storage.read(finished_stream, 500, 50) == []
        assert await storage.read(finished_stream, 0, 0) == []
    finally:
        await storage.close()


async def test_a_missing_batch_is_an_error_not_a_short_stream(
    make_storage: MakeStorage, finished_stream: str
) -> None:
    storage = make_storage()
    await storage.start()
    try:
        await storage.client.document(f"streams/{finished_stream}/batches/000000000050").delete()
        assert len(await storage.read(finished_stream, 0, 50)) == 50
        with pytest.raises(StreamNotFoundError, match="gone"):
            await storage.read(finished_stream, 45, 50)
        with pytest.raises(StreamNotFoundError, match="gone"):
            await storage.read(finished_stream, 52, 50)
    finally:
        await storage.close()


BAD_IDS = [
    "has/slash/in-it-0000",
    "../../../escape-this-path",
    "__reserved_by_firestore__",
    "short",
    "",
    "x" * 129,
]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_ids_are_checked_before_they_reach_firestore(
    make_storage: MakeStorage, bad: str
) -> None:
    storage = make_storage()
    await storage.start()
    spy = Spy(storage.client)
    now = time.time()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: storage.create(StreamRecord(bad, "", now, now, now + 60)),
        lambda: storage.append(bad, 0, [b"1"]),
        lambda: storage.finish(bad, 0, Terminal("done", b"1"), now=now, expires_at=now),
        lambda: storage.load(bad),
        lambda: storage.read(bad, 0, 10),
        lambda: storage.renew([bad], now, now),
        lambda: storage.request_cancel(bad),
        lambda: storage.watch(bad).__anext__(),
    ]
    try:
        for call in calls:
            with pytest.raises(InvalidArgumentError):
                await call()
    finally:
        await storage.close()
    assert (spy.writes, spy.reads, spy.queries) == ([], [], 0)


async def test_manager_rejects_ids_firestore_reserves(make_storage: MakeStorage) -> None:
    async with StreamManager(make_storage()) as manager:
        with pytest.raises(InvalidArgumentError):
            await manager.open("__looks_fine_to_the_core__")
