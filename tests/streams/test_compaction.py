"""Compaction of finished streams: the StreamManager contract, on every backend.

Only the storage contract (`StreamStorage.compact`) is exercised, through the manager:
a full replay before and after is the same logical content and result; a resume
inside a compacted range is refused; compaction is conditional; readers racing it
never see a gap or a wrong chunk.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from typing import Any

import anyio
import pytest

from stream_gateway import FailedPreconditionError, StreamCompactedError, StreamNotFoundError
from stream_gateway.streams import (
    ChunkEvent,
    ResultEvent,
    StreamEvent,
    StreamManager,
    Terminal,
    join_deltas,
)
from stream_gateway.streams.base import compacted_entry
from stream_gateway.streams.manager import DURABLE
from tests.streams.support import MakeManager, chunks_of, collect

pytestmark = pytest.mark.anyio


async def finished(manager: StreamManager, chunks: list[Any], result: Any = "r") -> str:
    writer = await manager.open(flow="f", owner="o")
    for chunk in chunks:
        await writer.write(chunk)
    await writer.done(result)
    return writer.stream_id


def text_of(events: list[StreamEvent]) -> str:
    """The text a reader shows: string chunks and ``delta`` fields, joined."""
    parts = []
    for event in events:
        if isinstance(event, ChunkEvent):
            data = event.data
            parts.append(data if isinstance(data, str) else data.get("delta", ""))
    return "".join(parts)


async def test_replay_is_the_same_after_compaction(manager: StreamManager) -> None:
    tokens = [f"tok{i} " for i in range(300)]
    sid = await finished(manager, tokens, {"answer": "".join(tokens)})
    before = await collect(manager, sid)
    stored_before = await manager.storage.read(sid, 0, 1000)

    report = await manager.compact(sid)

    assert report.compacted and report.reason is None
    assert (report.length, report.chunks_before, report.entries_after) == (300, 300, 1)
    assert report.bytes_before == sum(map(len, stored_before))
    assert report.bytes_after is not None and report.bytes_before > report.bytes_after
    after = await collect(manager, sid)
    assert text_of(after) == text_of(before) == "".join(tokens)
    assert after[-1] == before[-1] == ResultEvent(b'{"answer":"' + "".join(tokens).encode() + b'"}')
    assert after[0] == ChunkEvent(0, b'"' + "".join(tokens).encode() + b'"', 300)
    assert len(after) == 2
    assert await manager.storage.read(sid, 0, 1000) == [
        compacted_entry(0, b'"' + "".join(tokens).encode() + b'"')
    ]


async def test_ui_message_parts_are_joined_by_part(manager: StreamManager) -> None:
    parts: list[Any] = [
        {"type": "start"},
        {"type": "reasoning-start", "id": "r"},
        *({"type": "reasoning-delta", "id": "r", "delta": c} for c in "think"),
        {"type": "reasoning-end", "id": "r"},
        {"type": "text-start", "id": "t"},
        *({"type": "text-delta", "id": "t", "delta": c} for c in "hello"),
        {"type": "text-delta", "id": "u", "delta": "!"},  # another part: kept apart
        {"type": "text-end", "id": "t"},
        {"type": "finish"},
    ]
    sid = await finished(manager, parts, None)
    report = await manager.compact(sid)
    assert report.compacted and report.entries_after == 9
    after = await collect(manager, sid)
    assert chunks_of(after) == [
        (0, {"type": "start"}),
        (1, {"type": "reasoning-start", "id": "r"}),
        (2, {"type": "reasoning-delta", "id": "r", "delta": "think"}),
        (7, {"type": "reasoning-end", "id": "r"}),
        (8, {"type": "text-start", "id": "t"}),
        (9, {"type": "text-delta", "id": "t", "delta": "hello"}),
        (14, {"type": "text-delta", "id": "u", "delta": "!"}),
        (15, {"type": "text-end", "id": "t"}),
        (16, {"type": "finish"}),
    ]
    assert [e.span for e in after if isinstance(e, ChunkEvent)] == [1, 1, 5, 1, 1, 5, 1, 1, 1]
    assert after[-1] == ResultEvent(b"null")


async def test_a_durable_stream_compacts_to_its_live_view(manager: StreamManager) -> None:
    writer = await manager.open(flow="f", extra={DURABLE: "x"})
    for raw in (b'"a"', b'"b"', b'"c"'):
        await writer.write_raw(raw)
    await writer.reset(1)  # at offset 3: "b" and "c" are void
    for raw in (b'"B"', b'"C"'):
        await writer.write_raw(raw)
    await writer.error(FailedPreconditionError("late failure"))
    before = await collect(manager, writer.stream_id)
    assert chunks_of(before) == [(0, "a"), (4, "B"), (5, "C")]

    report = await manager.compact(writer.stream_id)

    assert report.compacted and (report.chunks_before, report.entries_after) == (6, 1)
    after = await collect(manager, writer.stream_id)
    assert after[:-1] == [ChunkEvent(0, b'"aBC"', 6)]
    assert after[-1] == before[-1]
    record = await manager.info(writer.stream_id)
    assert (record.status, record.length, record.compacted) == ("error", 6, 1)


async def test_resumes_on_a_compacted_stream(manager: StreamManager) -> None:
    sid = await finished(manager, ["a", "b", {"tool": 1}, "c", "d"])
    assert (await manager.compact(sid)).entries_after == 3
    record = await manager.info(sid)
    assert (record.length, record.compacted) == (5, 3)

    # At an entry's start (where a reader of the entry before resumes) or at the end.
    assert chunks_of(await collect(manager, sid, 2)) == [(2, {"tool": 1}), (3, "cd")]
    assert chunks_of(await collect(manager, sid, 3)) == [(3, "cd")]
    assert await collect(manager, sid, 5) == [ResultEvent(b'"r"')]
    for offset in (0, 2, 3, 5):
        await manager.check_resume(record, offset)
    # Strictly inside an entry: the reader must replay from 0.
    for offset in (1, 4):
        with pytest.raises(StreamCompactedError) as caught:
            await collect(manager, sid, offset)
        assert caught.value.http_status == 410
        assert caught.value.details == {"streamId": sid, "offset": offset, "replayFrom": 0}
        assert "replay from offset 0" in caught.value.message
        with pytest.raises(StreamCompactedError):
            await manager.check_resume(record, offset)


async def test_compaction_is_conditional(manager: StreamManager) -> None:
    writer = await manager.open(flow="f")
    await writer.write("a")
    await writer.write("b")
    await writer.flush()
    with pytest.raises(FailedPreconditionError, match="still open"):
        await manager.compact(writer.stream_id)
    storage = manager.storage
    assert not await storage.compact(writer.stream_id, 2, [compacted_entry(0, b'"ab"')])
    await writer.done(None)
    assert not await storage.compact(writer.stream_id, 3, [compacted_entry(0, b'"ab"')])
    assert not await storage.compact("never-made-stream-0001", 2, [compacted_entry(0, b'"x"')])
    assert (await manager.info(writer.stream_id)).compacted is None

    assert (await manager.compact(writer.stream_id)).compacted
    again = await manager.compact(writer.stream_id)
    assert (again.compacted, again.reason) == (False, "already compacted")
    assert not await storage.compact(writer.stream_id, 2, [compacted_entry(0, b'"ab"')])
    with pytest.raises(StreamNotFoundError):
        await manager.compact("never-made-stream-0001")


async def test_compaction_that_would_not_shrink_is_skipped(manager: StreamManager) -> None:
    single = await finished(manager, ["only"])
    apart = await finished(manager, [{"n": 1}, {"n": 2}, {"n": 3}])
    for sid in (single, apart):
        report = await manager.compact(sid)
        assert not report.compacted and report.reason == "compaction would not shrink it"
        assert report.entries_after == report.chunks_before
        assert (await manager.info(sid)).compacted is None
    empty = await finished(manager, [])
    report = await manager.compact(empty)
    assert (report.compacted, report.reason) == (False, "no live chunk to keep")
    assert await collect(manager, empty) == [ResultEvent(b'"r"')]
    assert chunks_of(await collect(manager, apart)) == [(i, {"n": i + 1}) for i in range(3)]


async def test_a_custom_coalescer(manager: StreamManager, make_manager: MakeManager) -> None:
    def tokens(first: Any, second: Any) -> Any:
        if isinstance(first, dict) and isinstance(second, dict) and first.keys() == {"tokens"}:
            return {"tokens": first["tokens"] + second["tokens"]}
        return join_deltas(first, second)  # and text as the default does

    content: list[Any] = [{"tokens": [1]}, {"tokens": [2, 3]}, "x", "y"]
    sid = await finished(manager, content)
    assert (await manager.compact(sid)).entries_after == 3  # the default leaves tokens apart
    expected = [(0, {"tokens": [1]}), (1, {"tokens": [2, 3]}), (2, "xy")]
    assert chunks_of(await collect(manager, sid)) == expected
    other = await finished(manager, content)
    assert (await manager.compact(other, coalesce=tokens)).entries_after == 2
    assert chunks_of(await collect(manager, other)) == [(0, {"tokens": [1, 2, 3]}), (2, "xy")]
    async with make_manager(coalesce=tokens) as custom:  # or for every stream of a manager
        third = await finished(custom, content)
        assert (await custom.compact(third)).entries_after == 2


async def test_a_reader_racing_compaction_never_sees_a_gap(make_manager: MakeManager) -> None:
    async with make_manager(read_batch=2, tail_size=1) as reading, make_manager() as compacting:
        sid = await finished(compacting, [f"t{i}" for i in range(10)])
        seen: list[StreamEvent] = []
        with pytest.raises(StreamCompactedError):
            async with aclosing(reading.subscribe(sid)) as events:
                async for event in events:
                    seen.append(event)
                    if len(seen) == 3:
                        assert (await compacting.compact(sid)).compacted
        assert chunks_of(seen) == [(i, f"t{i}") for i in range(len(seen))]
        assert len(seen) >= 3
        # Replaying from 0 then gives the whole content.
        assert chunks_of(await collect(reading, sid)) == [(0, "".join(f"t{i}" for i in range(10)))]


async def test_a_reader_at_an_entry_boundary_goes_on_in_the_entries(
    make_manager: MakeManager,
) -> None:
    async with make_manager(read_batch=2, tail_size=1) as reading, make_manager() as compacting:
        content: list[Any] = ["a", "b", {"tool": 1}, {"tool": 2}, "c", "d"]
        sid = await finished(compacting, content)
        seen: list[StreamEvent] = []
        async with aclosing(reading.subscribe(sid)) as events:
            async for event in events:
                seen.append(event)
                if len(seen) == 2:  # "a", "b" read: offset 2 starts an entry
                    assert (await compacting.compact(sid)).entries_after == 4
        assert chunks_of(seen) == [
            (0, "a"),
            (1, "b"),
            (2, {"tool": 1}),
            (3, {"tool": 2}),
            (4, "cd"),
        ]
        assert seen[-1] == ResultEvent(b'"r"')


async def test_a_compacted_stream_is_listed_and_purged(make_manager: MakeManager) -> None:
    now = [time.time()]
    async with make_manager(ttl=60.0, clock=lambda: now[0]) as manager:
        sid = await finished(manager, ["x", "y", "z"])
        plain = await finished(manager, ["p"])
        assert (await manager.compact(sid)).compacted
        listed = {r.stream_id: r for r in (await manager.list_streams()).records}
        assert (listed[sid].compacted, listed[sid].length, listed[sid].status) == (1, 3, "done")
        assert (listed[sid].flow, listed[sid].owner) == ("f", "o")
        assert listed[sid].terminal == Terminal("done", b'"r"')
        assert listed[plain].compacted is None
        loaded = await manager.storage.load(sid)
        assert loaded is not None and (loaded.compacted, loaded.length) == (1, 3)
        now[0] += 61.0  # both expired
        assert await manager.purge() == 2
        assert await manager.storage.load(sid) is None
        assert await manager.storage.read(sid, 0, 10) == []
        with pytest.raises(StreamNotFoundError):
            await collect(manager, sid)


async def test_streams_are_compacted_when_they_end_by_policy(make_manager: MakeManager) -> None:
    async with make_manager(compact_finished=True) as manager:
        sid = await finished(manager, ["a", "b", "c"])
        with anyio.fail_after(10):
            while (await manager.info(sid)).compacted is None:  # noqa: ASYNC110 - no event for it
                await anyio.sleep(0.02)
        assert chunks_of(await collect(manager, sid)) == [(0, "abc")]
        open_one = await manager.open()
        await open_one.write("x")
        await anyio.sleep(0.1)
        assert (await manager.info(open_one.stream_id)).compacted is None
        await open_one.done(None)  # one chunk: nothing to gain, left as it is
        await anyio.sleep(0.1)
        assert (await manager.info(open_one.stream_id)).compacted is None
