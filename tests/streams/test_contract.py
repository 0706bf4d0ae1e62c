"""The StreamManager contract, run against every backend in `tests.backends`.

Backend differences are capability flags on the storage (``shared``), never type checks.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from stream_gateway import (
    InvalidArgumentError,
    ResourceExhaustedError,
    StreamClosedError,
    StreamExistsError,
    StreamInterruptedError,
    StreamNotFoundError,
)
from stream_gateway.streams import (
    ChunkEvent,
    ErrorEvent,
    ResetEvent,
    ResultEvent,
    StreamEvent,
    StreamManager,
    StreamRecord,
    Terminal,
)
from stream_gateway.streams.manager import DURABLE
from tests.backends import BackendHarness
from tests.faults import FlakyStorage
from tests.streams.support import MakeManager, chunks_of, collect

pytestmark = pytest.mark.anyio


async def test_replay_after_done(manager: StreamManager) -> None:
    writer = await manager.open(flow="f")
    for i in range(25):
        await writer.write({"i": i})
    await writer.done("ok")

    events = await collect(manager, writer.stream_id)

    assert chunks_of(events) == [(i, {"i": i}) for i in range(25)]
    assert events[-1] == ResultEvent(b'"ok"')
    assert len(events) == 26


async def test_resume_from_offset(manager: StreamManager) -> None:
    writer = await manager.open()
    for i in range(10):
        await writer.write(i)
    await writer.done(None)

    assert chunks_of(await collect(manager, writer.stream_id, 7)) == [(7, 7), (8, 8), (9, 9)]
    assert await collect(manager, writer.stream_id, 10) == [ResultEvent(b"null")]
    with pytest.raises(InvalidArgumentError, match="past the end"):
        await collect(manager, writer.stream_id, 11)


async def test_resume_of_a_live_stream_from_another_process(make_manager: MakeManager) -> None:
    """What a reader saw anywhere is committed: it may resume right after it in any
    process; an offset past the committed length is refused, live or finished."""
    async with make_manager(flush_interval=0.01) as a, make_manager(poll_fallback=0.5) as b:
        writer = await a.open()
        seen: list[int] = []
        with anyio.fail_after(20):
            async with aclosing(a.subscribe(writer.stream_id)) as events:
                for i in range(5):
                    await writer.write(i)
                async for event in events:
                    assert isinstance(event, ChunkEvent)
                    seen.append(event.offset)
                    if event.offset == 4:
                        break
        with pytest.raises(InvalidArgumentError, match="past the end"):
            await collect(b, writer.stream_id, seen[-1] + 2)
        received: list[StreamEvent] = []

        async def follow() -> None:
            received.extend(await collect(b, writer.stream_id, seen[-1] + 1))

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await writer.write("after")
            await writer.done("r")

    assert received == [ChunkEvent(5, b'"after"'), ResultEvent(b'"r"')]


async def test_live_subscriber_sees_every_chunk_once(manager: StreamManager) -> None:
    writer = await manager.open()
    received: list[StreamEvent] = []

    async def follow() -> None:
        received.extend(await collect(manager, writer.stream_id))

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        for i in range(200):
            await writer.write(i)
            if i % 17 == 0:
                await anyio.sleep(0.002)
        await writer.done({"n": 200})

    assert chunks_of(received) == [(i, i) for i in range(200)]
    assert received[-1] == ResultEvent(b'{"n":200}')


async def test_subscribers_racing_writes_never_skip_or_repeat(manager: StreamManager) -> None:
    writer = await manager.open()
    results: list[tuple[int, list[StreamEvent]]] = []
    rng = random.Random(7)

    async def follow(start: int) -> None:
        await anyio.sleep(rng.random() * 0.05)
        # As a reader that saw chunk start - 1 would: only committed offsets are asked for.
        with anyio.fail_after(20):
            while (await manager.info(writer.stream_id)).length < start:  # noqa: ASYNC110
                await anyio.sleep(0.001)
        results.append((start, await collect(manager, writer.stream_id, start)))

    async with anyio.create_task_group() as tg:
        for _ in range(12):
            tg.start_soon(follow, rng.randrange(0, 150))
        for i in range(300):
            await writer.write(i)
            if rng.random() < 0.1:
                await anyio.lowlevel.checkpoint()
        await writer.done("end")

    for start, events in results:
        assert chunks_of(events) == [(i, i) for i in range(start, 300)]
        assert events[-1] == ResultEvent(b'"end"')


async def test_second_process_follows_live(make_manager: MakeManager) -> None:
    async with make_manager(flush_interval=0.01) as a, make_manager(poll_fallback=0.5) as b:
        writer = await a.open()
        received: list[StreamEvent] = []

        async def follow() -> None:
            received.extend(await collect(b, writer.stream_id))

        async with anyio.create_task_group() as tg:
            await writer.write("first")
            await writer.flush()
            tg.start_soon(follow)
            for i in range(50):
                await writer.write(i)
                await anyio.sleep(0.002)
            await writer.done("r")

    assert chunks_of(received) == [(0, "first"), *[(i + 1, i) for i in range(50)]]
    assert received[-1] == ResultEvent(b'"r"')


async def test_open_existing_id_is_an_error(manager: StreamManager) -> None:
    writer = await manager.open("existing-stream-id-0001")
    with pytest.raises(StreamExistsError):
        await manager.open("existing-stream-id-0001")
    await writer.write("kept")
    await writer.done(1)
    assert chunks_of(await collect(manager, writer.stream_id)) == [(0, "kept")]


async def test_extra_is_stored_with_the_stream(manager: StreamManager) -> None:
    # The gateway keys idempotent starts on it: whoever finds the id taken must find it.
    writer = await manager.open(
        "extra-stream-id-00001", flow="f", extra={"requestDigest": "abc", "n": 1}
    )
    assert (await manager.info(writer.stream_id)).extra == {"requestDigest": "abc", "n": 1}
    await writer.write("x")
    await writer.done(1)
    assert (await manager.info(writer.stream_id)).extra == {"requestDigest": "abc", "n": 1}


async def test_nothing_after_terminal(manager: StreamManager) -> None:
    writer = await manager.open()
    await writer.done(1)
    with pytest.raises(StreamClosedError):
        await writer.write("late")
    with pytest.raises(StreamClosedError):
        await writer.done(2)
    with pytest.raises(StreamClosedError):
        await writer.error(ValueError("x"))
    assert await collect(manager, writer.stream_id) == [ResultEvent(b"1")]


async def test_error_terminal(manager: StreamManager) -> None:
    writer = await manager.open()
    await writer.write("a")
    await writer.error(ResourceExhaustedError("quota", details={"limit": 3}))
    events = await collect(manager, writer.stream_id)
    assert events == [
        ChunkEvent(0, b'"a"'),
        ErrorEvent("RESOURCE_EXHAUSTED", "quota", {"limit": 3}),
    ]
    assert (await manager.info(writer.stream_id)).status == "error"


async def test_foreign_exception_is_stored_as_internal(manager: StreamManager) -> None:
    writer = await manager.open()
    await writer.error(KeyError("secret detail"))
    assert await collect(manager, writer.stream_id) == [ErrorEvent("INTERNAL", "Internal Error")]


async def test_unknown_and_malformed_ids(manager: StreamManager) -> None:
    with pytest.raises(StreamNotFoundError):
        await collect(manager, "unknown-stream-id-00001")
    with pytest.raises(StreamNotFoundError):
        await manager.info("unknown-stream-id-00001")
    with pytest.raises(StreamNotFoundError):
        await manager.cancel("unknown-stream-id-00001")
    bad_ids = ["", "short", "has/slash/in-it-0000", "dots.are.bad.in.keys", "x" * 129, "é" * 20]
    bad_ids.append("__firestore_reserves_this__")
    for bad in bad_ids:
        with pytest.raises(InvalidArgumentError):
            await manager.info(bad)
        with pytest.raises(InvalidArgumentError):
            await manager.open(bad)


async def test_info_reports_status_and_length(manager: StreamManager) -> None:
    writer = await manager.open(flow="chat", owner="owner-hash")
    for i in range(5):
        await writer.write(i)
    await writer.flush()
    info = await manager.info(writer.stream_id)
    assert (info.status, info.length, info.flow, info.owner) == ("open", 5, "chat", "owner-hash")
    assert info.lease_until is not None and info.lease_until > info.created_at
    await writer.done(None)
    info = await manager.info(writer.stream_id)
    assert (info.status, info.length, info.lease_until) == ("done", 5, None)
    assert info.expires_at > info.updated_at


async def test_cancel_reaches_writer_and_subscribers(manager: StreamManager) -> None:
    writer = await manager.open()
    await writer.write("before")
    assert not writer.cancel_requested
    assert await manager.cancel(writer.stream_id) is True
    with anyio.fail_after(5):
        await writer.wait_cancel_requested()
    await writer.cancelled()
    events = await collect(manager, writer.stream_id)
    assert events == [ChunkEvent(0, b'"before"'), ErrorEvent("CANCELLED", "flow cancelled")]
    assert (await manager.info(writer.stream_id)).status == "cancelled"
    assert await manager.cancel(writer.stream_id) is False


async def test_cancel_from_another_process(make_manager: MakeManager) -> None:
    async with make_manager(lease=0.6) as a, make_manager() as b:
        writer = await a.open()
        assert await b.cancel(writer.stream_id) is True
        with anyio.fail_after(5):
            await writer.wait_cancel_requested()
        await writer.cancelled("stopped")
        assert (await collect(b, writer.stream_id))[-1] == ErrorEvent("CANCELLED", "stopped")


async def test_stop_from_another_process(make_manager: MakeManager) -> None:
    async with make_manager(lease=0.6) as a, make_manager() as b:
        writer = await a.open()
        await writer.write("partial")
        assert await b.stop(writer.stream_id) is True
        assert (await b.info(writer.stream_id)).stop_requested
        with anyio.fail_after(10):  # heard at a's next renewal
            while not writer.stop_requested:  # noqa: ASYNC110 - the writer offers no event
                await anyio.sleep(0.02)
        assert not writer.cancel_requested
        await writer.done("partial answer")
        assert await b.stop(writer.stream_id) is False
        events = await collect(b, writer.stream_id)
        assert events == [ChunkEvent(0, b'"partial"'), ResultEvent(b'"partial answer"')]


async def test_a_cancel_outranks_a_stop(make_manager: MakeManager) -> None:
    async with make_manager(lease=0.6) as a, make_manager() as b:
        writer = await a.open()
        assert await b.stop(writer.stream_id) is True
        assert await b.cancel(writer.stream_id) is True
        with anyio.fail_after(10):
            await writer.wait_cancel_requested()
        record = await b.info(writer.stream_id)
        assert record.cancel_requested
        await writer.cancelled()


async def test_finished_streams_expire_and_purge(make_manager: MakeManager) -> None:
    async with make_manager(ttl=0.3) as manager:
        writer = await manager.open()
        await writer.write("x")
        await writer.done(1)
        assert (await manager.info(writer.stream_id)).status == "done"
        await anyio.sleep(0.5)
        with pytest.raises(StreamNotFoundError):
            await manager.info(writer.stream_id)
        with pytest.raises(StreamNotFoundError):
            await collect(manager, writer.stream_id)
        assert await manager.purge() >= 1
        assert await manager.storage.load(writer.stream_id) is None


async def test_open_streams_do_not_expire_while_leased(make_manager: MakeManager) -> None:
    # Renewed every lease/3 (0.2 s) while expiry sits lease+ttl (1 s) ahead: a busy
    # machine has 0.8 s of slack per renewal. The wait outlasts lease+ttl by half.
    async with make_manager(ttl=0.4, lease=0.6) as manager:
        writer = await manager.open()
        await anyio.sleep(1.5)
        await manager.purge()
        assert (await manager.info(writer.stream_id)).status == "open"
        await writer.done(None)


async def test_abandoned_stream_ends_with_unavailable(make_manager: MakeManager) -> None:
    async with make_manager(lease=0.5, flush_interval=0) as dying:
        writer = await dying.open()
        for i in range(3):
            await writer.write(i)
    # The writer's manager is gone: nobody renews the lease any more.
    async with make_manager() as survivor:
        with anyio.fail_after(5):
            events = await collect(survivor, writer.stream_id)
    assert chunks_of(events) == [(0, 0), (1, 1), (2, 2)]
    assert events[-1] == ErrorEvent("UNAVAILABLE", "stream abandoned")


async def test_abandonment_is_recorded_and_the_stalled_writer_refused(
    backend: BackendHarness, make_manager: MakeManager
) -> None:
    stalling = FlakyStorage(backend.new_storage())
    async with (
        StreamManager(stalling, lease=0.6, flush_interval=0) as writing,
        make_manager() as first,
        make_manager() as second,
    ):
        writer = await writing.open(flow="f")
        for i in range(3):
            await writer.write(i)
        await writer.flush()
        stalling.renewals_down = True  # the writer stalls: its lease lapses
        async with anyio.create_task_group() as tg:
            seen: dict[str, list[StreamEvent]] = {}

            async def follow(name: str, manager: StreamManager) -> None:
                seen[name] = await collect(manager, writer.stream_id)

            tg.start_soon(follow, "first", first)
            tg.start_soon(follow, "second", second)
        abandoned = ErrorEvent("UNAVAILABLE", "stream abandoned")
        expected = [ChunkEvent(i, str(i).encode()) for i in range(3)] + [abandoned]
        assert seen["first"] == seen["second"] == expected
        record = await first.info(writer.stream_id)
        assert (record.status, record.length, record.lease_until) == ("error", 3, None)

        # The stalled writer wakes up: its renewal finds the stream finished and asks
        # it to stop; what it still writes changes nothing any reader sees.
        stalling.renewals_down = False
        with anyio.fail_after(10):
            await writer.wait_cancel_requested()
        with contextlib.suppress(StreamClosedError):
            await writer.write("late")
            await writer.flush()
        await writer.done("late result")
        async with make_manager() as late:
            assert await collect(late, writer.stream_id) == expected
            assert (await late.info(writer.stream_id)).status == "error"
        assert await collect(first, writer.stream_id) == expected


async def test_abandonment_is_recorded_once(backend: BackendHarness) -> None:
    storage = backend.new_storage()
    async with StreamManager(storage, lease=0.2) as manager:
        writer = await manager.open()
        await writer.write("x")
        await writer.flush()
    record = await _load_after_lapse(backend, writer.stream_id)
    assert record.status == "open"
    async with StreamManager(backend.new_storage()) as reader:
        store = reader.storage
        end = Terminal("error", b'{"status":"UNAVAILABLE","message":"stream abandoned"}')
        assert not await store.abandon(writer.stream_id, end, now=0.0, expires_at=1e12)
        now = reader.clock()
        won = [
            await store.abandon(writer.stream_id, end, now=now, expires_at=now + 60)
            for _ in range(2)
        ]
        assert won == [True, False]
        assert not await store.abandon("never-made-stream-0001", end, now=now, expires_at=now + 60)
        stored = await store.load(writer.stream_id)
        assert stored is not None and (stored.terminal, stored.length) == (end, 1)


async def _load_after_lapse(backend: BackendHarness, stream_id: str) -> StreamRecord:
    storage = backend.new_storage()
    async with StreamManager(storage) as manager:
        with anyio.fail_after(10):
            while True:
                record = await manager.info(stream_id)
                if record.lease_until is not None and record.lease_until < manager.clock():
                    return record
                await anyio.sleep(0.05)


async def test_chunk_and_length_limits(make_manager: MakeManager) -> None:
    async with make_manager(max_chunk_bytes=64, max_stream_chunks=3) as manager:
        writer = await manager.open()
        with pytest.raises(ResourceExhaustedError):
            await writer.write("x" * 100)
        for i in range(3):
            await writer.write(i)
        with pytest.raises(ResourceExhaustedError):
            await writer.write(3)
        await writer.done("fine")
        assert chunks_of(await collect(manager, writer.stream_id)) == [(0, 0), (1, 1), (2, 2)]


async def test_slow_subscriber_never_blocks_the_writer(manager: StreamManager) -> None:
    writer = await manager.open()
    await writer.write(0)
    await writer.flush()
    events = manager.subscribe(writer.stream_id)
    # A subscriber that reads one chunk, then stops reading while the writer goes on.
    assert await events.__anext__() == ChunkEvent(0, b"0")
    with anyio.fail_after(20):
        for i in range(1, 5000):
            await writer.write(i)
        await writer.done("fast")
    rest = [e async for e in events]
    assert [e.offset for e in rest if isinstance(e, ChunkEvent)] == list(range(1, 5000))


async def test_flushes_are_batched(make_manager: MakeManager) -> None:
    async with make_manager(flush_interval=0.05) as manager:
        calls: list[int] = []
        storage = manager.storage
        original = storage.append

        async def counting(stream_id: str, offset: int, chunks: Any) -> None:
            calls.append(len(chunks))
            await original(stream_id, offset, chunks)

        storage.append = counting  # type: ignore[method-assign]
        try:
            writer = await manager.open()
            started = anyio.current_time()
            for i in range(100):
                await writer.write(i)
                await anyio.sleep(0.001)
            elapsed = anyio.current_time() - started
            await writer.done(None)
        finally:
            del storage.append
        assert sum(calls) == 100
        # At most one timed flush per interval of the time the writes really took
        # (however slow the machine), plus the last partial one and done()'s own.
        assert len(calls) <= elapsed / 0.05 + 2
        assert len(calls) < 100  # and never one per chunk
        assert chunks_of(await collect(manager, writer.stream_id)) == [(i, i) for i in range(100)]


async def test_one_backend_listener_per_stream(make_manager: MakeManager) -> None:
    async with make_manager() as writing, make_manager(poll_fallback=0.5) as reading:
        writer = await writing.open()
        opened: list[str] = []
        storage = reading.storage
        if storage.shared:
            original = storage.watch

            def counting(stream_id: str) -> AsyncIterator[None]:
                opened.append(stream_id)
                return original(stream_id)

            storage.watch = counting  # type: ignore[method-assign]
        results: list[list[StreamEvent]] = []

        async def follow() -> None:
            results.append(await collect(reading, writer.stream_id))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(follow)
            await anyio.sleep(0.1)
            await writer.write("x")
            await writer.done("y")
        if storage.shared:
            del storage.watch
        assert len(results) == 20
        assert all(chunks_of(r) == [(0, "x")] for r in results)
        assert opened == ([writer.stream_id] if storage.shared else [])
        assert reading._listeners == {}


async def test_retried_append_replaces_the_batch(manager: StreamManager) -> None:
    writer = await manager.open()
    storage, sid = manager.storage, writer.stream_id
    await storage.append(sid, 0, [b"0", b"1"])
    await storage.append(sid, 0, [b"0", b"1", b"2"])  # a retry carrying newer chunks too
    await storage.append(sid, 3, [b"3"])
    assert await storage.read(sid, 0, 10) == [b"0", b"1", b"2", b"3"]
    record = await storage.load(sid)
    assert record is not None and record.length == 4


async def test_raw_newline_is_refused_before_the_store(manager: StreamManager) -> None:
    writer = await manager.open()
    with pytest.raises(InvalidArgumentError, match="newline"):
        await writer.write_raw(b'"a\nb"')  # a raw newline byte inside
    await writer.write("a\nb")  # an escaped newline in a string is fine
    await writer.done(None)
    assert chunks_of(await collect(manager, writer.stream_id)) == [(0, "a\nb")]


async def test_subscribers_are_interrupted_when_their_manager_stops(
    make_manager: MakeManager,
) -> None:
    # The stream is still open: the subscription ends with an exception that says
    # "resume elsewhere", never a terminal event the stream will not have.
    received: list[StreamEvent] = []
    errors: list[StreamInterruptedError] = []
    async with anyio.create_task_group() as tg:
        async with make_manager() as manager:
            writer = await manager.open()
            await writer.write("x")
            await writer.flush()

            async def follow() -> None:
                try:
                    async for event in manager.subscribe(writer.stream_id):
                        received.append(event)
                except StreamInterruptedError as exc:
                    errors.append(exc)

            tg.start_soon(follow)
            # The subscriber has read the chunk before the manager stops (a loaded
            # machine may take long; the bound is against a hang only).
            with anyio.fail_after(30):
                while not received:  # noqa: ASYNC110 - the subscriber offers no event
                    await anyio.sleep(0.01)
    assert received == [ChunkEvent(0, b'"x"')]
    assert [e.message for e in errors] == ["stream manager stopped"]


# -- the stream of a durable execution: reset entries, attach, no abandonment -----------


async def test_reset_entries_are_stored_and_read_back_exactly(manager: StreamManager) -> None:
    writer = await manager.open(flow="f", extra={DURABLE: "x"})
    for raw in (b'"a"', b'"b"'):
        await writer.write_raw(raw)
    await writer.reset(1)
    await writer.write_raw(b'"c"')
    await writer.done_raw(b'"ac"')
    stored = await manager.storage.read(writer.stream_id, 0, 10)
    assert stored == [b'"a"', b'"b"', b"#reset 1", b'"c"']
    assert (await manager.info(writer.stream_id)).length == 4


async def test_durable_stream_readers_get_the_live_view(manager: StreamManager) -> None:
    writer = await manager.open(flow="f", extra={DURABLE: "x"})
    for raw in (b'"a"', b'"b"', b'"c"'):
        await writer.write_raw(raw)
    await writer.reset(1)  # at offset 3: "b" and "c" are void
    await writer.write_raw(b'"B"')
    await writer.done_raw(b'"aB"')
    late = await collect(manager, writer.stream_id)
    assert chunks_of(late) == [(0, "a"), (4, "B")]
    assert not any(isinstance(e, ResetEvent) for e in late)
    # A reader that showed "b" (offset 1) resumes at 2: told to drop from 1 first.
    resumed = await collect(manager, writer.stream_id, 2)
    assert resumed[0] == ResetEvent(3, 1)
    assert chunks_of(resumed) == [(4, "B")]


async def test_live_reader_of_a_durable_stream_gets_the_reset(manager: StreamManager) -> None:
    writer = await manager.open(flow="f", extra={DURABLE: "x"})
    await writer.write_raw(b'"a"')
    await writer.flush()
    events: list[StreamEvent] = []
    first = anyio.Event()

    async def follow() -> None:
        with anyio.fail_after(20):
            async for event in manager.subscribe(writer.stream_id):
                events.append(event)
                first.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        await first.wait()  # the reader showed "a" before the reset was written
        await writer.reset(0)
        await writer.write_raw(b'"A"')
        await writer.done_raw(b'"A"')
    assert events == [
        ChunkEvent(0, b'"a"'),
        ResetEvent(1, 0),
        ChunkEvent(2, b'"A"'),
        ResultEvent(b'"A"'),
    ]


async def test_live_reader_finds_a_reset_inside_a_batch_and_no_false_one(
    manager: StreamManager,
) -> None:
    # Readers scan each batch for control entries at once: a reset in the middle of a
    # batch still comes in place, and chunks that merely hold the control prefix (or
    # the text of a reset entry, as JSON) stay chunks.
    writer = await manager.open(flow="f", extra={DURABLE: "x"})
    await writer.write_raw(b'"a"')
    await writer.flush()
    events: list[StreamEvent] = []
    first = anyio.Event()

    async def follow() -> None:
        with anyio.fail_after(20):
            async for event in manager.subscribe(writer.stream_id):
                events.append(event)
                first.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        await first.wait()
        for raw in (b'"#b"', b'"#reset 0"'):
            await writer.write_raw(raw)
        await writer.reset(1)
        await writer.write_raw(b'"c#"')
        await writer.done_raw(b'"ac#"')  # one commit: the reader reads it as one batch
    assert events == [
        ChunkEvent(0, b'"a"'),
        ChunkEvent(1, b'"#b"'),
        ChunkEvent(2, b'"#reset 0"'),
        ResetEvent(3, 1),
        ChunkEvent(4, b'"c#"'),
        ResultEvent(b'"ac#"'),
    ]
    late = await collect(manager, writer.stream_id)
    assert late == [ChunkEvent(0, b'"a"'), ChunkEvent(4, b'"c#"'), ResultEvent(b'"ac#"')]


async def test_durable_stream_is_taken_over_not_abandoned(make_manager: MakeManager) -> None:
    async with make_manager(lease=0.3, poll_fallback=0.05, write_retry_for=10.0) as first:
        writer = await first.open(flow="f", extra={DURABLE: "x"})
        await writer.write_raw(b'"a"')
        await writer.detach()  # its worker died, say: nobody renews the lease
        stream_id = writer.stream_id
    async with make_manager(lease=0.3, poll_fallback=0.05, write_retry_for=10.0) as second:
        events: list[StreamEvent] = []
        seen = anyio.Event()

        async def follow_first() -> None:
            with anyio.fail_after(20):
                async for event in second.subscribe(stream_id):
                    events.append(event)
                    seen.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow_first)
            await seen.wait()
            await anyio.sleep(0.5)  # well past the lease: still no terminal event
            assert events == [ChunkEvent(0, b'"a"')]
            again = await second.attach(stream_id)
            assert again.length == 1
            await again.reset(0)
            await again.write_raw(b'"b"')
            await again.done_raw(b'"b"')
    assert events == [
        ChunkEvent(0, b'"a"'),
        ResetEvent(1, 0),
        ChunkEvent(2, b'"b"'),
        ResultEvent(b'"b"'),
    ]


async def test_attach_refuses_plain_and_finished_streams(manager: StreamManager) -> None:
    plain = await manager.open(flow="f")
    with pytest.raises(StreamClosedError):
        await manager.attach(plain.stream_id)
    durable = await manager.open(flow="f", extra={DURABLE: "x"})
    await durable.done(None)
    with pytest.raises(StreamClosedError):
        await manager.attach(durable.stream_id)
    with pytest.raises(StreamNotFoundError):
        await manager.attach("never-made-stream-0001")


# -- listing ------------------------------------------------------------------------------


async def _listed(manager: StreamManager, **conditions: Any) -> list[StreamRecord]:
    """Every record the listing yields, page by page (pages of 2), checking the pages."""
    records: list[StreamRecord] = []
    cursor = None
    for _ in range(50):
        page = await manager.list_streams(limit=2, cursor=cursor, **conditions)
        assert len(page.records) <= 2
        records += page.records
        if page.next_cursor is None:
            return records
        cursor = page.next_cursor
    raise AssertionError("the listing did not end")


async def test_list_streams_newest_first_with_filters(manager: StreamManager) -> None:
    writers = []
    for i in range(5):
        writer = await manager.open(flow="even" if i % 2 == 0 else "odd", owner=f"owner{i % 3}")
        writers.append(writer)
    for i in range(3):
        await writers[4].write(i)
    await writers[4].flush()
    await writers[0].done("r0")
    await writers[1].done("r1")
    await writers[2].error(ValueError("boom"))
    await manager.cancel(writers[3].stream_id)

    infos = [await manager.info(w.stream_id) for w in writers]
    newest_first = sorted(infos, key=lambda r: (r.created_at, r.stream_id), reverse=True)

    everything = await _listed(manager)
    assert [r.stream_id for r in everything] == [r.stream_id for r in newest_first]
    by_id = {r.stream_id: r for r in everything}
    assert by_id[writers[4].stream_id].length == 3  # exact while open
    assert by_id[writers[4].stream_id].status == "open"
    assert by_id[writers[0].stream_id].status == "done"
    assert by_id[writers[2].stream_id].status == "error"
    assert by_id[writers[0].stream_id].flow == "even"
    assert by_id[writers[1].stream_id].owner == "owner1"

    def ids(records: list[StreamRecord]) -> list[str]:
        return [r.stream_id for r in records]

    expected_even = [r.stream_id for r in newest_first if r.flow == "even"]
    assert ids(await _listed(manager, flow="even")) == expected_even
    assert ids(await _listed(manager, status="done")) == [
        r.stream_id for r in newest_first if r.status == "done"
    ]
    assert ids(await _listed(manager, owner="owner0")) == [
        r.stream_id for r in newest_first if r.owner == "owner0"
    ]
    assert ids(await _listed(manager, flow="even", status="open")) == [writers[4].stream_id]
    assert await _listed(manager, flow="nothing") == []
    page = await manager.list_streams(limit=10)
    assert page.next_cursor is None and ids(page.records) == ids(newest_first)

    await writers[4].done(None)


async def test_list_streams_refuses_bad_arguments(manager: StreamManager) -> None:
    with pytest.raises(InvalidArgumentError, match="cursor"):
        await manager.list_streams(cursor="not a cursor")
    with pytest.raises(InvalidArgumentError, match="limit"):
        await manager.list_streams(limit=0)
    with pytest.raises(InvalidArgumentError, match="status"):
        await manager.list_streams(status="finished")  # type: ignore[arg-type]


# -- per-stream TTL ---------------------------------------------------------------------


async def test_each_stream_keeps_its_own_ttl(make_manager: MakeManager) -> None:
    """A stream's TTL moves its expiry at creation, at each renewal and at its end; a
    TTL above the manager's maximum is refused before anything is stored."""
    async with make_manager(ttl=100.0, max_ttl=5000.0, lease=0.3) as manager:
        plain = await manager.open(flow="f")
        kept = await manager.open(flow="f", ttl=4000.0)
        for writer, ttl in ((plain, 100.0), (kept, 4000.0)):
            record = await manager.info(writer.stream_id)
            assert record.lease_until is not None
            assert record.expires_at - record.lease_until == pytest.approx(ttl, abs=0.01)
        # Renewals (every lease / 3) keep each stream's own TTL.
        first_lease = (await manager.info(kept.stream_id)).lease_until
        with anyio.fail_after(20):
            while (await manager.info(kept.stream_id)).lease_until == first_lease:  # noqa: ASYNC110 - the store has no event for a renewal
                await anyio.sleep(0.05)
        for writer, ttl in ((plain, 100.0), (kept, 4000.0)):
            record = await manager.info(writer.stream_id)
            assert record.lease_until is not None
            assert record.expires_at - record.lease_until == pytest.approx(ttl, abs=0.01)
        await plain.done(None)
        await kept.done(None)
        for writer, ttl in ((plain, 100.0), (kept, 4000.0)):
            record = await manager.info(writer.stream_id)
            assert record.expires_at - record.updated_at == pytest.approx(ttl, abs=0.01)

        with pytest.raises(InvalidArgumentError, match=r"above this server's maximum of 5000s"):
            await manager.open(flow="f", ttl=5001.0)
        with pytest.raises(InvalidArgumentError, match="positive"):
            await manager.open(flow="f", ttl=0)
        assert len((await manager.list_streams()).records) == 2  # nothing stored
