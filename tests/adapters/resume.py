"""What every adapter's first test does: read an agent run's stream, leave, resume
it by offset, then read it again through dropped connections."""

from __future__ import annotations

from typing import Any

import httpx

from stream_gateway.client import Reconnect, stream_flow
from tests.servers.flows_app import DropConnections

__all__ = ["read_dropped_and_resumed", "texts"]


def texts(chunks: list[dict[str, Any]]) -> str:
    """The text the chunks stream (their text deltas, joined)."""
    return "".join(c["delta"] for c in chunks if c["type"] == "text-delta")


async def read_dropped_and_resumed(
    url: str, dropping: DropConnections, prompt: str, expected: Any
) -> list[dict[str, Any]]:
    """Start the flow at ``url`` on ``prompt``; read three chunks, leave, and read the
    rest from offset 3; then read the whole stream again through connections that
    ``dropping`` cuts. Each read must end with ``expected`` and the two must see the
    same chunks, which are returned."""
    async with httpx.AsyncClient(timeout=30) as http:
        first = stream_flow(url, {"prompt": prompt}, http=http)
        head = []
        async for chunk in first:
            head.append(chunk)
            if len(head) == 3:
                break
        await first.aclose()
        rest = stream_flow(url, http=http, stream_id=first.stream_id, offset=3)
        tail = [chunk async for chunk in rest]
        assert await rest.result() == expected
        dropping.configure(5, seed=3, max_bytes=300)
        again = stream_flow(
            url, http=http, stream_id=first.stream_id, reconnect=Reconnect(base=0.001)
        )
        replayed = [chunk async for chunk in again]
        assert await again.result() == expected
    assert dropping.left < 5  # it was cut off, and resumed
    chunks = head + tail
    assert replayed == chunks
    return chunks
