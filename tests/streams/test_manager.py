"""StreamManager behaviour that needs a storage with network-like delays."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import pytest

from stream_gateway import FailedPreconditionError, StreamCompactedError
from stream_gateway.streams import (
    ChunkEvent,
    InMemoryStreamStorage,
    ResultEvent,
    StreamManager,
    StreamRecord,
    StreamStorage,
    Terminal,
)

pytestmark = pytest.mark.anyio


class RemoteLike(StreamStorage):
    """Another process's view of a shared storage, each call a slow round trip."""

    shared = True

    def __init__(self, inner: StreamStorage, delay: float) -> None:
        self.inner, self.delay = inner, delay

    async def create(self, record: StreamRecord) -> None:
        await self.inner.create(record)

    async def append(self, stream_id: str, offset: int, chunks: Sequence[bytes]) -> None:
        await self.inner.append(stream_id, offset, chunks)

    async def finish(
        self, stream_id: str, length: int, terminal: Terminal, *, now: float, expires_at: float
    ) -> None:
        await self.inner.finish(stream_id, length, terminal, now=now, expires_at=expires_at)

    # A round trip: the request travels, the server takes its snapshot, the answer
    # travels back. Commits made while the answer is on its way are not in it.
    async def load(self, stream_id: str) -> StreamRecord | None:
        await anyio.sleep(self.delay / 2)
        record = await self.inner.load(stream_id)
        await anyio.sleep(self.delay / 2)
        return record

    async def read(self, stream_id: str, offset: int, limit: int) -> list[bytes]:
        await anyio.sleep(self.delay / 2)
        chunks = await self.inner.read(stream_id, offset, limit)
        await anyio.sleep(self.delay / 2)
        return chunks

    async def renew(
        self, stream_ids: Sequence[str], lease_until: float, expires_at: float
    ) -> set[str]:
        return await self.inner.renew(stream_ids, lease_until, expires_at)

    async def request_cancel(self, stream_id: str) -> bool:
        return await self.inner.request_cancel(stream_id)

    async def purge(self, now: float) -> int:
        return await self.inner.purge(now)

    async def watch(self, stream_id: str) -> AsyncIterator[None]:
        while True:  # a listener that reports "something changed" every few ms
            yield
            await anyio.sleep(0.005)


async def test_commits_racing_slow_reads_are_not_mistaken_for_lost_data() -> None:
    shared = InMemoryStreamStorage()
    async with (
        StreamManager(shared, flush_interval=0.1) as writing,  # a batch every 100 ms
        StreamManager(RemoteLike(shared, delay=0.06), poll_fallback=0.05) as reading,
    ):
        writer = await writing.open()
        received: list[object] = []

        async def follow() -> None:
            async for event in reading.subscribe(writer.stream_id):
                received.append(event)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                for i in range(300):  # ~200 chunks/s; the reader catches up between batches
                    await writer.write(i)
                    await anyio.sleep(0.005)
                await writer.done("end")
    assert [e.offset for e in received if isinstance(e, ChunkEvent)] == list(range(300))
    assert received[-1] == ResultEvent(b'"end"')


async def test_compaction_by_policy_logs_failures_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store that cannot compact: the writer's `done` is unaffected, the failure is
    logged, and asking for compaction directly says what is missing."""
    storage = RemoteLike(InMemoryStreamStorage(), 0.0)
    async with StreamManager(storage, compact_finished=True) as manager:
        writer = await manager.open()
        for token in ("a", "b", "c"):
            await writer.write(token)
        await writer.done("abc")
        with anyio.fail_after(10):
            while "compaction after a stream's end failed" not in caplog.text:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert "cannot compact streams" in caplog.text
        # Said once: the next stream that ends adds nothing to the log.
        second = await manager.open()
        await second.write("x")
        await second.write("y")
        await second.done(None)
        await anyio.sleep(0.1)
        assert caplog.text.count("compact_finished does nothing") == 1
        events = [e async for e in manager.subscribe(writer.stream_id)]
        assert [e.offset for e in events if isinstance(e, ChunkEvent)] == [0, 1, 2]
        assert events[-1] == ResultEvent(b'"abc"')
        with pytest.raises(FailedPreconditionError, match="cannot compact"):
            await manager.compact(writer.stream_id)


async def test_a_compaction_failing_by_policy_is_logged_and_the_stream_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(InMemoryStreamStorage):
        async def compact(self, stream_id: str, length: int, entries: Sequence[bytes]) -> bool:
            raise RuntimeError("disk on fire")

    async with StreamManager(Broken(), compact_finished=True) as manager:
        writer = await manager.open()
        for token in ("a", "b"):
            await writer.write(token)
        await writer.done("ab")  # the writer's path is unaffected
        with anyio.fail_after(10):
            while "compaction after its end failed" not in caplog.text:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert "disk on fire" in caplog.text
        record = await manager.info(writer.stream_id)
        assert (record.status, record.compacted) == ("done", None)
        events = [e async for e in manager.subscribe(writer.stream_id)]
        assert [e.raw for e in events if isinstance(e, ChunkEvent)] == [b'"a"', b'"b"']


async def test_end_of_gives_the_end_even_when_a_compaction_overtakes_the_wait() -> None:
    # A waiter for the end only (a conversation's next turn, a non-streaming durable
    # start) in another manager on the same store: the writer's manager compacts the
    # stream once it ends, before the waiter reads the chunks it had not read yet. A
    # subscription then raises StreamCompactedError; `end_of` still gives the result.
    storage = InMemoryStreamStorage()
    async with (
        StreamManager(storage) as writing,
        StreamManager(storage, poll_fallback=2.0) as waiting,
    ):
        writer = await writing.open(flow="f", owner="o")
        await writer.write("a")
        await writer.flush()
        ends: list[Any] = []
        failures: list[BaseException] = []

        async def wait_by_subscription(from_offset: int) -> None:
            try:
                async for _ in waiting.subscribe(writer.stream_id, from_offset):
                    pass
            except StreamCompactedError as exc:
                failures.append(exc)

        async def wait_with_end_of() -> None:
            ends.append(await waiting.end_of(writer.stream_id))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_by_subscription, 1)
                tg.start_soon(wait_with_end_of)
                await anyio.sleep(0.05)
                for chunk in "bcd":
                    await writer.write(chunk)
                await writer.done("r")
                # Compacted before the waiters' next look at the store (they poll).
                assert (await writing.compact(writer.stream_id)).compacted
    assert failures, "the subscription was expected to be overtaken by the compaction"
    assert ends == [ResultEvent(b'"r"')]
