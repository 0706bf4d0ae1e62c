"""`DurableEngine.describe` and ``GET /{flow}/shape``: golden shapes, no side effects."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from samples.approval.flows import expense_approval
from stream_gateway.durable import (
    Case,
    DurableContext,
    DurableEngine,
    InMemoryDurableStore,
    Loop,
    durable_flow,
    durable_routes,
)

pytestmark = pytest.mark.anyio

GOLDEN = Path(__file__).parent / "golden"
effects: list[str] = []


def effect(*_: Any) -> Any:
    effects.append("ran")
    return 1


@durable_flow(input=int, output=int)
async def child(n: int, ctx: DurableContext) -> int:
    return n


@durable_flow(input=int)
async def everything(n: int, ctx: DurableContext) -> Any:
    """Uses every durable call."""
    await ctx.note("start", n=n)
    if ctx.evicted:  # flow code may look: never while describing
        return None
    await ctx.removed("old")
    await ctx.rollback_checkpoint("money")
    await ctx.run("charge", effect, rollback=effect)
    await ctx.run("cache", effect, ephemeral=True)
    await ctx.run_action(child, 1)
    await ctx.poll("ready", effect, period=1, timeout=10)
    await ctx.sleep("nap", 5)
    answer = await ctx.interrupt("approve", bool)
    if not answer:
        await ctx.rollback()
    await ctx.wait_for_signal("go", "go")
    await ctx.messages("inbox", ["a", "b"], count=2)
    await ctx.wait_for("others", ["x"])

    async def branch(ctx: DurableContext) -> Any:
        return await ctx.run("work", effect)

    await ctx.join("both", {"left": branch, "right": branch})
    winner, _ = await ctx.race("first", {"fast": branch, "slow": branch})
    if winner == "slow":
        await ctx.note("the slow one won")

    async def turn(ctx: DurableContext, state: Any) -> Loop:
        await ctx.run("turn", effect)
        return Loop.done(state)

    await ctx.loop("turns", turn, state=0)
    kind, _ = await ctx.switch(
        "route", n, [Case("small", lambda v: v < 5, effect), Case("big", 5, effect)], effect
    )
    if kind == "small":
        await ctx.run("refund", effect)
    elif kind == "big":
        await ctx.sleep("cool-off", 60)
        await ctx.run("audit", effect)
    await ctx.now()
    await ctx.random()
    await ctx.uuid()
    return kind


def golden(name: str, shape: dict[str, Any]) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(shape, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"shape of {name} changed (UPDATE_GOLDEN=1 to accept)"


async def test_the_shapes_of_the_approval_sample_and_of_every_primitive() -> None:
    engine = DurableEngine([expense_approval, everything, child], store=InMemoryDurableStore())
    async with engine:
        golden("approval", await engine.describe(expense_approval))
        golden("everything", await engine.describe("everything", 3))
    assert effects == []  # no step body, matcher or handler ran
    async with engine:
        assert (await engine.list()).items == []  # nothing stored


async def test_every_path_through_nested_decisions_is_explored() -> None:
    @durable_flow
    async def paths(_: None, ctx: DurableContext) -> None:
        size, _v = await ctx.switch("size", 1, [Case("s", 1, effect), Case("l", 2, effect)])
        if size == "s":
            tier, _t = await ctx.switch("tier", 1, [Case("gold", 1, effect)], effect)
            if tier == "gold":
                await ctx.run("gift", effect)
        else:
            await ctx.sleep("wait", 1)

        async def pick(ctx: DurableContext) -> None:
            which, _w = await ctx.switch("which", 1, [Case("x", 1, effect), Case("y", 2, effect)])
            await ctx.run(f"do-{which}", effect)

        await ctx.join("fan", {"one": pick})
        await ctx.run("end", effect)

    engine = DurableEngine([paths], store=InMemoryDurableStore())
    async with engine:
        shape = await engine.describe(paths)
    assert shape["complete"] is True and effects == []
    size, fan, end = shape["nodes"]
    gold = {"type": "step", "name": "gift", "rollback": False, "ephemeral": False}
    tier = {
        "type": "switch",
        "name": "tier",
        "default": True,
        "cases": [{"id": "gold", "nodes": [gold]}, {"id": "default", "nodes": []}],
    }
    assert size["cases"] == [
        {"id": "s", "nodes": [tier]},
        {"id": "l", "nodes": [{"type": "sleep", "name": "wait"}]},
    ]
    [which] = fan["branches"]["one"]  # what follows it differs in each case
    assert [(c["id"], [n["name"] for n in c["nodes"]]) for c in which["cases"]] == [
        ("x", ["do-x"]),
        ("y", ["do-y"]),
    ]
    assert end["name"] == "end"


async def test_an_incomplete_shape_says_so() -> None:
    @durable_flow
    async def picky(_: None, ctx: DurableContext) -> None:
        value = await ctx.run("a", effect)
        if value.missing_method() != 3:  # a placeholder is not 3
            raise ValueError("unexpected")

    @durable_flow
    async def endless(_: None, ctx: DurableContext) -> None:
        while True:
            await ctx.run("spin", effect)

    @durable_flow
    async def forks(_: None, ctx: DurableContext) -> None:
        for i in range(8):  # 256 paths
            await ctx.switch(f"fork{i}", i, [Case("a", 1, effect), Case("b", 2, effect)])

    engine = DurableEngine([picky, endless, forks], store=InMemoryDurableStore())
    async with engine:
        picked = await engine.describe(picky)
        spun = await engine.describe(endless)
        forked = await engine.describe(forks)
    assert picked["complete"] is False and [n["name"] for n in picked["nodes"]] == ["a"]
    assert spun["complete"] is False and len(spun["nodes"]) == 500
    json.dumps(spun)
    assert forked["complete"] is False  # too many paths to explore them all
    assert [c["id"] for c in forked["nodes"][0]["cases"]] == ["a", "b"]
    json.dumps(forked)
    assert effects == []


async def test_the_shape_route() -> None:
    engine = DurableEngine([expense_approval], store=InMemoryDurableStore())
    app = Starlette(routes=[Mount("/d", durable_routes(engine))])
    async with (
        engine,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        got = await c.get("/d/expense_approval/shape")
        missing = await c.get("/d/nope/shape")
    assert got.status_code == 200
    assert [n["type"] for n in got.json()["nodes"]] == [
        "step",
        "sleep",
        "interrupt",
        "value",
        "step",
    ]
    assert missing.status_code == 404
