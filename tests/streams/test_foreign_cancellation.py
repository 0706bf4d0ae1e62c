"""A CancelledError a storage's client raises of its own (no cancel scope sent it).

gRPC's asyncio channel, behind the Firestore client, gives calls up so under load.
Let out of one of the manager's background tasks, it ended that task, and the
manager's task group then cancelled every stream of the process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import anyio
import pytest

from stream_gateway._cancel import foreign_cancellation
from stream_gateway.streams import StreamManager
from stream_gateway.streams.base import ChunkEvent, ResultEvent, StreamEvent
from stream_gateway.streams.memory import InMemoryStreamStorage

pytestmark = pytest.mark.anyio


async def _foreign() -> None:
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


class CallsGivenUp(InMemoryStreamStorage):
    """Memory storage whose first ``count`` calls of each of ``methods`` raise a
    CancelledError of their own."""

    def __init__(self, *methods: str, count: int = 1) -> None:
        super().__init__()
        self.left = dict.fromkeys(methods, count)
        self.spent = anyio.Event()  # every planned failure happened

    async def _maybe(self, method: str) -> None:
        if self.left.get(method, 0) > 0:
            self.left[method] -= 1
            if not any(self.left.values()):
                self.spent.set()
            await _foreign()

    async def renew(
        self, stream_ids: Sequence[str], lease_until: float, expires_at: float
    ) -> set[str]:
        await self._maybe("renew")
        return await super().renew(stream_ids, lease_until, expires_at)

    async def append(self, stream_id: str, offset: int, chunks: Sequence[bytes]) -> None:
        await self._maybe("append")
        await super().append(stream_id, offset, chunks)

    async def purge(self, now: float) -> int:
        await self._maybe("purge")
        return await super().purge(now)


@pytest.mark.parametrize("method", ["renew", "append", "purge"])
async def test_a_call_given_up_by_the_store_client_is_a_failed_call(method: str) -> None:
    storage = CallsGivenUp(method, count=2)
    manager = StreamManager(
        storage, lease=0.15, flush_interval=0.01, purge_interval=0.05, write_retry_for=0.0
    )
    events: list[StreamEvent] = []
    with anyio.fail_after(30):
        async with manager:
            writer = await manager.open()
            for i in range(10):
                await writer.write(i)
                await anyio.sleep(0.03)  # renewals, flushes and purges meanwhile
            await storage.spent.wait()
            await writer.done("end")
            async for event in manager.subscribe(writer.stream_id):
                events.append(event)
    assert [e.data for e in events if isinstance(e, ChunkEvent)] == list(range(10))
    assert events[-1] == ResultEvent(b'"end"')


async def test_a_cancel_scope_cancellation_is_not_foreign() -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.sleep(1)
        except asyncio.CancelledError:
            await foreign_cancellation()  # raises the scope's cancellation again
            pytest.fail("the scope's cancellation was taken for a foreign one")
    assert scope.cancelled_caught


async def test_a_library_s_own_cancelled_error_is_foreign() -> None:
    try:
        await _foreign()
    except asyncio.CancelledError:
        assert await foreign_cancellation()
