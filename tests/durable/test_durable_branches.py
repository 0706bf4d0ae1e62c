"""`join`, `race` and `loop`, on every store, with restarts in the middle of each."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest

from stream_gateway.durable import (
    CriticalError,
    DurableContext,
    DurableEngine,
    InMemoryDurableStore,
    JoinError,
    JournalTooLargeError,
    Loop,
    RaceError,
    durable_flow,
)

from .conftest import StartEngine
from .helpers import finished, until_status

pytestmark = pytest.mark.anyio


async def test_join_runs_branches_concurrently_and_replays_after_a_restart(
    start: StartEngine,
) -> None:
    calls: Counter[str] = Counter()
    c_done = anyio.Event()

    def effect(name: str) -> Any:
        def run() -> str:
            calls[name] += 1
            if name == "c0":
                c_done.set()
            return name

        return run

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> dict[str, Any]:
        async def a(ctx: DurableContext) -> list[str]:
            return [await ctx.run(f"a{i}", effect(f"a{i}")) for i in range(3)]

        async def b(ctx: DurableContext) -> Any:
            await ctx.run("b0", effect("b0"))
            return await ctx.interrupt("approve")  # waits: must not hold up a and c

        async def c(ctx: DurableContext) -> str:
            await ctx.sleep("nap", 0.01)
            done: str = await ctx.run("c0", effect("c0"))
            return done

        results = await ctx.join("all", {"a": a, "b": b, "c": c})
        tail: str = await ctx.run("after", effect("after"))
        return {**results, "tail": tail}

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        waiting = await until_status(engine, op.name, "waiting")
        assert waiting.blocked_on_step == "all:b/approve"
        # Let c finish its sleep and step while b still waits.
        with anyio.fail_after(10):
            await c_done.wait()
        await until_status(engine, op.name, "waiting")
    async with start([f]) as (engine, _):  # a new worker in the middle of branch b
        await engine.resume(op.name, "all:b/approve", "yes")
        done = await finished(engine, op.name)
    assert done.response == {"a": ["a0", "a1", "a2"], "b": "yes", "c": "c0", "tail": "after"}
    assert set(calls.values()) == {1}, calls  # no completed step ran twice
    branches = {e.branch for e in await engine.history(op.name)}
    assert {"", "all:a", "all:b", "all:c"} <= branches


async def test_join_collects_failures_after_every_branch_ended(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        async def ok(ctx: DurableContext) -> int:
            await ctx.sleep("wait", 0.02)
            return 1

        async def bad(ctx: DurableContext) -> int:
            def boom() -> int:
                raise CriticalError("no way")

            value: int = await ctx.run("boom", boom)
            return value

        try:
            await ctx.join("both", {"ok": ok, "bad": bad})
        except JoinError as exc:
            return {name: err.status for name, err in exc.errors.items()}
        return "unreachable"

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
        ends = {e.branch: e.status for e in await engine.history(op.name) if e.key == "$end"}
    assert op.response == {"bad": "FAILED_PRECONDITION"}
    assert ends == {"both:ok": "completed", "both:bad": "failed"}


async def test_join_of_child_flows_and_nested_joins(start: StartEngine) -> None:
    @durable_flow(input=int, output=int)
    async def square(n: int, ctx: DurableContext) -> int:
        return n * n

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        async def kid(n: int) -> Any:
            async def branch(ctx: DurableContext) -> Any:
                return await ctx.run_action(square, n)

            return branch

        async def inner(ctx: DurableContext) -> Any:
            return await ctx.join("in", {"x": await kid(3), "y": await kid(4)})

        return await ctx.join("out", {"one": await kid(2), "nested": inner})

    async with start([f, square]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
    assert op.response == {"one": 4, "nested": {"x": 9, "y": 16}}, op.to_json()


async def test_race_takes_the_first_and_cancels_the_others(start: StartEngine) -> None:
    interrupted: list[str] = []

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        async def fast(ctx: DurableContext) -> str:
            return "fast"

        async def slow_step(ctx: DurableContext) -> str:
            async def work() -> str:
                try:
                    await anyio.sleep(30)
                finally:
                    interrupted.append("step")
                return "slow"

            done: str = await ctx.run("work", work)
            return done

        async def timer(ctx: DurableContext) -> str:
            await ctx.sleep("long", 3600)
            return "timer"

        return await ctx.race("first", {"slow": slow_step, "timer": timer, "fast": fast})

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
        entries = await engine.history(op.name)
    assert op.response == ["fast", "fast"]
    assert interrupted == ["step"]
    assert not [e for e in entries if e.key == "work"]  # the loser's step left nothing


async def test_race_replays_a_wait_after_a_restart_and_records_its_winner(
    start: StartEngine,
) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        async def answer(ctx: DurableContext) -> Any:
            return await ctx.wait_for_signal("answer", "answer")

        async def deadline(ctx: DurableContext) -> str:
            await ctx.sleep("deadline", 3600)
            return "late"

        winner = await ctx.race("reply", {"answer": answer, "deadline": deadline})
        again = await ctx.race("reply", {"answer": answer, "deadline": deadline})
        return [winner, again[0]]

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        await until_status(engine, op.name, "sleeping")
    async with start([f]) as (engine, _):
        await engine.signal(op.name, "answer", 42)
        await engine.signal(op.name, "answer", 43)
        done = await finished(engine, op.name)
    assert done.response == [["answer", 42], "answer"], done.to_json()


async def test_race_where_every_branch_fails(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        async def bad(ctx: DurableContext) -> None:
            raise ValueError("nope")

        try:
            await ctx.race("r", {"a": bad, "b": bad})
        except RaceError as exc:
            return sorted(exc.errors)
        return None

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
    assert op.response == ["a", "b"]


async def test_loop_replays_from_its_last_commit_and_keeps_bounded_history(
    start: StartEngine,
) -> None:
    bodies: Counter[int] = Counter()
    turns = 30

    @durable_flow
    async def agent(_: None, ctx: DurableContext) -> Any:
        async def turn(ctx: DurableContext, state: dict[str, int]) -> Loop:
            bodies[state["n"]] += 1
            said: int = await ctx.run("say", lambda: state["n"] * 2)
            await ctx.sleep("think", 0)
            if state["n"] + 1 == turns:
                return Loop.done(state["total"] + said)
            return Loop.next({"n": state["n"] + 1, "total": state["total"] + said})

        return await ctx.loop("turns", turn, state={"n": 0, "total": 0}, history_keep=3)

    async with start([agent]) as (engine, _):
        op = await finished(engine, (await engine.schedule(agent)).name)
        entries = await engine.history(op.name)
    assert op.response == sum(2 * n for n in range(turns))
    assert sum(bodies.values()) <= 2 * turns, bodies
    assert max(bodies.values()) <= 2
    iterations = {e.branch for e in entries if e.branch}
    assert len(iterations) <= 3, iterations


async def test_loop_waiting_on_signals_survives_a_restart(start: StartEngine) -> None:
    @durable_flow
    async def chat(_: None, ctx: DurableContext) -> Any:
        async def turn(ctx: DurableContext, log: list[Any]) -> Loop:
            said = await ctx.wait_for_signal("hear", "say")
            if said == "bye":
                return Loop.done(log)
            return Loop.next([*log, said])

        return await ctx.loop("chat", turn, state=[], commit_interval=2)

    async with start([chat]) as (engine, _):
        op = await engine.schedule(chat)
        await engine.signal(op.name, "say", "hi")
        await engine.signal(op.name, "say", "there")
        await engine.signal(op.name, "say", "you")
        await until_status(engine, op.name, "waiting")
    async with start([chat]) as (engine, _):
        await engine.signal(op.name, "say", "bye")
        done = await finished(engine, op.name)
    assert done.response == ["hi", "there", "you"]


async def test_a_journal_over_its_bound_fails_with_a_clear_error() -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> None:
        for i in range(100):
            await ctx.run(f"s{i}", lambda: "x" * 500)

    engine = DurableEngine([f], store=InMemoryDurableStore(), max_journal_bytes=10_000)
    async with engine, engine.worker(poll_interval=0.02):
        op = await finished(engine, (await engine.schedule(f)).name)
    assert isinstance(op.error, JournalTooLargeError)
    assert "ctx.loop" in op.error.message


async def test_branch_errors_reach_clients_redacted_and_operators_in_full(
    start: StartEngine,
) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        async def bug(ctx: DurableContext) -> None:
            raise KeyError("secret internal detail")

        async def ok(ctx: DurableContext) -> int:
            return 1

        return await ctx.join("j", {"bug": bug, "ok": ok})

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
        entries = await engine.history(op.name)
    assert isinstance(op.error, JoinError)
    assert "secret" not in str(op.to_json())
    assert op.error.errors["bug"].status == "INTERNAL"
    [end] = [e for e in entries if e.branch == "j:bug" and e.key == "$end"]
    assert end.error is not None and end.error["operator"]["message"] == "'secret internal detail'"


async def test_resume_of_an_interrupt_inside_a_join_is_validated(start: StartEngine) -> None:
    from pydantic import BaseModel

    from stream_gateway import InvalidArgumentError

    class Answer(BaseModel):
        ok: bool

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        async def slow(ctx: DurableContext) -> str:
            await ctx.sleep("later", 3600)
            return "slow"

        async def ask(ctx: DurableContext) -> bool:
            answer: Answer = await ctx.interrupt("approve", Answer)
            return answer.ok

        return await ctx.join("j", {"slow": slow, "ask": ask})

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        await until_status(engine, op.name, "sleeping")
        with pytest.raises(InvalidArgumentError):
            await engine.resume(op.name, "j:ask/approve", {"ok": "perhaps"})
        await engine.resume(op.name, "j:ask/approve", {"ok": True})  # wakes it to replay
        with anyio.fail_after(10):
            while True:
                entries = await engine.history(op.name)
                if any(e.branch == "j:ask" and e.key == "$end" for e in entries):
                    break
                await anyio.sleep(0.02)
        await engine.cancel(op.name)
