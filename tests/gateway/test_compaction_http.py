"""A compacted stream on the wire: the golden frames, 410 inside a compacted range, and
the Python client replaying from 0 (also when compaction cuts a replay short)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from stream_gateway._json import dumps
from stream_gateway.asgi import genkit_frames, sse_frames
from stream_gateway.asgi.frames import genkit_frames_with_offsets
from stream_gateway.client import Reconnect, Reset, stream_flow
from stream_gateway.streams import (
    ChunkEvent,
    InMemoryStreamStorage,
    ResultEvent,
    StreamEvent,
    StreamManager,
    join_deltas,
)
from stream_gateway.streams.compaction import plan_entries
from tests.gateway.conftest import Live, serve
from tests.servers.flows_app import build_app

pytestmark = pytest.mark.anyio

GOLDEN = json.loads((Path(__file__).parent.parent / "fixtures" / "golden_frames.json").read_text())
[CASE] = GOLDEN["compactedCases"]
SID = CASE["streamId"]
GONE = CASE["gone"]
FAST = Reconnect(attempts=5, base=0.001, cap=0.01)


def events_of(model: list[dict[str, Any]]) -> list[StreamEvent]:
    return [
        ChunkEvent(m["offset"], dumps(m["chunk"]), m["span"])
        if "chunk" in m
        else ResultEvent(dumps(m["result"]))
        for m in model
    ]


def test_encoders_match_the_golden_frames() -> None:
    events = events_of(CASE["events"])
    assert sse_frames(events) == CASE["sse"].encode()
    assert genkit_frames(events) == CASE["genkit"].encode()
    assert genkit_frames_with_offsets(events) == CASE["genkitOffsets"].encode()


async def write_golden_stream(manager: StreamManager) -> None:
    writer = await manager.open(SID, flow="text")
    for chunk in CASE["written"]:
        await writer.write(chunk)
    await writer.done("Hello world")


async def test_a_compacted_stream_on_both_protocols(live: Live) -> None:
    assert live.manager is not None
    await write_golden_stream(live.manager)
    assert (await live.manager.compact(SID)).entries_after == 3
    url = live.flow("text")
    sse = f"{url}/streams/{SID}"
    reconnect = {"x-genkit-stream-id": SID, "content-type": "application/json"}

    assert (await live.http.get(sse)).text == CASE["sse"]
    assert (await live.http.post(url, headers=reconnect, content=b"{}")).text == CASE["genkit"]
    with_offsets = {**reconnect, "x-stream-resets": "1"}
    assert (await live.http.post(url, headers=with_offsets, content=b"{}")).text == (
        CASE["genkitOffsets"]
    )
    # After an entry (its id is the last offset it stands for): the next entries.
    rest = await live.http.get(sse, headers={"last-event-id": "4"})
    assert rest.text == CASE["sse"].split("\n\n", 1)[1]

    # Inside a compacted range: 410 Gone, the same answer on every endpoint.
    inside = CASE["goneOffset"]
    for response in (
        await live.http.get(f"{sse}?offset={inside}"),
        await live.http.get(sse, headers={"last-event-id": str(inside - 1)}),
        await live.http.post(
            url, headers={**reconnect, "x-genkit-stream-offset": str(inside)}, content=b"{}"
        ),
    ):
        assert (response.status_code, response.text) == (GONE["status"], GONE["body"])
        assert response.headers["content-type"] == "application/json"

    # Our client asked to resume inside: it replays from 0 (it had shown nothing).
    stream = stream_flow(url, http=live.http, stream_id=SID, offset=inside, reconnect=FAST)
    assert [item async for item in stream] == [e["chunk"] for e in CASE["parsed"][:-1]]
    assert await stream.result() == "Hello world"


class CompactingStorage(InMemoryStreamStorage):
    """Compacts a stream right after its first read (from another process, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.armed: set[str] = set()

    async def read(self, stream_id: str, offset: int, limit: int) -> list[bytes]:
        chunks = await super().read(stream_id, offset, limit)
        if stream_id in self.armed:
            self.armed.discard(stream_id)
            record = await self.load(stream_id)
            assert record is not None
            stored = await super().read(stream_id, 0, record.length)
            entries: Sequence[bytes] = plan_entries(stored, join_deltas)
            assert await self.compact(stream_id, record.length, entries)
        return chunks


@asynccontextmanager
async def compacting_server() -> AsyncIterator[tuple[str, CompactingStorage, StreamManager]]:
    storage = CompactingStorage()
    # Reads of three chunks: the first read ends at offset 3, inside the first entry.
    manager = StreamManager(storage, read_batch=3)
    async with serve(build_app(manager)) as url:
        yield f"{url}/flows/text", storage, manager


async def test_compaction_during_a_replay(tmp_path: Path) -> None:
    async with compacting_server() as (url, storage, manager), httpx.AsyncClient() as http:
        await write_golden_stream(manager)
        reconnect = {"x-genkit-stream-id": SID, "content-type": "application/json"}
        originals = "".join(f'data: {{"message":"{c}"}}\n\n' for c in "Hel")

        # Genkit's own client cannot resume from an offset: it gets an error frame.
        storage.armed.add(SID)
        response = await http.post(url, headers=reconnect, content=b"{}")
        assert response.text == originals + CASE["genkitGone"]

        # SSE: the response ends without a terminal event; the resume then gets 410.
        fresh = await _rewrite(manager, storage)
        storage.armed.add(fresh)
        sse = await http.get(f"{url}/streams/{fresh}")
        frames = (f'id: {i}\nevent: chunk\ndata: "{c}"\n\n' for i, c in enumerate("Hel"))
        assert sse.text == "".join(frames)
        again = await http.get(f"{url}/streams/{fresh}", headers={"last-event-id": "2"})
        assert again.status_code == 410 and again.json()["error"]["details"]["replayFrom"] == 0

        # Our client: shows "H", "e", "l", is cut, gets 410, drops them, replays from 0.
        fresh = await _rewrite(manager, storage)
        storage.armed.add(fresh)
        stream = stream_flow(url, http=http, stream_id=fresh, reconnect=FAST)
        items = [item async for item in stream]
        assert items == ["H", "e", "l", Reset(0, 3), "Hello", {"tool": "search"}, " world"]
        assert await stream.result() == "Hello world"


async def _rewrite(manager: StreamManager, storage: CompactingStorage) -> str:
    """Another stream with the golden content, not compacted yet."""
    writer = await manager.open(flow="text")
    for chunk in CASE["written"]:
        await writer.write(chunk)
    await writer.done("Hello world")
    return writer.stream_id
