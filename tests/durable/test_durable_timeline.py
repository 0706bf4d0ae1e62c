"""The audit timeline: `engine.detail`, what each primitive records, and the feed."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from stream_gateway import RequestContext
from stream_gateway.durable import (
    AuditEntry,
    DurableContext,
    RetryPolicy,
    durable_flow,
    durable_routes,
)

from .conftest import StartEngine
from .helpers import finished, until_status

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.01, jitter=0.0)


def lines(timeline: list[AuditEntry]) -> list[tuple[str, str | None, Any]]:
    """``(kind, step, the one datum that matters)`` per entry."""
    picked = []
    for a in timeline:
        datum = a.data.get("status") or a.data.get("outcome") or a.data.get("signal")
        picked.append((a.kind, a.step, datum))
    return picked


async def test_detail_has_every_status_step_attempt_wait_and_signal(start: StartEngine) -> None:
    tries = []

    def flaky() -> int:
        tries.append(1)
        if len(tries) == 1:
            raise ValueError("first try fails")
        return 7

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        value = await ctx.run("flaky", flaky, retry=FAST)
        await ctx.sleep("nap", 0.01)
        got = await ctx.wait_for_signal("go", "go")
        return [value, got]

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        await until_status(engine, op.name, "waiting")
        await engine.signal(op.name, "go", 1)
        assert (await finished(engine, op.name)).response == [7, 1]
        detail = await engine.detail(op.name)

    assert [e.key for e in detail.steps] == ["flaky", "nap", "go"]
    assert detail.operation.status == "completed"
    seqs = [a.seq for a in detail.timeline]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    got = lines(detail.timeline)
    running, sleeping = ("status", None, "running"), ("status", None, "sleeping")
    # Each wake-up of the worker is a "running" line, and a short sleep may be over
    # before it parks; keep the order of the rest.
    rest = [g for g in got if g not in (running, sleeping)]
    assert rest == [
        ("status", None, "pending"),
        ("step", "flaky", "error"),
        ("retry_wait", "flaky", None),
        ("step", "flaky", "completed"),
        ("sleep", "nap", None),
        ("status", None, "waiting"),
        ("signal_sent", None, "go"),
        ("signal_consumed", "go", None),
        ("status", None, "completed"),
    ]
    assert got.count(running) >= 3
    assert got[got.index(("retry_wait", "flaky", None)) + 1] == sleeping
    error = detail.timeline[got.index(("step", "flaky", "error"))].data["error"]
    assert error["operator"] == {"type": "ValueError", "message": "first try fails"}
    owner_view = detail.to_json(operator=False)
    assert "operator" not in str(owner_view) and "Internal Error" in str(owner_view)
    assert owner_view["steps"][0]["result"] == 7


async def test_failures_cancellations_and_resumes_are_on_the_timeline(start: StartEngine) -> None:
    @durable_flow
    async def fails(_: None, ctx: DurableContext) -> None:
        await ctx.run("boom", lambda: 1 / 0, retry=None)

    @durable_flow
    async def asks(_: None, ctx: DurableContext) -> Any:
        return await ctx.interrupt("ok")

    async with start([fails, asks]) as (engine, _):
        failed = await engine.schedule(fails)
        await finished(engine, failed.name)
        asked = await engine.schedule(asks)
        await until_status(engine, asked.name, "waiting")
        await engine.resume(asked.name, "ok", True)
        await finished(engine, asked.name)
        parked = await engine.schedule(asks)
        await until_status(engine, parked.name, "waiting")
        await engine.cancel(parked.name)

        failed_lines = lines((await engine.detail(failed.name)).timeline)
        asked_lines = lines((await engine.detail(asked.name)).timeline)
        cancelled_lines = lines((await engine.detail(parked.name)).timeline)

    assert ("step", "boom", "failed") in failed_lines
    assert failed_lines[-1] == ("status", None, "failed")
    assert ("resume_sent", "ok", None) in asked_lines
    assert asked_lines.index(("resume_sent", "ok", None)) < asked_lines.index(
        ("resume", "ok", None)
    )
    assert cancelled_lines[-1] == ("status", None, "cancelled")


async def test_the_timeline_is_the_same_across_restarts(start: StartEngine) -> None:
    """A step recorded before a restart is on the timeline once."""

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        a = await ctx.run("a", lambda: 1)
        await ctx.wait_for_signal("go", "go")
        b = await ctx.run("b", lambda: 2)
        return a + b

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        await until_status(engine, op.name, "waiting")
    async with start([f]) as (engine, _):
        await engine.signal(op.name, "go")
        assert (await finished(engine, op.name)).response == 3
        got = lines((await engine.detail(op.name)).timeline)
    assert got.count(("step", "a", "completed")) == 1
    assert got.count(("step", "b", "completed")) == 1


async def test_the_audit_feed_follows_every_execution_from_a_cursor(start: StartEngine) -> None:
    @durable_flow
    async def f(n: int, ctx: DurableContext) -> int:
        value: int = await ctx.run("double", lambda: n * 2)
        return value

    async with start([f]) as (engine, _):
        first = await engine.schedule(f, 1)
        await finished(engine, first.name)
        seen: list[AuditEntry] = []
        done = anyio.Event()
        ends = {"n": 0}

        async def watch() -> None:
            async for entry in engine.audit_feed():
                seen.append(entry)
                if entry.kind == "status" and entry.data["status"] == "completed":
                    ends["n"] += 1
                    if ends["n"] == 2:
                        done.set()
                        return

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                second = await engine.schedule(f, 2)
                await done.wait()
        later = [e async for e in _take(engine.audit_feed(second.name, after=seen[0].seq), 2)]

    assert {e.execution_id for e in seen} == {first.name, second.name}
    assert [e.seq for e in seen] == sorted(e.seq for e in seen)
    assert all(e.execution_id == second.name for e in later)


async def _take(feed: Any, n: int) -> Any:
    async for entry in feed:
        yield entry
        n -= 1
        if n == 0:
            return


async def test_the_detail_route_serves_owners_only_and_hides_operator_errors(
    start: StartEngine,
) -> None:
    @durable_flow
    async def fails(_: None, ctx: DurableContext) -> None:
        await ctx.run("boom", lambda: 1 / 0, retry=None)

    async def auth(request: Request) -> RequestContext:
        return RequestContext(principal=request.headers.get("x-user") or None)

    async with start([fails]) as (engine, _):
        app = Starlette(routes=[Mount("/d", durable_routes(engine, context_provider=auth))])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            name = (await c.post("/d/fails", json={}, headers={"x-user": "ann"})).json()["name"]
            await finished(engine, name)
            mine = await c.get(f"/d/ops/{name}/detail", headers={"x-user": "ann"})
            theirs = await c.get(f"/d/ops/{name}/detail", headers={"x-user": "bob"})
            bad = await c.get("/d/ops/no!such/detail", headers={"x-user": "ann"})
        operator_view = (await engine.detail(name)).to_json()

    assert mine.status_code == 200
    body = mine.json()
    assert body["operation"]["status"] == "failed"
    assert [s["path"] for s in body["steps"]] == ["boom"]
    assert body["steps"][0]["error"]["details"]["cause"]["message"] == "Internal Error"
    kinds = [a["kind"] for a in body["timeline"]]
    assert kinds[0] == "status" and "step" in kinds
    assert all(isinstance(a["seq"], int) and a["at"].endswith("Z") for a in body["timeline"])
    assert "ZeroDivisionError" not in mine.text
    assert "ZeroDivisionError" in str(operator_view)
    assert theirs.status_code == 404 and bad.status_code == 400
