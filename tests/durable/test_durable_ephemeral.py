"""Ephemeral steps: written with the next durable write, re-run by a crash before it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from stream_gateway.durable import (
    AuditEntry,
    DurableContext,
    DurableEngine,
    DurableStore,
    JournalEntry,
    Lease,
    Loop,
    RetryPolicy,
    durable_flow,
)

from .conftest import NewStore, StartEngine
from .helpers import finished, until_status

pytestmark = pytest.mark.anyio


class CountingStore:
    """Wraps a store and records each `append` as the keys it wrote."""

    def __init__(self, store: DurableStore) -> None:
        self.store = store
        self.appends: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def append(
        self,
        lease: Lease,
        entry: JournalEntry,
        now: float,
        *,
        consume: Any = (),
        audit: Sequence[AuditEntry] = (),
        preceding: Sequence[JournalEntry] = (),
    ) -> None:
        await self.store.append(
            lease, entry, now, consume=consume, audit=audit, preceding=preceding
        )
        self.appends.append([e.path for e in [*preceding, entry]])


def counted(calls: Counter[str], name: str, value: Any = None) -> Any:
    def body() -> Any:
        calls[name] += 1
        return value

    return body


async def test_ephemeral_steps_are_written_with_the_next_durable_write(
    new_store: NewStore,
) -> None:
    calls: Counter[str] = Counter()

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        a = await ctx.run("a", counted(calls, "a", 1), ephemeral=True)
        b = await ctx.run("b", counted(calls, "b", 2), ephemeral=True)
        c = await ctx.run("c", counted(calls, "c", 3))
        await ctx.run("d", counted(calls, "d", 4), ephemeral=True)
        await ctx.sleep("nap", 0)  # a sleep's write carries d
        await ctx.run("e", counted(calls, "e", 5), ephemeral=True)
        await ctx.interrupt("go")  # a suspension with no write of its own flushes e
        return [a, b, c, await ctx.run("last", counted(calls, "last", 6), ephemeral=True)]

    counting = CountingStore(new_store())
    engine = DurableEngine([f], store=counting, poll_interval=0.02)  # type: ignore[arg-type]
    async with engine, engine.worker(poll_interval=0.02):
        op = await engine.schedule(f)
        await until_status(engine, op.name, "waiting")
        waiting = [e.key for e in await engine.history(op.name)]
        await engine.resume(op.name, "go", None)
        done = await finished(engine, op.name)
    assert waiting == ["a", "b", "c", "d", "nap", "e"]
    assert done.response == [1, 2, 3, 6]
    assert calls == Counter({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "last": 1})
    # a, b with c; d with the sleep; e on its own before parking; the interrupt's
    # entry; the last step on its own before the end.
    assert counting.appends == [["a", "b", "c"], ["d", "nap"], ["e"], ["go"], ["last"]]


async def test_a_crash_before_the_next_durable_write_runs_an_ephemeral_step_again(
    start: StartEngine,
) -> None:
    calls: Counter[str] = Counter()
    entered = anyio.Event()

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        first = await ctx.run("cheap", counted(calls, "cheap", "x"), ephemeral=True)

        async def slow() -> str:
            calls["slow"] += 1
            if calls["slow"] == 1:
                entered.set()
                await anyio.sleep_forever()  # the process dies here
            return "y"

        second = await ctx.run("slow", slow)
        await ctx.interrupt("go")
        return [first, second]

    async with start([f], grace=0.0) as (engine, _):
        op = await engine.schedule(f)
        with anyio.fail_after(10):
            await entered.wait()
        assert await engine.history(op.name) == []  # "cheap" is not written yet
    # The worker stopped before the next durable write: "cheap" is lost and runs
    # again; once "slow" is written, it carries "cheap" and nothing runs again.
    async with start([f]) as (engine, _):
        await until_status(engine, op.name, "waiting")
    assert calls == Counter({"cheap": 2, "slow": 2})
    async with start([f]) as (engine, _):
        await engine.resume(op.name, "go", None)
        done = await finished(engine, op.name)
    assert done.response == ["x", "y"]
    assert calls == Counter({"cheap": 2, "slow": 2})


async def test_ephemeral_steps_in_join_branches_retries_and_at_the_end(
    start: StartEngine,
) -> None:
    calls: Counter[str] = Counter()

    def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise OSError("blip")
        return "ok"

    async def branch(ctx: DurableContext) -> Any:
        return await ctx.run(
            "leaf", counted(calls, f"leaf:{ctx.branch}", ctx.branch), ephemeral=True
        )

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        got = await ctx.join("both", {"l": branch, "r": branch})
        retried = await ctx.run(
            "flaky", flaky, ephemeral=True, retry=RetryPolicy(max_attempts=2, backoff_base=0)
        )
        timed = await ctx.run("timed", counted(calls, "timed", 7), ephemeral=True, timeout=5)
        return [got, retried, timed]  # "timed" is written with the run's end

    async with start([f]) as (engine, _):
        done = await finished(engine, (await engine.schedule(f)).name)
        entries = {e.path: e for e in await engine.history(done.name)}
    assert done.response == [{"l": "both:l", "r": "both:r"}, "ok", 7]
    assert entries["flaky"].status == "completed" and entries["flaky"].attempts == 2
    assert entries["timed"].status == "completed"
    assert {"both:l/leaf", "both:r/leaf"} <= set(entries)
    assert calls == Counter({"leaf:both:l": 1, "leaf:both:r": 1, "flaky": 2, "timed": 1})


async def test_ephemeral_with_rollback_is_refused(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> None:
        await ctx.run("pay", lambda: 1, ephemeral=True, rollback=lambda _: None)

    async with start([f]) as (engine, _):
        done = await finished(engine, (await engine.schedule(f)).name)
    assert done.status == "failed" and done.error is not None
    assert done.error.status == "INVALID_ARGUMENT"
    assert "ephemeral" in done.error.message and "rollback=" in done.error.message


async def test_ephemeral_steps_of_pruned_loop_iterations_are_not_written_back(
    start: StartEngine,
) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        async def turn(ctx: DurableContext, n: int) -> Loop:
            await ctx.run("think", lambda: n, ephemeral=True)
            return Loop.next(n + 1) if n < 6 else Loop.done(n)

        return await ctx.loop("turns", turn, state=0, history_keep=2, commit_interval=2)

    async with start([f]) as (engine, _):
        done = await finished(engine, (await engine.schedule(f)).name)
        entries = await engine.history(done.name)
    assert done.response == 6
    kept = sorted(e.branch for e in entries if e.key == "think")
    assert kept == ["turns@5", "turns@6"]  # the last history_keep iterations only
