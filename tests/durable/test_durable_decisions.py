"""`switch`, `note` and `removed` (migrations), on every store, across restarts."""

from __future__ import annotations

from typing import Any

import pytest

from stream_gateway import InvalidArgumentError
from stream_gateway.durable import (
    Case,
    DurableContext,
    HistoryDivergedError,
    NoMatchingCaseError,
    durable_flow,
)

from .conftest import StartEngine
from .helpers import finished, until_status

pytestmark = pytest.mark.anyio


async def test_switch_runs_the_first_match_once_and_replays_its_decision(
    start: StartEngine,
) -> None:
    matched: list[str] = []
    ran: list[str] = []

    def matcher(case: str, ok: bool) -> Any:
        def match(value: Any) -> bool:
            matched.append(case)
            return ok

        return match

    def body(case: str) -> Any:
        def run(value: Any) -> Any:
            ran.append(case)
            return {"case": case, "value": value}

        return run

    @durable_flow
    async def f(amount: int, ctx: DurableContext) -> Any:
        decision = await ctx.switch(
            "route",
            amount,
            [
                Case("small", matcher("small", False), body("small")),
                Case("large", matcher("large", True), body("large")),
                Case("also", matcher("also", True), body("also")),
            ],
        )
        await ctx.wait_for_signal("go", "go")
        return list(decision)

    async with start([f]) as (engine, _):
        op = await engine.schedule(f, 500)
        await until_status(engine, op.name, "waiting")
    async with start([f]) as (engine, _):  # a restart: the switch is replayed
        await engine.signal(op.name, "go")
        done = await finished(engine, op.name)
        detail = await engine.detail(op.name)

    assert done.response == ["large", {"case": "large", "value": 500}]
    assert matched == ["small", "large"] and ran == ["large"]
    [decision] = [a for a in detail.timeline if a.kind == "switch" and "case" in a.data]
    assert decision.step == "route" and decision.data == {"case": "large"}


async def test_switch_equality_matches_default_and_no_match(start: StartEngine) -> None:
    @durable_flow
    async def f(value: str, ctx: DurableContext) -> Any:
        cases = [Case("a", "a", lambda v: "got a"), Case("b", "b", lambda v: "got b")]
        first = await ctx.switch("first", value, cases, default=lambda v: f"default {v}")
        second = await ctx.switch("second", value, cases)
        return [list(first), list(second)]

    async with start([f]) as (engine, _):
        hit = await finished(engine, (await engine.schedule(f, "b")).name)
        miss = await finished(engine, (await engine.schedule(f, "z")).name)
        steps = await engine.history(miss.name)

    assert hit.response == [["b", "got b"], ["b", "got b"]]
    assert isinstance(miss.error, NoMatchingCaseError)
    assert "no case matched" in miss.error.message and "default=" in miss.error.message
    assert [(e.key, e.status, e.attempts) for e in steps] == [
        ("first", "completed", 1),
        ("second", "failed", 1),  # not retried
    ]


async def test_switch_refuses_malformed_cases(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        return await ctx.switch("s", 1, [Case("x", 1, str), Case("x", 2, str)])

    @durable_flow
    async def g(_: None, ctx: DurableContext) -> Any:
        return await ctx.switch("s", 1, [Case("default", 1, str)])

    async with start([f, g]) as (engine, _):
        for flow in (f, g):
            op = await finished(engine, (await engine.schedule(flow)).name)
            assert isinstance(op.error, InvalidArgumentError)


async def test_notes_are_recorded_once_across_replays(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> int:
        await ctx.note("starting", by="me", n=1)
        await ctx.wait_for_signal("go", "go")
        await ctx.note("resumed")
        return 1

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        await until_status(engine, op.name, "waiting")
    async with start([f]) as (engine, _):
        await engine.signal(op.name, "go")
        await finished(engine, op.name)
        detail = await engine.detail(op.name)

    notes = [(a.step, a.data) for a in detail.timeline if a.kind == "note"]
    assert notes == [
        ("note", {"message": "starting", "meta": {"by": "me", "n": 1}}),
        ("note-1", {"message": "resumed", "meta": {}}),
    ]
    assert [e.kind for e in detail.steps] == ["note", "signal", "note"]


async def test_a_note_with_meta_that_is_not_json_is_refused(start: StartEngine) -> None:
    @durable_flow
    async def f(_: None, ctx: DurableContext) -> None:
        await ctx.note("x", when=object())

    async with start([f]) as (engine, _):
        op = await finished(engine, (await engine.schedule(f)).name)
    assert isinstance(op.error, InvalidArgumentError) and "JSON" in op.error.message


def v1_and_v2() -> tuple[Any, Any]:
    effects: list[str] = []

    def effect(name: str, value: str) -> Any:
        def run() -> str:
            effects.append(name)
            return value

        return run

    @durable_flow(name="orders")
    async def v1(_: None, ctx: DurableContext) -> Any:
        a = await ctx.run("reserve", effect("reserve", "r"))
        b = await ctx.run("legacy_check", effect("legacy", "l"))
        await ctx.wait_for_signal("paid", "paid")
        c = await ctx.run("ship", effect("ship", "s"))
        return [a, b, c]

    @durable_flow(name="orders")
    async def v2(_: None, ctx: DurableContext) -> Any:
        a = await ctx.run("reserve", effect("reserve", "r"))
        await ctx.removed("legacy_check")
        await ctx.wait_for_signal("paid", "paid")
        c = await ctx.run("ship", effect("ship", "s"))
        return [a, c]

    v1.effects = effects  # type: ignore[attr-defined]
    return v1, v2


async def test_an_execution_parked_on_v1_completes_on_v2_that_removed_a_step(
    start: StartEngine,
) -> None:
    v1, v2 = v1_and_v2()
    async with start([v1]) as (engine, _):
        old = await engine.schedule(v1)
        await until_status(engine, old.name, "waiting")
    async with start([v2]) as (engine, _):  # deployed v2
        await engine.signal(old.name, "paid")
        assert (await finished(engine, old.name)).response == ["r", "s"]
        new = await engine.schedule(v2)
        await until_status(engine, new.name, "waiting")
        await engine.signal(new.name, "paid")
        assert (await finished(engine, new.name)).response == ["r", "s"]
        old_steps = await engine.history(old.name)
        new_steps = await engine.history(new.name)

    assert v1.effects == ["reserve", "legacy", "ship", "reserve", "ship"]
    assert old_steps[1].key == "legacy_check" and old_steps[1].result == '"l"'
    assert new_steps[1].key == "legacy_check" and new_steps[1].kind == "step"
    assert new_steps[1].result == '{"removed":true}'


async def test_without_removed_v2_fails_on_a_v1_journal(start: StartEngine) -> None:
    """What `removed` is for: deleting the step outright diverges."""
    v1, _ = v1_and_v2()

    @durable_flow(name="orders")
    async def v2_bad(_: None, ctx: DurableContext) -> Any:
        await ctx.run("reserve", lambda: "r")
        await ctx.wait_for_signal("paid", "paid")
        return None

    async with start([v1]) as (engine, _):
        old = await engine.schedule(v1)
        await until_status(engine, old.name, "waiting")
    async with start([v2_bad]) as (engine, _):
        await engine.signal(old.name, "paid")
        assert isinstance((await finished(engine, old.name)).error, HistoryDivergedError)


async def test_removed_must_name_the_kind_the_journal_has(start: StartEngine) -> None:
    v1, _ = v1_and_v2()

    @durable_flow(name="orders")
    async def v2_wrong_kind(_: None, ctx: DurableContext) -> Any:
        await ctx.run("reserve", lambda: "r")
        await ctx.removed("legacy_check", kind="sleep")
        await ctx.wait_for_signal("paid", "paid")
        return None

    async with start([v1]) as (engine, _):
        old = await engine.schedule(v1)
        await until_status(engine, old.name, "waiting")
    async with start([v2_wrong_kind]) as (engine, _):
        await engine.signal(old.name, "paid")
        op = await finished(engine, old.name)
    assert isinstance(op.error, HistoryDivergedError) and "sleep" in op.error.message
