"""`run`, `run_action`, deterministic values, limits and divergence, with restarts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from uuid import UUID

import pytest
from pydantic import BaseModel

from stream_gateway import Flow, InternalError, flow
from stream_gateway.durable import (
    CriticalError,
    DurableContext,
    HistoryDivergedError,
    RetryPolicy,
    StepExhaustedError,
    StepResultTooLargeError,
    durable_flow,
)

from .conftest import StartEngine
from .helpers import finished, until_status

pytestmark = pytest.mark.anyio


async def test_completed_steps_never_run_again_across_a_restart(start: StartEngine) -> None:
    calls: list[str] = []

    @durable_flow(input=int, output=int)
    async def f(n: int, ctx: DurableContext) -> int:
        def step_a() -> int:
            calls.append("a")
            return n + 1

        a: int = await ctx.run("a", step_a)
        await ctx.interrupt("go")

        def step_b() -> int:
            calls.append("b")
            return a * 10

        b: int = await ctx.run("b", step_b)
        return b

    async with start([f]) as (engine, _):
        op = await engine.schedule(f, 1)
        await until_status(engine, op.name, "waiting")
    async with start([f]) as (engine, _):  # a new process on the same store
        await engine.resume(op.name, "go", None)
        done = await finished(engine, op.name)
    assert done.response == 20
    assert calls == ["a", "b"]


async def test_repeated_names_get_suffixes(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> list[int]:
        def const(i: int) -> Callable[[], int]:
            return lambda: i

        return [await ctx.run("x", const(i)) for i in range(3)]

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
        entries = await engine.history(op.name)
    assert op.response == [0, 1, 2]
    assert [e.key for e in entries] == ["x", "x-1", "x-2"]


async def test_results_come_back_as_json_and_typed_with_output(start: StartEngine) -> None:
    class Point(BaseModel):
        x: int

    seen: list[object] = []

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> int:
        p = await ctx.run("p", lambda: Point(x=3), output=Point)
        raw: dict[str, int] = await ctx.run("raw", lambda: Point(x=4))  # JSON, not a Point
        seen.extend([p, raw])
        await ctx.wait_for_signal("go", "go")  # parks: the signal's arrival replays
        return p.x + raw["x"]

    async with start([f]) as (engine, _):
        started = await engine.schedule(f)
        await until_status(engine, started.name, "waiting")
        await engine.signal(started.name, "go")
        op = await finished(engine, started.name)
    assert op.response == 7
    assert seen[0] == Point(x=3) and seen[1] == {"x": 4}
    assert seen[:2] == seen[2:]  # the same on the first run and on replay


async def test_retries_with_durable_backoff_then_success(start: StartEngine) -> None:
    attempts: list[int] = []

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> str:
        def flaky() -> str:
            attempts.append(1)
            if len(attempts) < 3:
                raise RuntimeError("not yet")
            return "ok"

        result: str = await ctx.run(
            "flaky", flaky, retry=RetryPolicy(max_attempts=3, backoff_base=0.3)
        )
        return result

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        sleeping = await until_status(engine, op.name, "sleeping")
        assert sleeping.blocked_on_step == "flaky"
        [entry] = await engine.history(op.name)
        assert (entry.status, entry.attempts) == ("retrying", 1)
    async with start([f]) as (engine, _):  # the backoff timer survives a restart
        op = await finished(engine, op.name)
        [entry] = await engine.history(op.name)
    assert op.response == "ok" and len(attempts) == 3
    assert (entry.status, entry.attempts) == ("completed", 3)


async def test_exhausted_retries_carry_the_cause(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> None:
        def boom() -> None:
            raise ValueError("secret detail")

        await ctx.run("boom", boom, retry=RetryPolicy(max_attempts=2, backoff_base=0.01))

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
    assert isinstance(op.error, StepExhaustedError)
    assert op.status == "failed"
    assert op.error.details == {
        "step": "boom",
        "attempts": 2,
        "cause": {"status": "INTERNAL", "message": "Internal Error"},
    }


async def test_critical_error_is_not_retried_and_can_be_caught(start: StartEngine) -> None:
    attempts: list[int] = []

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> str:
        def declined() -> None:
            attempts.append(1)
            raise CriticalError("card declined", details={"code": 51})

        try:
            await ctx.run("charge", declined)
        except CriticalError as exc:
            await ctx.sleep("nap", 0.01)  # replayed: the stored error is raised again
            return f"{exc.message} {exc.details}"
        return "unreachable"

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
    assert op.response == "card declined {'code': 51}"
    assert attempts == [1]


async def test_step_timeout_counts_as_a_failed_attempt(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> None:
        async def slow() -> None:
            import anyio

            await anyio.sleep(10)

        await ctx.run("slow", slow, retry=RetryPolicy(max_attempts=1, timeout=0.05))

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
    assert isinstance(op.error, StepExhaustedError)
    assert op.error.details["cause"]["status"] == "DEADLINE_EXCEEDED"


async def test_run_action_runs_a_flow_with_its_schemas(start: StartEngine) -> None:
    calls: list[int] = []

    @flow(input=int, output=int)
    async def square(n: int, ctx: object) -> int:
        calls.append(n)
        return n * n

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> object:
        value = await ctx.run_action(square, 7)
        await ctx.sleep("nap", 0.01)
        try:
            await ctx.run_action(square, "not a number")
        except Exception as exc:
            return [value, type(exc).__name__]
        return None

    assert isinstance(square, Flow)
    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
        keys = [e.key for e in await engine.history(op.name)]
    assert op.response == [49, "InvalidArgumentError"]
    assert calls == [7] and keys == ["square", "nap"]


async def test_run_action_of_a_durable_flow_is_a_child_execution(start: StartEngine) -> None:
    @durable_flow(input=int, output=int)
    async def child(n: int, ctx: DurableContext) -> int:
        await ctx.sleep("nap", 0.05)
        return n + 1

    @durable_flow(output=list[int])
    async def parent(_: None, ctx: DurableContext) -> list[int]:
        a = await ctx.run_action(child, 1)
        b = await ctx.run_action(child, 10)
        return [a, b]

    async with start([child, parent]) as (engine, _):
        op = await engine.schedule(parent)
        waiting = await until_status(engine, op.name, "waiting")
        # The first child, or the second if a slow poll missed the first wait.
        assert waiting.blocked_on_step in ("child", "child-1")
    async with start([child, parent]) as (engine, _):
        op = await finished(engine, op.name)
        page = await engine.list(flow="child")
    assert op.response == [2, 11]
    assert len(page.items) == 2 and all(c.status == "completed" for c in page.items)


async def test_now_random_uuid_are_recorded(start: StartEngine) -> None:
    seen: list[tuple[datetime, float, UUID]] = []

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> None:
        seen.append((await ctx.now(), await ctx.random(), await ctx.uuid()))
        await ctx.interrupt("go")

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        await until_status(engine, op.name, "waiting")
    async with start([f]) as (engine, _):
        await engine.resume(op.name, "go", 1)
        await finished(engine, op.name)
    assert len(seen) >= 2 and all(s == seen[0] for s in seen)
    now, rnd, uid = seen[0]
    assert now.tzinfo is not None and 0 <= rnd < 1 and uid.version == 4


async def test_result_size_limit(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> None:
        await ctx.run("big", lambda: "x" * 5000)

    async with start([f]) as (engine, _):
        engine.max_result_bytes = 1000
        op = await finished(engine, (await engine.schedule(f)).name)
    assert isinstance(op.error, StepResultTooLargeError)
    assert op.error.status == "RESOURCE_EXHAUSTED"
    assert op.error.details == {"step": "big", "size": 5002, "limit": 1000}


async def test_changed_code_fails_with_history_diverged(start: StartEngine) -> None:
    @durable_flow(name="evolving")
    async def v1(_: None, ctx: DurableContext) -> None:
        await ctx.run("fetch", lambda: 1)
        await ctx.interrupt("approve")

    @durable_flow(name="evolving")
    async def v2(_: None, ctx: DurableContext) -> None:
        try:
            await ctx.run("download", lambda: 1)  # renamed step: the journal says "fetch"
        except Exception:
            pass  # swallowing it must not help
        await ctx.interrupt("approve")

    async with start([v1]) as (engine, _):
        op = await engine.schedule(v1)
        await until_status(engine, op.name, "waiting")
    async with start([v2]) as (engine, _):
        await engine.resume(op.name, "approve", True)
        op = await finished(engine, op.name)
    assert isinstance(op.error, HistoryDivergedError)
    assert op.error.status == "FAILED_PRECONDITION"
    assert "'download'" in op.error.message and "'fetch'" in op.error.message


async def test_removed_steps_fail_with_history_diverged(start: StartEngine) -> None:
    @durable_flow(name="shrinking")
    async def v1(_: None, ctx: DurableContext) -> None:
        await ctx.run("a", lambda: 1)
        await ctx.run("b", lambda: 2)
        await ctx.interrupt("go")

    @durable_flow(name="shrinking")
    async def v2(_: None, ctx: DurableContext) -> int:
        return 1

    async with start([v1]) as (engine, _):
        op = await engine.schedule(v1)
        await until_status(engine, op.name, "waiting")
    async with start([v2]) as (engine, _):
        await engine.resume(op.name, "go", 1)
        op = await finished(engine, op.name)
    assert isinstance(op.error, HistoryDivergedError)
    assert "'a'" in op.error.message


async def test_a_bug_in_flow_code_fails_as_internal(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> None:
        raise KeyError("internal detail")

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
    assert isinstance(op.error, InternalError)
    assert op.to_json()["result"] == {"error": {"status": "INTERNAL", "message": "Internal Error"}}
