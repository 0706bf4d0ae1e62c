"""Streaming durable flows: the stream is the execution's logical output.

Chunks sent before the journal's end are not sent again on replay, a completed step
never streams again, and what a failed or lost attempt sent is retracted by a reset
entry; readers that join later get only the live view."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from stream_gateway import InMemoryStreamManager, StreamManager
from stream_gateway.durable import (
    DurableContext,
    DurableEngine,
    DurableUsageError,
    RetryPolicy,
    durable_flow,
)
from stream_gateway.streams.base import ChunkEvent, ErrorEvent, ResetEvent, ResultEvent

from .conftest import NewStore
from .helpers import finished, until_status

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(max_attempts=3, backoff_base=0.0, jitter=0.0)


@asynccontextmanager
async def engine_on(
    new_store: NewStore, manager: StreamManager, flows: list[Any]
) -> AsyncIterator[DurableEngine]:
    engine = DurableEngine(flows, store=new_store(), poll_interval=0.02, streams=manager)
    async with engine, engine.worker(poll_interval=0.02, lease=5.0, grace=1.0):
        yield engine


async def events(manager: StreamManager, stream_id: str, offset: int = 0) -> list[Any]:
    with anyio.fail_after(10):
        return [e async for e in manager.subscribe(stream_id, offset)]


def view(items: list[Any]) -> list[Any]:
    """What a client shows: chunks, minus those a reset retracted."""
    shown: list[tuple[int, Any]] = []
    for event in items:
        if isinstance(event, ChunkEvent):
            shown.append((event.offset, event.data))
        elif isinstance(event, ResetEvent):
            shown = [(o, c) for o, c in shown if o < event.void_from]
    return [c for _, c in shown]


async def test_root_chunks_steps_and_result(new_store: NewStore) -> None:
    @durable_flow(chunk=str)
    async def story(topic: str, ctx: DurableContext) -> str:
        await ctx.send_chunk(f"about {topic}:")

        async def words() -> int:
            for word in ("one", "two"):
                await ctx.send_chunk(word)
            return 2

        count = await ctx.run("words", words)
        await ctx.sleep("pause", 0.01)  # a replay: nothing before it is sent again
        await ctx.send_chunk("end")
        return f"{count} words"

    async with InMemoryStreamManager() as manager, engine_on(new_store, manager, [story]) as engine:
        op = await engine.schedule(story, "cats")
        assert (await finished(engine, op.name)).response == "2 words"
        got = await events(manager, op.name)
    assert [e.data for e in got if isinstance(e, ChunkEvent)] == [
        "about cats:",
        "one",
        "two",
        "end",
    ]
    assert got[-1] == ResultEvent(b'"2 words"')
    assert not any(isinstance(e, ResetEvent) for e in got)


async def test_failed_attempt_is_retracted_and_late_reader_sees_live_view(
    new_store: NewStore,
) -> None:
    attempts = 0

    @durable_flow(chunk=str)
    async def answer(_: Any, ctx: DurableContext) -> str:
        async def body() -> str:
            nonlocal attempts
            attempts += 1
            await ctx.send_chunk("Hel")
            if attempts == 1:
                raise RuntimeError("model overloaded")
            await ctx.send_chunk("lo")
            return "ok"

        await ctx.send_chunk(">")
        return str(await ctx.run("llm", body, retry=FAST))

    async with (
        InMemoryStreamManager() as manager,
        engine_on(new_store, manager, [answer]) as engine,
    ):
        op = await engine.schedule(answer, None)
        await finished(engine, op.name)
        late = await events(manager, op.name)
        raw = [e for e in await _raw(manager, op.name)]
    # The log: ">" "Hel" reset(1) "Hel" "lo"; offsets stay dense.
    assert raw == [b'">"', b'"Hel"', b"#reset 1", b'"Hel"', b'"lo"']
    assert [(e.offset, e.data) for e in late if isinstance(e, ChunkEvent)] == [
        (0, ">"), (3, "Hel"), (4, "lo"),
    ]  # fmt: skip
    assert not any(isinstance(e, ResetEvent) for e in late)


async def _until_length(manager: StreamManager, stream_id: str, length: int) -> None:
    with anyio.fail_after(10):
        while (await manager.info(stream_id)).length < length:  # noqa: ASYNC110 - a store
            await anyio.sleep(0.01)


async def _raw(manager: StreamManager, stream_id: str) -> list[bytes]:
    record = await manager.info(stream_id)
    return await manager.storage.read(stream_id, 0, record.length)


async def test_resume_inside_a_retracted_range_gets_the_reset_first(new_store: NewStore) -> None:
    attempts = 0

    @durable_flow(chunk=str)
    async def answer(_: Any, ctx: DurableContext) -> str:
        async def body() -> str:
            nonlocal attempts
            attempts += 1
            for part in ("a", "b", "c"):
                await ctx.send_chunk(part)
            if attempts == 1:
                raise RuntimeError("boom")
            return "ok"

        return str(await ctx.run("llm", body, retry=FAST))

    async with (
        InMemoryStreamManager() as manager,
        engine_on(new_store, manager, [answer]) as engine,
    ):
        op = await engine.schedule(answer, None)
        await finished(engine, op.name)
        # A client that saw offsets 0 and 1 of the failed attempt resumes at 2.
        resumed = await events(manager, op.name, 2)
    assert resumed[0] == ResetEvent(3, 0)
    assert view([ChunkEvent(0, b'"a"'), ChunkEvent(1, b'"b"'), *resumed]) == ["a", "b", "c"]
    assert [e.offset for e in resumed if isinstance(e, ChunkEvent)] == [4, 5, 6]


async def test_live_reader_sees_reset_then_new_attempt(new_store: NewStore) -> None:
    gate = anyio.Event()
    attempts = 0

    @durable_flow(chunk=str)
    async def answer(_: Any, ctx: DurableContext) -> str:
        async def body() -> str:
            nonlocal attempts
            attempts += 1
            await ctx.send_chunk(f"try{attempts}")
            if attempts == 1:
                await gate.wait()
                raise RuntimeError("boom")
            return "ok"

        return str(await ctx.run("llm", body, retry=FAST))

    async with (
        InMemoryStreamManager() as manager,
        engine_on(new_store, manager, [answer]) as engine,
    ):
        op = await engine.schedule(answer, None)
        seen: list[Any] = []

        async def follow() -> None:
            seen.extend(await events(manager, op.name))

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await _until_length(manager, op.name, 1)
            gate.set()
        await finished(engine, op.name)
    assert seen[0] == ChunkEvent(0, b'"try1"')
    assert ResetEvent(1, 0) in seen
    assert view(seen) == ["try2"]
    assert isinstance(seen[-1], ResultEvent)


async def test_join_streams_each_step_when_it_completes(new_store: NewStore) -> None:
    @durable_flow(chunk=str)
    async def tools(_: Any, ctx: DurableContext) -> dict[str, Any]:
        def branch(name: str) -> Any:
            async def run(bctx: DurableContext) -> str:
                async def step() -> str:
                    await bctx.send_chunk(f"{name}:1")
                    await bctx.send_chunk(f"{name}:2")
                    return name

                return str(await bctx.run("look", step))

            return run

        return await ctx.join("tools", {"a": branch("a"), "b": branch("b")})

    async with InMemoryStreamManager() as manager, engine_on(new_store, manager, [tools]) as engine:
        op = await engine.schedule(tools, None)
        await finished(engine, op.name)
        got = view(await events(manager, op.name))
    # Each step's chunks arrive together, whatever the order of the branches.
    assert sorted([got[0:2], got[2:4]]) == [["a:1", "a:2"], ["b:1", "b:2"]]


async def test_chunk_outside_a_step_in_a_join_branch_fails_naming_the_fix(
    new_store: NewStore,
) -> None:
    @durable_flow(chunk=str)
    async def bad(_: Any, ctx: DurableContext) -> Any:
        async def branch(bctx: DurableContext) -> None:
            await bctx.send_chunk("x")

        return await ctx.join("j", {"a": branch})

    async with InMemoryStreamManager() as manager, engine_on(new_store, manager, [bad]) as engine:
        op = await engine.schedule(bad, None)
        done = await finished(engine, op.name)
        last = (await events(manager, op.name))[-1]
    assert done.status == "failed"
    assert isinstance(last, ErrorEvent)


async def test_flow_without_chunk_type_cannot_send(new_store: NewStore) -> None:
    @durable_flow
    async def plain(_: Any, ctx: DurableContext) -> None:
        await ctx.send_chunk("x")

    async with InMemoryStreamManager() as manager, engine_on(new_store, manager, [plain]) as engine:
        op = await engine.schedule(plain, None)
        done = await finished(engine, op.name)
    assert done.status == "failed"
    assert DurableUsageError.__name__  # the error type users catch
    assert "chunk" in str(done.error)


async def test_cancel_ends_the_stream_cancelled(new_store: NewStore) -> None:
    @durable_flow(chunk=str)
    async def waits(_: Any, ctx: DurableContext) -> None:
        await ctx.send_chunk("waiting")
        await ctx.wait_for_signal("go", "go")

    async with InMemoryStreamManager() as manager, engine_on(new_store, manager, [waits]) as engine:
        op = await engine.schedule(waits, None)
        await until_status(engine, op.name, "waiting")
        await engine.cancel(op.name)
        got = await events(manager, op.name)
    assert view(got) == ["waiting"]
    assert isinstance(got[-1], ErrorEvent) and got[-1].status == "CANCELLED"


async def test_stop_is_seen_at_the_next_durable_call_and_on_replay(new_store: NewStore) -> None:
    seen: list[bool] = []
    go_on = anyio.Event()

    @durable_flow(chunk=str)
    async def counts(_: Any, ctx: DurableContext) -> dict[str, Any]:
        seen.append(ctx.stop_requested)  # False on every run: no durable call yet
        await ctx.run("one", lambda: 1)

        async def wait() -> int:
            await go_on.wait()
            return 2

        await ctx.run("two", wait)  # the stop arrives while this step runs
        await ctx.sleep("nap", 0.01)  # a replay: the stop is seen at the same call
        stopped = ctx.stop_requested
        await ctx.send_chunk(f"stopped={stopped}")
        return {"stopped": stopped}

    async with (
        InMemoryStreamManager() as manager,
        engine_on(new_store, manager, [counts]) as engine,
    ):
        op = await engine.schedule(counts, None)
        await until_status(engine, op.name, "running")
        assert await engine.stop(op.name)
        assert not await engine.stop(op.name)  # asked already
        go_on.set()
        done = await finished(engine, op.name)
        got = await events(manager, op.name)
    assert done.response == {"stopped": True}
    assert view(got) == ["stopped=True"]
    assert seen[0] is False


async def test_chunks_sent_just_before_a_wait_are_not_sent_again(new_store: NewStore) -> None:
    """The flow's own chunks before it parks (a signal wait, a sleep) are vouched for
    when it parks: the next run neither retracts nor repeats them."""

    @durable_flow(chunk=str)
    async def ask(_: Any, ctx: DurableContext) -> str:
        await ctx.send_chunk("asking")
        answer: str = await ctx.wait_for_signal("answer", "go")
        await ctx.send_chunk(answer)
        await ctx.send_chunk("resting")
        await ctx.sleep("rest", 0.01)
        await ctx.send_chunk("done")
        return answer

    async with InMemoryStreamManager() as manager, engine_on(new_store, manager, [ask]) as engine:
        op = await engine.schedule(ask, None)
        await until_status(engine, op.name, "waiting")
        await engine.signal(op.name, "go", "yes")
        assert (await finished(engine, op.name)).response == "yes"
        raw = await _raw(manager, op.name)
    assert raw == [b'"asking"', b'"yes"', b'"resting"', b'"done"']
