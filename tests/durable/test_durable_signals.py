"""Signals and messages, and the engine's `schedule(id=)`, `recover` and `wake`."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from stream_gateway import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError
from stream_gateway.durable import (
    CriticalError,
    DurableContext,
    NotWaitingError,
    SignalTimeoutError,
    durable_flow,
)

from .conftest import StartEngine
from .helpers import finished, until_status

pytestmark = pytest.mark.anyio


class Order(BaseModel):
    sku: str


async def test_signals_are_buffered_fifo_and_consumed_once(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        first = await ctx.wait_for_signal("first", "order", schema=Order)
        second = await ctx.wait_for_signal("second", "order", schema=Order)
        return [first.sku, second.sku]

    async with start([f]) as (engine, _):
        op = await engine.schedule(f, delay=3600)  # not started yet: signals wait for it
        await engine.signal(op.name, "order", {"sku": "a"})
        await engine.signal(op.name, "order", {"sku": "b"})
        await engine.signal(op.name, "order", {"sku": "c"})
        await engine.wake(op.name)
        done = await finished(engine, op.name)
        left = (await engine.store.history(op.name)).signals
    assert done.response == ["a", "b"]
    assert [s.payload for s in left] == ['{"sku":"c"}']


async def test_a_signal_wait_survives_a_restart(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        return await ctx.wait_for_signal("go", "go")

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        waiting = await until_status(engine, op.name, "waiting")
        assert waiting.blocked_on_step == "go"
    async with start([f]) as (engine, _):
        await engine.signal(op.name, "go", [1, 2])
        assert (await finished(engine, op.name)).response == [1, 2]
        with pytest.raises(NotWaitingError):
            await engine.signal(op.name, "go", 3)  # finished


async def test_signal_timeouts_and_bad_payloads(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        out: list[str] = []
        try:
            await ctx.wait_for_signal("quick", "never", timeout=0.05)
        except SignalTimeoutError as exc:
            out.append(exc.status)
        try:
            await ctx.wait_for_signal("typed", "order", schema=Order)
        except InvalidArgumentError as exc:
            out.append(exc.status)
        return out

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        await engine.signal(op.name, "order", {"sku": 5})
        done = await finished(engine, op.name)
        for bad in ("", "$resume:x", "x" * 257):
            with pytest.raises(InvalidArgumentError):
                await engine.signal(op.name, bad, 1)
    assert done.response == ["DEADLINE_EXCEEDED", "INVALID_ARGUMENT"], done.to_json()


async def test_messages_take_up_to_count_or_nothing_on_timeout(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        batch = await ctx.messages("batch", ["a", "b"], count=3)
        empty = await ctx.messages("none", ["zzz"], timeout=0.02)
        return [[m.name, m.payload] for m in batch] + [len(empty)]

    async with start([f]) as (engine, _):
        op = await engine.schedule(f, delay=3600)
        for name, payload in [("a", 1), ("x", 0), ("b", 2), ("a", 3), ("b", 4)]:
            await engine.signal(op.name, name, payload)
        await engine.wake(op.name)
        done = await finished(engine, op.name)
    assert done.response == [["a", 1], ["b", 2], ["a", 3], 0]


async def test_schedule_with_a_chosen_id(start: StartEngine) -> None:
    @durable_flow
    async def f(n: Any, ctx: DurableContext) -> Any:
        return n

    @durable_flow
    async def g(n: Any, ctx: DurableContext) -> Any:
        return n

    async with start([f, g]) as (engine, _):
        op = await engine.schedule(f, 1, id="order-123")
        assert op.name == "order-123"
        assert (await engine.schedule(f, 2, id="order-123")).name == "order-123"  # same one
        assert (await finished(engine, "order-123")).response == 1
        with pytest.raises(AlreadyExistsError):
            await engine.schedule(g, 1, id="order-123")
        with pytest.raises(AlreadyExistsError):
            await engine.schedule(f, 1, id="order-123", owner="someone-else")
        for bad in ("", "a/b", "x" * 129, "über"):
            with pytest.raises(InvalidArgumentError):
                await engine.schedule(f, 1, id=bad)


async def test_recover_runs_a_failed_execution_from_its_failed_step(start: StartEngine) -> None:
    broken = True
    calls: list[str] = []

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        def first() -> str:
            calls.append("first")
            return "1"

        def second() -> str:
            calls.append("second")
            if broken:
                raise CriticalError("downstream is down")
            return "2"

        return [await ctx.run("first", first), await ctx.run("second", second)]

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
        assert op.status == "failed"
        with pytest.raises(FailedPreconditionError):
            await engine.wake(op.name)
        broken = False
        await engine.recover(op.name)
        done = await finished(engine, op.name)
        with pytest.raises(FailedPreconditionError):
            await engine.recover(op.name)  # not failed
    assert done.response == ["1", "2"]
    assert calls == ["first", "second", "second"]


async def test_wake_checks_a_poll_now(start: StartEngine) -> None:
    ready = False

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        return await ctx.poll("ready", lambda: ready, period=3600, timeout=7200)

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        await until_status(engine, op.name, "sleeping")
        ready = True
        await engine.wake(op.name)
        assert (await finished(engine, op.name)).response is True
