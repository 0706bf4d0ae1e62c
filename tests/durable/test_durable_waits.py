"""Interrupts, sleeps, polls, waits for other flows, scheduling, cancel and cleanup."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from pydantic import BaseModel

from stream_gateway import DeadlineExceededError, InvalidArgumentError
from stream_gateway.durable import (
    DurableContext,
    ExecutionNotFoundError,
    NotFinishedError,
    NotWaitingError,
    durable_flow,
)

from .conftest import StartEngine
from .helpers import finished, until_status

pytestmark = pytest.mark.anyio


class Approval(BaseModel):
    approved: bool
    by: str


@durable_flow(input=str, output=str)
async def approval(item: str, ctx: DurableContext) -> str:
    answer: Approval = await ctx.interrupt("approve", Approval)
    return f"{item}: {'yes' if answer.approved else 'no'} by {answer.by}"


async def test_interrupt_and_resume_across_a_restart(start: StartEngine) -> None:
    async with start([approval]) as (engine, _):
        op = await engine.schedule(approval, "laptop")
        waiting = await until_status(engine, op.name, "waiting")
        assert waiting.blocked_on_step == "approve" and not waiting.done
    async with start([approval]) as (engine, _):
        resumed = await engine.resume(op.name, "approve", {"approved": True, "by": "ann"})
        assert resumed.status in ("pending", "running", "completed")
        done = await finished(engine, op.name)
    assert done.response == "laptop: yes by ann"
    assert done.to_json()["result"] == {"response": "laptop: yes by ann"}


async def test_bad_resumes(start: StartEngine) -> None:
    async with start([approval]) as (engine, _):
        op = await engine.schedule(approval, "car")
        await until_status(engine, op.name, "waiting")
        with pytest.raises(InvalidArgumentError) as bad:
            await engine.resume(op.name, "approve", {"approved": "maybe"})
        assert bad.value.status == "INVALID_ARGUMENT"
        assert {e["loc"][0] for e in bad.value.details} == {"approved", "by"}
        with pytest.raises(ExecutionNotFoundError):
            await engine.resume("A" * 22, "approve", {})
        with pytest.raises(InvalidArgumentError):
            await engine.resume("../../etc", "approve", {})
        await engine.resume(op.name, "approve", {"approved": False, "by": "bo"})
        with pytest.raises(NotWaitingError):  # resumed already
            await engine.resume(op.name, "approve", {"approved": True, "by": "bo"})
        assert (await finished(engine, op.name)).response == "car: no by bo"
        with pytest.raises(NotWaitingError):  # finished
            await engine.resume(op.name, "approve", {"approved": True, "by": "bo"})


async def test_sleep_survives_a_restart(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> float:
        before = await ctx.now()
        await ctx.sleep("nap", timedelta(seconds=0.4))
        after = await ctx.now()
        return (after - before).total_seconds()

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        sleeping = await until_status(engine, op.name, "sleeping")
        assert sleeping.blocked_on_step == "nap" and sleeping.wake_at is not None
    async with start([f]) as (engine, _):
        done = await finished(engine, op.name)
    assert done.response >= 0.4


async def test_sleep_until(start: StartEngine) -> None:
    target = datetime.now(UTC) + timedelta(seconds=0.2)

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> str:
        await ctx.sleep_until("alarm", target)
        return (await ctx.now()).isoformat()

    async with start([f]) as (engine, _):
        done = await finished(engine, (await engine.schedule(f)).name)
    assert datetime.fromisoformat(done.response) >= target


async def test_poll_until_true_across_a_restart(start: StartEngine) -> None:
    checks: list[float] = []

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> str:
        def ready() -> str | None:
            checks.append(time.time())
            # By count, not by clock: a loaded machine must not skip the sleeping.
            return "ready" if len(checks) >= 3 else None

        result: str = await ctx.poll("ready", ready, period=0.05, timeout=10)
        return result

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        await until_status(engine, op.name, "sleeping")
    async with start([f]) as (engine, _):
        done = await finished(engine, op.name)
        [entry] = await engine.history(op.name)
    assert done.response == "ready"
    # A check interrupted by the first worker's shutdown ran (on its thread) but was
    # not counted: it runs again, at-least-once like any step.
    assert entry.status == "completed" and 2 <= entry.attempts <= len(checks)


async def test_poll_times_out(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> None:
        await ctx.poll("never", lambda: False, period=0.02, timeout=0.1)

    async with start([f]) as (engine, _):
        done = await finished(engine, (await engine.schedule(f)).name)
    assert isinstance(done.error, DeadlineExceededError)


async def test_wait_for_other_flows(start: StartEngine) -> None:
    @durable_flow(input=int, output=int)
    async def worker(n: int, ctx: DurableContext) -> int:
        await ctx.sleep("work", 0.05 * n)
        return n * 100

    @durable_flow(input=list[str])
    async def boss(ids: list[str], ctx: DurableContext) -> list[object]:
        ops = await ctx.wait_for("all", ids)
        return [(op.name, op.response) for op in ops]

    async with start([worker, boss]) as (engine, _):
        ids = [(await engine.schedule(worker, n)).name for n in (3, 1)]
        op = await engine.schedule(boss, ids)
        waiting = await until_status(engine, op.name, "waiting")
        assert waiting.blocked_on_step == "all"
    async with start([worker, boss]) as (engine, _):
        done = await finished(engine, op.name)
        with_unknown = await finished(engine, (await engine.schedule(boss, ["B" * 22])).name)
    assert done.response == [[ids[0], 300], [ids[1], 100]]
    assert isinstance(with_unknown.error, ExecutionNotFoundError)


async def test_schedule_is_never_done_on_return_and_honours_delay(start: StartEngine) -> None:
    @durable_flow
    async def quick(_: None, ctx: DurableContext) -> int:
        return 1

    async with start([quick]) as (engine, _):
        now = await engine.schedule(quick)
        later = await engine.schedule(quick, delay=0.5)
        at = await engine.schedule(quick, at=datetime.now(UTC) + timedelta(seconds=0.3))
        assert not (now.done or later.done or at.done) and now.status == "pending"
        await finished(engine, now.name)
        assert (await engine.get_state(later.name)).status == "pending"
        assert (await finished(engine, later.name)).response == 1
        assert (await finished(engine, at.name)).response == 1
        with pytest.raises(InvalidArgumentError):
            await engine.schedule(quick, delay=1, at=time.time())


async def test_idempotency_key_returns_the_existing_execution(start: StartEngine) -> None:
    runs: list[int] = []

    @durable_flow
    async def once(_: None, ctx: DurableContext) -> None:
        await ctx.run("effect", lambda: runs.append(1))

    async with start([once]) as (engine, _):
        a = await engine.schedule(once, idempotency_key="order-1", owner="u1")
        b = await engine.schedule(once, idempotency_key="order-1", owner="u1")
        c = await engine.schedule(once, idempotency_key="order-1", owner="u2")
        assert a.name == b.name != c.name
        await finished(engine, a.name)
        await finished(engine, c.name)
        again = await engine.schedule(once, idempotency_key="order-1", owner="u1")
    assert again.name == a.name and again.done
    assert runs == [1, 1]


async def test_cancel_sleeping_and_waiting_flows(start: StartEngine) -> None:
    fired: list[str] = []

    @durable_flow
    async def sleeper(_: None, ctx: DurableContext) -> None:
        await ctx.sleep("long", 0.3)
        fired.append("sleeper")

    async with start([sleeper, approval]) as (engine, _):
        s = await engine.schedule(sleeper)
        w = await engine.schedule(approval, "x")
        await until_status(engine, s.name, "sleeping")
        await until_status(engine, w.name, "waiting")
        cancelled = await engine.cancel(s.name)
        assert cancelled.status == "cancelled" and cancelled.done
        assert cancelled.to_json()["result"]["error"]["status"] == "CANCELLED"
        assert (await engine.cancel(w.name)).status == "cancelled"
        with pytest.raises(NotWaitingError):
            await engine.resume(w.name, "approve", {"approved": True, "by": "x"})
        await anyio.sleep(0.6)  # well past the sleeper's timer
        assert (await engine.get_state(s.name)).status == "cancelled"
        assert (await engine.cancel(s.name)).status == "cancelled"  # idempotent
    assert fired == []


async def test_cancel_interrupts_a_running_step(start: StartEngine) -> None:
    entered = anyio.Event()

    @durable_flow
    async def slow(_: None, ctx: DurableContext) -> None:
        async def work() -> None:
            entered.set()
            await anyio.sleep(30)

        await ctx.run("work", work)

    async with start([slow]) as (engine, worker):
        op = await engine.schedule(slow)
        with anyio.fail_after(10):
            await entered.wait()
        assert (await engine.cancel(op.name)).status == "cancelled"
        with anyio.fail_after(10):
            while worker.running:  # noqa: ASYNC110 - polling a counter
                await anyio.sleep(0.01)
        assert (await engine.get_state(op.name)).status == "cancelled"


async def test_list_filters_and_pages(start: StartEngine) -> None:
    @durable_flow
    async def a(_: None, ctx: DurableContext) -> None:
        await ctx.interrupt("hold")

    @durable_flow
    async def b(_: None, ctx: DurableContext) -> None:
        return None

    async with start([a, b]) as (engine, _):
        ids_a = [(await engine.schedule(a, owner="me")).name for _ in range(5)]
        id_b = (await engine.schedule(b, owner="me")).name
        await engine.schedule(a, owner="someone else")
        await finished(engine, id_b)
        for flow_id in ids_a:
            await until_status(engine, flow_id, "waiting")
        seen: list[str] = []
        cursor = None
        while True:
            page = await engine.list(flow="a", owner="me", any_owner=False, cursor=cursor, limit=2)
            seen += [op.name for op in page.items]
            cursor = page.cursor
            if cursor is None:
                break
        assert seen == ids_a[::-1]  # newest first, every one exactly once
        completed = await engine.list(status="completed", owner="me", any_owner=False)
        assert [op.name for op in completed.items] == [id_b]
        assert len((await engine.list()).items) == 7
        for bad in ({"status": "bogus"}, {"cursor": "x1"}, {"limit": 0}):
            with pytest.raises(InvalidArgumentError):
                await engine.list(**bad)


async def test_cleanup_deletes_finished_state_only(start: StartEngine) -> None:
    async with start([approval]) as (engine, _):
        op = await engine.schedule(approval, "x")
        await until_status(engine, op.name, "waiting")
        with pytest.raises(NotFinishedError):
            await engine.cleanup(op.name)
        await engine.cancel(op.name)
        await engine.cleanup(op.name)
        with pytest.raises(ExecutionNotFoundError) as gone:
            await engine.get_state(op.name)
        assert gone.value.status == "NOT_FOUND"
        with pytest.raises(ExecutionNotFoundError):
            await engine.cleanup(op.name)
        with pytest.raises(ExecutionNotFoundError):
            await engine.cancel(op.name)
