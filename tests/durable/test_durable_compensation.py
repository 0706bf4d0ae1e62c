"""Compensation: `run(rollback=)`, `rollback_checkpoint`, `RollbackError`, `rollback()`."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from stream_gateway.durable import (
    DurableContext,
    RetryPolicy,
    RollbackCheckpointError,
    RollbackError,
    RollbackFailedError,
    durable_flow,
)

from .conftest import StartEngine
from .helpers import finished, until_status

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.01, jitter=0.0)


def statuses(detail: Any) -> list[str]:
    return [a.data["status"] for a in detail.timeline if a.kind == "status"]


def booking(undone: list[str], *, catch: bool = False) -> Any:
    def undo(name: str) -> Any:
        def handler(result: Any) -> None:
            undone.append(f"{name}:{result}")

        return handler

    def decline() -> None:
        raise RollbackError("card declined")

    @durable_flow(name="booking")
    async def flow(_: None, ctx: DurableContext) -> Any:
        await ctx.run("quote", lambda: "q", rollback=undo("quote"))  # before the checkpoint
        await ctx.rollback_checkpoint("booking")
        await ctx.run("flight", lambda: "F1", rollback=undo("flight"))
        await ctx.run("hotel", lambda: "H1", rollback=undo("hotel"))
        await ctx.run("car", lambda: "C1", rollback=undo("car"))
        try:
            await ctx.run("charge", decline)
        except RollbackError:
            if not catch:
                raise
        return "booked"

    return flow


@pytest.mark.parametrize("catch", [False, True])
async def test_a_rollback_error_undoes_steps_in_reverse_and_fails(
    start: StartEngine, catch: bool
) -> None:
    undone: list[str] = []
    flow = booking(undone, catch=catch)
    async with start([flow]) as (engine, _):
        op = await finished(engine, (await engine.schedule(flow)).name)
        detail = await engine.detail(op.name)

    assert undone == ["car:C1", "hotel:H1", "flight:F1"]
    assert isinstance(op.error, RollbackError) and op.error.message == "card declined"
    assert statuses(detail)[-2:] == ["rolling_back", "failed"]
    handlers = [a.step for a in detail.timeline if a.kind == "rollback"]
    assert handlers == ["$rollback/undo:car", "$rollback/undo:hotel", "$rollback/undo:flight"]


async def test_a_manual_rollback_lets_the_flow_decide(start: StartEngine) -> None:
    undone: list[str] = []

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        await ctx.rollback_checkpoint("start")
        await ctx.run("a", lambda: 1, rollback=lambda r: undone.append(f"a{r}"))
        await ctx.run("b", lambda: 2, rollback=lambda r: undone.append(f"b{r}"))
        approved = await ctx.wait_for_signal("decision", "decision")
        if not approved:
            await ctx.rollback()
            await ctx.rollback()  # nothing left to undo
            return "refunded"
        return "kept"

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        await until_status(engine, op.name, "waiting")
    async with start([f]) as (engine, _):  # the handlers are registered again on replay
        await engine.signal(op.name, "decision", False)
        done = await finished(engine, op.name)
        detail = await engine.detail(op.name)

    assert done.response == "refunded" and done.status == "completed"
    assert undone == ["b2", "a1"]
    assert statuses(detail)[-3:] == ["rolling_back", "running", "completed"]


async def test_a_handler_is_retried_with_its_steps_policy_while_rolling_back(
    start: StartEngine,
) -> None:
    calls: list[str] = []

    def flaky_undo(result: Any) -> None:
        calls.append("b")
        if calls.count("b") == 1:
            raise ConnectionError("refund service down")

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        await ctx.rollback_checkpoint("start")
        await ctx.run("a", lambda: 1, rollback=lambda r: calls.append("a"))
        await ctx.run("b", lambda: 2, rollback=flaky_undo, retry=FAST)
        await ctx.run("c", _raise_rollback)

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
        detail = await engine.detail(op.name)

    assert calls == ["b", "b", "a"]
    assert isinstance(op.error, RollbackError)
    lines = [(a.kind, a.data.get("status")) for a in detail.timeline]
    parked = lines.index(("status", "rolling_back"), lines.index(("retry_wait", None)))
    assert parked > 0  # the retry backoff parked it as rolling_back, not sleeping
    assert ("status", "sleeping") not in lines


def _raise_rollback() -> None:
    raise RollbackError("stop")


async def test_an_exhausted_handler_fails_with_both_errors(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        await ctx.rollback_checkpoint("start")
        await ctx.run("a", lambda: 1, rollback=_broken_undo, retry=FAST)
        await ctx.run("c", _raise_rollback)

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)

    assert isinstance(op.error, RollbackFailedError)
    details = op.error.details
    assert details["reason"]["message"] == "stop"
    assert details["handler"]["details"]["attempts"] == 3


def _broken_undo(result: Any) -> None:
    raise OSError("nope")


async def test_a_rollback_without_a_checkpoint_is_a_clear_error(start: StartEngine) -> None:
    @durable_flow
    async def raised(_: None, ctx: DurableContext) -> Any:
        await ctx.run("a", lambda: 1, rollback=print)
        await ctx.run("c", _raise_rollback)

    @durable_flow
    async def manual(_: None, ctx: DurableContext) -> Any:
        await ctx.run("a", lambda: 1, rollback=print)
        await ctx.rollback()

    async with start([raised, manual]) as (engine, _):
        for flow in (raised, manual):
            op = await finished(engine, (await engine.schedule(flow)).name)
            assert isinstance(op.error, RollbackCheckpointError)
            assert "rollback_checkpoint" in op.error.message


async def test_a_handler_in_flight_at_a_restart_runs_again_the_others_never(
    start: StartEngine,
) -> None:
    runs: list[str] = []
    first_try = anyio.Event()

    async def slow_undo(result: Any) -> None:
        runs.append("b")
        if runs.count("b") == 1:
            first_try.set()
            await anyio.sleep_forever()  # the worker stops under it

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        await ctx.rollback_checkpoint("start")
        await ctx.run("a", lambda: 1, rollback=lambda r: runs.append("a"))
        await ctx.run("b", lambda: 2, rollback=slow_undo)
        await ctx.run("c", lambda: 3, rollback=lambda r: runs.append("c"))
        await ctx.run("d", _raise_rollback)

    async with start([f], grace=0.05) as (engine, _):
        op = await engine.schedule(f)
        with anyio.fail_after(10):
            await first_try.wait()
        assert (await engine.get_state(op.name)).status == "rolling_back"
    async with start([f]) as (engine, _):
        done = await finished(engine, op.name)

    assert isinstance(done.error, RollbackError)
    assert runs == ["c", "b", "b", "a"]
