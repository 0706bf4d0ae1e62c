"""Helpers of the stream contract suites (`test_contract`, `test_compaction`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio

from stream_gateway.streams import ChunkEvent, StreamEvent, StreamManager

MakeManager = Callable[..., AbstractAsyncContextManager[StreamManager]]


async def collect(
    manager: StreamManager, stream_id: str, from_offset: int = 0
) -> list[StreamEvent]:
    with anyio.fail_after(20):
        return [e async for e in manager.subscribe(stream_id, from_offset)]


def chunks_of(events: list[StreamEvent]) -> list[tuple[int, Any]]:
    return [(e.offset, e.data) for e in events if isinstance(e, ChunkEvent)]
