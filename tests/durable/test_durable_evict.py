"""`DurableEngine.evict`: a running execution parks now and resumes on any worker."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from stream_gateway import FailedPreconditionError
from stream_gateway.durable import (
    DurableContext,
    DurableEngine,
    ExecutionNotFoundError,
    RollbackError,
    durable_flow,
    durable_routes,
)

from .conftest import NewStore, StartEngine
from .helpers import finished, until_status

pytestmark = pytest.mark.anyio


def long_flow(calls: Counter[str], entered: anyio.Event) -> Any:
    @durable_flow(name="long")
    async def long(_: None, ctx: DurableContext) -> Any:
        await ctx.run("before", lambda: calls.update(["before"]), ephemeral=True)

        async def work() -> str:
            calls["work"] += 1
            if calls["work"] == 1:
                entered.set()
                await anyio.sleep_forever()  # cancelled by the eviction
            return "done"

        result = await ctx.run("work", work)
        return [result, ctx.evicted]

    return long


async def test_evict_cancels_a_running_step_without_counting_it(start: StartEngine) -> None:
    calls: Counter[str] = Counter()
    entered = anyio.Event()
    flow = long_flow(calls, entered)
    async with start([flow]) as (engine, worker):
        op = await engine.schedule(flow)
        with anyio.fail_after(10):
            await entered.wait()
        evicting = await engine.evict(op.name)
        assert evicting.status == "running"
        done = await finished(engine, op.name)
        detail = await engine.detail(op.name)
    assert done.response == ["done", False]  # the run that resumed was not evicted
    steps = {e.path: e for e in detail.steps}
    assert steps["work"].attempts == 1 and steps["work"].error is None  # not counted
    assert calls == Counter({"before": 1, "work": 2})  # the ephemeral step was flushed
    kinds = [(a.kind, a.data.get("status")) for a in detail.timeline]
    evicted_at = kinds.index(("evicted", None))
    assert ("evict", None) in kinds[:evicted_at]
    assert kinds[evicted_at + 1] == ("status", "pending")
    assert kinds[-1] == ("status", "completed")
    assert [a.data["worker"] for a in detail.timeline if a.kind == "evicted"] == [worker.worker_id]


async def test_a_sync_step_sees_ctx_evicted_and_its_failure_is_not_counted(
    start: StartEngine,
) -> None:
    calls: Counter[str] = Counter()
    entered = anyio.Event()
    seen: list[bool] = []

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> str:
        def crunch() -> str:
            calls["crunch"] += 1
            if calls["crunch"] == 1:
                anyio.from_thread.run_sync(entered.set)
                deadline = time.monotonic() + 10
                while not ctx.evicted and time.monotonic() < deadline:
                    time.sleep(0.005)
                seen.append(ctx.evicted)
                raise RuntimeError("stopped early")  # not a failure: the run is evicted
            return "crunched"

        result: str = await ctx.run("crunch", crunch, retry=None)  # one attempt only
        return result

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        with anyio.fail_after(10):
            await entered.wait()
        await engine.evict(op.name)
        done = await finished(engine, op.name)
        [entry] = await engine.history(op.name)
        # The evicted attempt's thread is not waited for: it may still be in its loop
        # (a loaded machine) when the second attempt has finished.
        with anyio.fail_after(10):
            while not seen:  # noqa: ASYNC110 - a thread appends, no event to wait on
                await anyio.sleep(0.01)
    assert seen == [True]
    assert done.status == "completed" and done.response == "crunched"
    assert entry.attempts == 1 and calls["crunch"] == 2


async def test_evicted_from_one_worker_resumed_by_the_other_through_the_store(
    new_store: NewStore,
) -> None:
    """Three engines on one store, as three processes: the eviction reaches worker A
    only through the store (its lease renewals), not through an in-process notice."""
    calls: Counter[str] = Counter()
    entered = anyio.Event()
    flow = long_flow(calls, entered)
    client = DurableEngine([flow], store=new_store(), poll_interval=0.02)
    a = DurableEngine([flow], store=new_store(), poll_interval=0.02)
    b = DurableEngine([flow], store=new_store(), poll_interval=0.02)
    options: dict[str, Any] = {"poll_interval": 0.02, "lease": 0.6, "grace": 1.0}
    async with client, a, b, a.worker(worker_id="A", **options):
        op = await client.schedule(flow)
        with anyio.fail_after(10):
            await entered.wait()  # running on A
        async with b.worker(worker_id="B", **options):
            await client.evict(op.name)
            with anyio.fail_after(10):
                done = await client.wait(op.name)
        detail = await client.detail(op.name)
    assert done.response == ["done", False]
    assert [x.data["worker"] for x in detail.timeline if x.kind == "evicted"] == ["A"]
    runs = [x.data["worker"] for x in detail.timeline if x.data.get("status") == "running"]
    assert runs[0] == "A" and runs[-1] in ("A", "B") and len(runs) == 2
    print(f"resumed by {runs[-1]}")
    assert [e.attempts for e in detail.steps if e.key == "work"] == [1]


async def test_evict_of_parked_finished_and_unknown_executions(start: StartEngine) -> None:
    @durable_flow
    async def waits(_: None, ctx: DurableContext) -> None:
        await ctx.interrupt("go")

    async with start([waits]) as (engine, _):
        op = await engine.schedule(waits)
        await until_status(engine, op.name, "waiting")
        parked = await engine.evict(op.name)  # already parked: nothing to do
        assert parked.status == "waiting"
        await engine.resume(op.name, "go", None)
        await finished(engine, op.name)
        with pytest.raises(FailedPreconditionError, match="nothing to evict"):
            await engine.evict(op.name)
        with pytest.raises(ExecutionNotFoundError):
            await engine.evict("A" * 22)
        app = Starlette(routes=[Mount("/d", durable_routes(engine))])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            other = await engine.schedule(waits)
            await until_status(engine, other.name, "waiting")
            r = await c.post(f"/d/ops/{other.name}/evict")
            assert r.status_code == 200 and r.json()["status"] == "waiting"
            r = await c.post(f"/d/ops/{op.name}/evict")
            assert r.status_code == 400 and r.json()["error"]["status"] == "FAILED_PRECONDITION"


async def test_evict_interrupts_every_join_branch(start: StartEngine) -> None:
    calls: Counter[str] = Counter()
    both = anyio.Event()

    async def branch(ctx: DurableContext) -> str:
        async def work() -> str:
            calls[ctx.branch] += 1
            if calls[ctx.branch] == 1:
                if len(calls) == 2:
                    both.set()
                await anyio.sleep_forever()
            return ctx.branch

        return await ctx.run("work", work, output=str)

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> Any:
        return await ctx.join("pair", {"a": branch, "b": branch})

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        with anyio.fail_after(10):
            await both.wait()
        await engine.evict(op.name)
        done = await finished(engine, op.name)
        entries = await engine.history(op.name)
    assert done.response == {"a": "pair:a", "b": "pair:b"}
    assert calls == Counter({"pair:a": 2, "pair:b": 2})
    assert sorted((e.path, e.attempts) for e in entries if e.key == "work") == [
        ("pair:a/work", 1),
        ("pair:b/work", 1),
    ]


async def test_evict_during_a_rollback_parks_between_handlers(start: StartEngine) -> None:
    ran: list[str] = []
    in_handler, release = anyio.Event(), anyio.Event()

    def undo(name: str) -> Any:
        async def handler(_: Any) -> None:
            if name == "c" and not ran:
                in_handler.set()
                await release.wait()  # a handler in flight finishes
            ran.append(name)

        return handler

    @durable_flow
    async def f(_: None, ctx: DurableContext) -> None:
        await ctx.rollback_checkpoint("start")
        for name in "abc":
            await ctx.run(name, lambda: 1, rollback=undo(name))

        def decline() -> None:
            raise RollbackError("declined")

        await ctx.run("charge", decline)

    async with start([f]) as (engine, _):
        op = await engine.schedule(f)
        with anyio.fail_after(10):
            await in_handler.wait()
        assert (await engine.evict(op.name)).status == "rolling_back"
        release.set()
        done = await finished(engine, op.name)
        detail = await engine.detail(op.name)
    assert done.status == "failed" and done.error is not None
    assert done.error.message == "declined"
    assert ran == ["c", "b", "a"]  # each once, newest first
    kinds = [(a.kind, a.data.get("status")) for a in detail.timeline]
    evicted_at = kinds.index(("evicted", None))
    statuses = [k for k in kinds[evicted_at:] if k[0] == "status"]
    assert statuses[:2] == [("status", "rolling_back"), ("status", "running")]  # parked
    assert statuses[-1] == ("status", "failed")
