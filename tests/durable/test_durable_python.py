"""Ordinary Python in durable flows: each habit works or fails with an error naming
what to do instead, and nothing a flow does takes the worker down.

Each test here reproduces a defect of the first engine (list-indexed journal, sync
steps on the event loop, ...), so it fails on that code.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from stream_gateway import DeadlineExceededError, InvalidArgumentError, NotFoundError
from stream_gateway.durable import (
    CriticalError,
    DurableContext,
    DurableEngine,
    DurableStoreError,
    InMemoryDurableStore,
    RetryPolicy,
    StepExhaustedError,
    durable_flow,
)
from stream_gateway.durable.records import JournalEntry, Lease

from .conftest import StartEngine
from .helpers import finished, until_status

pytestmark = pytest.mark.anyio


async def test_gather_of_steps_finishing_out_of_order_replays(start: StartEngine) -> None:
    calls: list[str] = []
    gate = anyio.Event()

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> list[Any]:
        async def slow() -> str:
            await gate.wait()  # not before the worker restarts
            calls.append("slow")
            return "s"

        async def fast() -> str:
            calls.append("fast")
            return "f"

        results = await asyncio.gather(ctx.run("slow", slow), ctx.run("fast", fast))
        more = await asyncio.gather(*(ctx.run("n", functools.partial(int, i)) for i in range(3)))
        return [*results, *more]

    async with start([f], grace=0.01) as (engine, _):
        op = await engine.schedule(f)
        with anyio.fail_after(10):
            while True:
                if any(e.key == "fast" for e in await engine.history(op.name)):
                    break
                await anyio.sleep(0.01)
    # "fast" is journaled, "slow" is not: a gap before it. A new worker replays.
    gate.set()
    async with start([f]) as (engine, _):
        done = await finished(engine, op.name)
    assert done.status == "completed", done.to_json()
    assert done.response == ["s", "f", 0, 1, 2]
    assert calls == ["fast", "slow"]


async def test_task_group_whose_branch_sleeps_does_not_kill_the_worker(
    start: StartEngine,
) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> str:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(ctx.sleep("nap", 0.05))
            tg.create_task(ctx.run("work", lambda: 1))
        return "woke"

    @durable_flow
    async def after(_: None, ctx: DurableContext) -> int:
        one: int = await ctx.run("one", lambda: 1)
        return one

    async with start([f, after]) as (engine, _):
        op = await engine.schedule(f)
        assert (await finished(engine, op.name)).response == "woke"
        # The worker is still alive: another flow runs.
        assert (await finished(engine, (await engine.schedule(after)).name)).response == 1


async def test_a_flow_raising_anything_fails_only_its_execution(start: StartEngine) -> None:
    @durable_flow
    async def group(_: None, ctx: DurableContext) -> None:
        raise BaseExceptionGroup("mixed", [ValueError("a"), KeyboardInterrupt()])

    @durable_flow
    async def exits(_: None, ctx: DurableContext) -> None:
        sys.exit(3)

    @durable_flow
    async def cancels(_: None, ctx: DurableContext) -> None:
        raise asyncio.CancelledError()

    @durable_flow
    async def fine(_: None, ctx: DurableContext) -> int:
        return 1

    async with start([group, exits, cancels, fine]) as (engine, _):
        for flow in (group, exits, cancels):
            op = await finished(engine, (await engine.schedule(flow)).name)
            assert op.status == "failed" and op.error is not None
            assert op.error.status == "INTERNAL"
        assert (await finished(engine, (await engine.schedule(fine)).name)).response == 1


async def test_sync_steps_run_on_a_thread_with_a_real_timeout(start: StartEngine) -> None:
    release, never = threading.Event(), threading.Event()
    seen: list[str] = []

    def blocking() -> str:
        # Set by the event loop: it would deadlock if this ran on the loop.
        if not release.wait(5):
            return "loop was blocked"
        seen.append("ran")
        return "ok"

    def stuck() -> str:
        never.wait(5)
        return "late"

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> str:
        value: str = await ctx.run("blocking", blocking)
        try:
            await ctx.run("stuck", stuck, retry=None, timeout=0.05)
        except StepExhaustedError as exc:
            return f"{value} then {exc.details['cause']['status']}"
        return value

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        await anyio.sleep(0.05)
        release.set()
        done = await finished(engine, op.name)
    never.set()
    assert done.response == "ok then DEADLINE_EXCEEDED", done.to_json()


async def test_a_sync_step_longer_than_the_lease_runs_once(new_store: Any) -> None:
    calls: list[float] = []

    def long_step() -> int:
        calls.append(time.time())
        time.sleep(1.5)
        return 1

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> int:
        one: int = await ctx.run("long", long_step)
        return one

    store = new_store()
    engine = DurableEngine([f], store=store)
    options: dict[str, Any] = {"poll_interval": 0.02, "lease": 0.6, "grace": 0.1}
    async with engine, engine.worker(**options), engine.worker(**options):
        op = await engine.schedule(f)
        done = await finished(engine, op.name)
    assert done.response == 1
    assert len(calls) == 1


async def test_invalid_step_output_fails_at_once_without_repeating_the_side_effect(
    start: StartEngine,
) -> None:
    effects: list[int] = []

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> None:
        def send() -> str:
            effects.append(1)
            return "not a number"

        await ctx.run("send", send, output=int)

    @durable_flow
    async def unencodable(_: None, ctx: DurableContext) -> None:
        def make() -> object:
            effects.append(2)
            return object()

        await ctx.run("make", make)

    async with start([f, unencodable]) as (engine, _):
        for flow in (f, unencodable):
            op = await finished(engine, (await engine.schedule(flow)).name)
            assert op.status == "failed" and op.error is not None
            assert op.error.status == "FAILED_PRECONDITION", op.to_json()
    assert effects == [1, 2]


async def test_a_resume_that_arrives_early_is_kept(start: StartEngine) -> None:
    gate = anyio.Event()

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        await ctx.run("prepare", gate.wait)
        return await ctx.interrupt("approve")

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        await until_status(engine, op.name, "running")
        await engine.resume(op.name, "approve", {"ok": True})  # before the flow parks
        gate.set()
        done = await finished(engine, op.name)
    assert done.response == {"ok": True}


async def test_wait_for_respects_ownership(start: StartEngine) -> None:
    @durable_flow
    async def target(_: None, ctx: DurableContext) -> str:
        return "secret"

    @durable_flow(input=str)
    async def spy(flow_id: str, ctx: DurableContext) -> Any:
        ops = await ctx.wait_for("peek", [flow_id])
        return ops[0].response

    async with start([target, spy]) as (engine, _):
        theirs = await engine.schedule(target, owner="alice")
        await finished(engine, theirs.name)
        op = await finished(engine, (await engine.schedule(spy, theirs.name, owner="mallory")).name)
    assert op.status == "failed" and isinstance(op.error, NotFoundError)


async def test_cancel_cascades_to_child_executions(start: StartEngine) -> None:
    @durable_flow
    async def child(_: None, ctx: DurableContext) -> None:
        await ctx.sleep("forever", 3600)

    @durable_flow
    async def parent(_: None, ctx: DurableContext) -> None:
        await ctx.run_action(child)

    async with start([parent, child]) as (engine, _):
        op = await engine.schedule(parent)
        await until_status(engine, op.name, "waiting")
        [kid] = (await engine.list(flow="child")).items
        await until_status(engine, kid.name, "sleeping")
        await engine.cancel(op.name)
        assert (await engine.get_state(kid.name)).status == "cancelled"


async def test_run_action_of_a_durable_flow_honours_retry(start: StartEngine) -> None:
    attempts: list[int] = []

    @durable_flow
    async def flaky(_: None, ctx: DurableContext) -> str:
        def once() -> str:
            attempts.append(1)
            if len(attempts) == 1:
                raise CriticalError("first time")
            return "ok"

        done: str = await ctx.run("try", once, retry=None)
        return done

    @durable_flow
    async def parent(_: None, ctx: DurableContext) -> Any:
        return await ctx.run_action(
            flaky, retry=RetryPolicy(max_attempts=2, backoff_base=0.01, jitter=0)
        )

    async with start([parent, flaky]) as (engine, _):
        done = await finished(engine, (await engine.schedule(parent)).name)
    assert done.response == "ok", done.to_json()
    assert len(attempts) == 2


async def test_a_forgotten_await_fails_with_a_clear_error(start: StartEngine) -> None:
    ran: list[int] = []

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> int:
        ctx.run("charge", lambda: ran.append(1))  # type: ignore[unused-coroutine]  # no await
        return 1

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
    assert op.status == "failed" and op.error is not None
    assert "never awaited" in op.error.message and "charge" in op.error.message
    assert ran == []


async def test_a_wait_inside_a_step_body_names_the_mistake(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> None:
        async def body() -> None:
            await ctx.sleep("inner", 1)

        await ctx.run("outer", body)

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
    assert op.status == "failed" and op.error is not None
    assert op.error.status == "FAILED_PRECONDITION"
    assert "inside the body of step 'outer'" in op.error.message


async def test_a_users_own_timeout_error_is_not_a_step_timeout(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> None:
        def call_api() -> None:
            raise TimeoutError("the API timed out")

        await ctx.run("api", call_api, retry=RetryPolicy(max_attempts=1))

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
        history = await engine.history(op.name)
    assert isinstance(op.error, StepExhaustedError)
    assert "None" not in str(op.error.details)
    assert op.error.details["cause"]["status"] == "INTERNAL"
    # Operators still see what happened.
    [entry] = history
    assert entry.error is not None
    assert entry.error["operator"]["cause"] == {
        "type": "TimeoutError",
        "message": "the API timed out",
    }


async def test_naive_datetimes_and_negative_delays_are_refused(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> None:
        await ctx.sleep("back", -5)

    @durable_flow
    async def g(_: None, ctx: DurableContext) -> None:
        await ctx.sleep_until("then", datetime(2030, 1, 1))

    async with start([f, g]) as (engine, _):
        for bad in (
            {"delay": -1},
            {"delay": float("nan")},
            {"delay": 1e12},
            {"at": datetime(2030, 1, 1)},
            {"delay": timedelta(seconds=-1)},
        ):
            with pytest.raises(InvalidArgumentError):
                await engine.schedule(f, **bad)
        assert (await engine.list()).items == []  # nothing stored
        for flow in (f, g):
            op = await finished(engine, (await engine.schedule(flow)).name)
            assert op.error is not None and op.error.status == "INVALID_ARGUMENT", op.to_json()


class _FlakyStore(InMemoryDurableStore):
    """Fails the first ``failures`` journal writes as a busy database would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def append(
        self,
        lease: Lease,
        entry: JournalEntry,
        now: float,
        *,
        consume: Any = (),
        audit: Any = (),
        preceding: Any = (),
    ) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise DurableStoreError("database is locked (internal path /var/db)")
        await super().append(lease, entry, now, consume=consume, audit=audit, preceding=preceding)


async def test_a_transient_store_error_replays_later_instead_of_failing() -> None:
    effects: list[int] = []

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> int:
        def one() -> int:
            effects.append(1)
            return 1

        result: int = await ctx.run("one", one)
        return result

    store = _FlakyStore(failures=2)
    engine = DurableEngine([f], store=store, poll_interval=0.02)
    async with engine, engine.worker(poll_interval=0.02):
        with anyio.fail_after(20):
            done = await engine.wait((await engine.schedule(f)).name)
    assert done.status == "completed" and done.response == 1
    assert len(effects) == 3  # the step ran again: its result was never stored


async def test_step_timeouts_still_say_how_long(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> None:
        await ctx.run(
            "slow", lambda: anyio.sleep(5), retry=RetryPolicy(max_attempts=1, timeout=0.05)
        )

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
    assert isinstance(op.error, StepExhaustedError)
    cause = op.error.details["cause"]
    assert cause["status"] == DeadlineExceededError.status and "0.05s" in cause["message"]


async def test_helper_tasks_repeating_a_step_name_are_told_to_use_join(
    start: StartEngine,
) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        async def helper(i: int) -> int:
            await anyio.lowlevel.checkpoint()
            value: int = await ctx.run("fetch", functools.partial(int, i))
            return value

        return await asyncio.gather(helper(1), helper(2))

    @durable_flow
    async def g(_: None, ctx: DurableContext) -> Any:
        async def helper(i: int) -> int:
            value: int = await ctx.run(f"fetch-{i}", functools.partial(int, i))
            return value

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(helper, i)
        return "ok"

    async with start([f, g]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
        assert op.status == "failed" and op.error is not None
        assert "ctx.join" in op.error.message and op.error.status == "FAILED_PRECONDITION"
        assert (await finished(engine, (await engine.schedule(g)).name)).response == "ok"


async def test_finally_and_bare_except_around_a_suspension(start: StartEngine) -> None:
    cleanups: list[str] = []

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        try:
            await ctx.sleep("nap", 0.05)
        finally:
            await ctx.run("cleanup", lambda: cleanups.append("done"))
        try:
            await ctx.sleep("second", 0.05)
        except BaseException:  # swallows the suspension: the branch stays sealed anyway
            pass
        return await ctx.run("after", lambda: "after")

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
        kinds = [(e.key, e.status) for e in await engine.history(op.name)]
    assert op.response == "after", op.to_json()
    assert cleanups == ["done"]  # not run during the suspension, once afterwards
    assert ("after", "completed") in kinds


async def test_gather_of_sleeps_takes_turns_and_completes(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> str:
        await asyncio.gather(ctx.sleep("a", 0.02), ctx.sleep("b", 0.02), ctx.sleep("c", 0.02))
        return "rested"

    async with start([f]) as (engine, _):
        assert (await finished(engine, (await engine.schedule(f)).name)).response == "rested"


async def test_a_sleep_past_the_year_9999_parks_until_then(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> None:
        await ctx.sleep("forever", 2.53e11)  # now + that is past 9999-12-31

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        slept = await until_status(engine, op.name, "sleeping")
        assert slept.to_json()["wakeAt"].startswith("9999-12-31")
        assert len((await engine.list()).items) == 1  # listing still works
