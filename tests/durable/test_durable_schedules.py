"""Recurring schedules: cron ticks across DST, intervals, pause/resume/update/remove,
overlap, missed ticks, and one execution per tick with several firers."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from stream_gateway import AlreadyExistsError, InvalidArgumentError, RequestContext
from stream_gateway.durable import (
    DurableContext,
    DurableEngine,
    ScheduleNotFoundError,
    durable_flow,
    durable_routes,
)
from stream_gateway.durable._cron import Cron, zone
from stream_gateway.durable._schedules import fire_due, tick_execution_id

from .conftest import NewStore, StartEngine
from .helpers import until_status

pytestmark = pytest.mark.anyio

PARIS = zone("Europe/Paris")


def ticks(expression: str, start: datetime, n: int) -> list[str]:
    cron, at, out = Cron.parse(expression), start.timestamp(), []
    for _ in range(n):
        found = cron.next_after(at, PARIS)
        assert found is not None
        out.append(datetime.fromtimestamp(found, PARIS).isoformat())
        at = found
    return out


def test_cron_ticks_across_the_spring_dst_jump_in_paris() -> None:
    # 2026-03-29 02:00 CET jumps to 03:00 CEST: 02:30 does not exist that day.
    got = ticks("30 2 * * *", datetime(2026, 3, 27, 12, tzinfo=UTC), 3)
    assert got == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    hourly = ticks("0 * * * *", datetime(2026, 3, 29, 0, 30, tzinfo=PARIS), 3)
    assert hourly == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",  # one real hour after 01:00
        "2026-03-29T04:00:00+02:00",
    ]


def test_cron_ticks_across_the_autumn_dst_change_in_paris() -> None:
    # 2026-10-25 03:00 CEST goes back to 02:00 CET: 02:xx happens twice, fires once.
    got = ticks("*/30 * * * *", datetime(2026, 10, 25, 1, 10, tzinfo=PARIS), 5)
    assert got == [
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]
    daily = ticks("0 9 * * *", datetime(2026, 10, 24, 10, tzinfo=PARIS), 2)
    assert daily == ["2026-10-25T09:00:00+01:00", "2026-10-26T09:00:00+01:00"]


def test_cron_fields_names_steps_and_day_rules() -> None:
    start = datetime(2026, 1, 1, 0, 0, tzinfo=PARIS)  # a Thursday
    assert ticks("15 10 * * mon-fri", start, 3) == [
        "2026-01-01T10:15:00+01:00",
        "2026-01-02T10:15:00+01:00",
        "2026-01-05T10:15:00+01:00",
    ]
    # Day of month OR day of week when both are restricted (classic cron).
    assert ticks("0 0 13 * 5", start, 2) == [
        "2026-01-02T00:00:00+01:00",
        "2026-01-09T00:00:00+01:00",
    ]
    assert ticks("0 12 1 jan,jul *", start, 2) == [
        "2026-01-01T12:00:00+01:00",
        "2026-07-01T12:00:00+02:00",
    ]
    assert Cron.parse("0 0 30 2 *").next_after(start.timestamp(), PARIS) is None
    assert Cron.parse("0 0 * * 7").weekdays == frozenset({0})
    for bad in ("* * * *", "60 * * * *", "*/0 * * * *", "a * * * *", "5-1 * * * *"):
        with pytest.raises(InvalidArgumentError):
            Cron.parse(bad)


@durable_flow(input=int, output=int)
async def tick(n: int, ctx: DurableContext) -> int:
    return n


@durable_flow
async def held(_: None, ctx: DurableContext) -> Any:
    return await ctx.wait_for_signal("go", "go")


async def test_ensure_is_idempotent_and_validates(new_store: NewStore) -> None:
    engine = DurableEngine([tick], store=new_store())
    async with engine:
        first = await engine.ensure_schedule(tick, 1, id="every-hour", cron="0 * * * *")
        again = await engine.ensure_schedule(tick, 1, id="every-hour", cron="0 * * * *")
        assert again.to_json() == first.to_json()
        assert first.next_at is not None and first.next_at % 3600 == 0
        moved = await engine.ensure_schedule(
            tick, 2, id="every-hour", cron="15 * * * *", timezone="Asia/Kolkata"
        )
        assert moved.next_at is not None and moved.input == "2"
        assert moved.next_at % 3600 == 45 * 60  # :15 in UTC+05:30
        with pytest.raises(AlreadyExistsError):
            await engine.ensure_schedule(tick, 1, id="every-hour", cron="0 * * * *", owner="o")
        for kwargs in (
            {},
            {"cron": "* * * * *", "interval": 5},
            {"interval": 0},
            {"interval": timedelta(seconds=-1)},
            {"cron": "nope"},
            {"cron": "* * * * *", "timezone": "Mars/Base"},
            {"cron": "* * * * *", "overlap": "queue"},
        ):
            with pytest.raises(InvalidArgumentError):
                await engine.ensure_schedule(tick, 1, id="bad", **kwargs)
        with pytest.raises(InvalidArgumentError):
            await engine.ensure_schedule(tick, "not an int", id="bad", interval=1)
        assert [s.id for s in await engine.list_schedules()] == ["every-hour"]
        with pytest.raises(ScheduleNotFoundError):
            await engine.get_schedule("bad")


async def test_a_missed_tick_fires_once_and_firers_never_double(new_store: NewStore) -> None:
    async with (
        DurableEngine([tick], store=new_store()) as a,
        DurableEngine([tick], store=new_store()) as b,
    ):
        schedule = await a.ensure_schedule(tick, 7, id="often", interval=0.1, overlap="allow")
        await anyio.sleep(0.6)  # ~6 ticks pass with no worker running
        before = time.time()
        assert await fire_due(a) == 1
        later = await a.get_schedule("often")
        assert later.last_tick == schedule.next_at
        # The next tick is after the firing's now, however long the firing took.
        assert later.next_at is not None and later.next_at > before
        # Several firers at once: every tick starts exactly one execution.
        for _ in range(10):
            await anyio.sleep(0.11)
            async with anyio.create_task_group() as tg:
                for engine in (a, b, a, b):
                    tg.start_soon(fire_due, engine)
        page = await a.list(flow="tick", limit=1000)
        ids = [op.name for op in page.items]
        assert len(ids) == len(set(ids)) >= 5
        detail = await a.detail(ids[0])
        assert [line.kind for line in detail.timeline][:2] == ["schedule_tick", "status"]
        fired_ticks = {
            line.data["tick"]
            for op in page.items
            for line in (await a.detail(op.name)).timeline
            if line.kind == "schedule_tick"
        }
        assert {tick_execution_id("often", t) for t in fired_ticks} == set(ids)


async def at_least(engine: DurableEngine, n: int) -> None:
    """Wait until ``tick`` has ``n`` executions (10 s against hangs)."""
    with anyio.fail_after(10):
        while True:
            if len((await engine.list(flow="tick", limit=1000)).items) >= n:
                return
            await anyio.sleep(0.02)


async def test_pause_resume_update_and_remove(start: StartEngine) -> None:
    async with start([tick]) as (engine, _):
        await engine.ensure_schedule(tick, 1, id="beat", interval=0.1)
        await at_least(engine, 3)
        paused = await engine.pause_schedule("beat")
        assert paused.paused
        await anyio.sleep(0.05)  # a fire already under way may land
        count = len((await engine.list(flow="tick", limit=1000)).items)
        await anyio.sleep(0.4)
        assert len((await engine.list(flow="tick", limit=1000)).items) == count
        resumed = await engine.resume_schedule("beat")
        assert not resumed.paused and resumed.next_at is not None
        await at_least(engine, count + 2)
        updated = await engine.update_schedule("beat", interval=3600, input=5)
        assert updated.interval == 3600 and updated.input == "5"
        assert updated.next_at is not None and updated.next_at > updated.updated_at + 3000
        hourly = await engine.update_schedule("beat", cron="0 * * * *")
        assert hourly.cron == "0 * * * *" and hourly.interval is None
        assert hourly.next_at is not None and hourly.next_at % 3600 == 0
        await engine.update_schedule("beat", interval=0.1)
        await engine.remove_schedule("beat")
        count = len((await engine.list(flow="tick", limit=1000)).items)
        await anyio.sleep(0.4)
        assert len((await engine.list(flow="tick", limit=1000)).items) == count
        with pytest.raises(ScheduleNotFoundError):
            await engine.remove_schedule("beat")
        with pytest.raises(ScheduleNotFoundError):
            await engine.pause_schedule("beat")


async def test_overlap_skip_waits_for_the_last_execution_allow_does_not(
    start: StartEngine,
) -> None:
    async with start([held]) as (engine, _):
        await engine.ensure_schedule(held, id="one-at-a-time", interval=0.1)
        await engine.ensure_schedule(held, id="many", interval=0.1, overlap="allow")
        with anyio.fail_after(10):
            while True:
                many = (await engine.get_schedule("many")).last_execution
                ops = (await engine.list(flow="held", limit=1000)).items
                if many is not None and len(ops) >= 5:
                    break
                await anyio.sleep(0.02)
        single = await engine.get_schedule("one-at-a-time")
        assert single.last_execution is not None
        mine = [op for op in ops if op.name == single.last_execution]
        assert len(ops) - len(mine) >= 4  # "many" started one per tick
        first = single.last_execution
        await until_status(engine, first, "waiting")
        with anyio.fail_after(10):
            while True:
                skipped = [
                    line
                    for line in (await engine.detail(first)).timeline
                    if line.kind == "schedule_tick" and line.data.get("skipped")
                ]
                if skipped:
                    break
                await anyio.sleep(0.02)
        assert (await engine.get_schedule("one-at-a-time")).last_execution == first
        await engine.signal(first, "go", 1)
        with anyio.fail_after(10):
            while True:
                if (await engine.get_schedule("one-at-a-time")).last_execution != first:
                    break
                await anyio.sleep(0.02)
        for schedule_id in ("one-at-a-time", "many"):
            await engine.remove_schedule(schedule_id)


async def test_schedule_routes_for_their_owner(start: StartEngine) -> None:
    async def auth(request: Request) -> RequestContext:
        return RequestContext(principal=request.headers.get("x-user") or None)

    ann, bob = {"x-user": "ann"}, {"x-user": "bob"}
    async with start([tick]) as (engine, _):
        app = Starlette(routes=[Mount("/d", durable_routes(engine, context_provider=auth))])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            body = {"flow": "tick", "data": 3, "cron": "0 9 * * mon", "timezone": "Europe/Paris"}
            made = await c.put("/d/schedules/weekly", json=body, headers=ann)
            assert made.status_code == 200, made.text
            assert made.json()["cron"] == "0 9 * * mon" and made.json()["nextAt"].endswith("Z")
            assert (await c.put("/d/schedules/weekly", json=body, headers=ann)).json() == (
                made.json()
            )
            taken = await c.put("/d/schedules/weekly", json=body, headers=bob)
            assert taken.status_code == 409
            assert (await c.get("/d/schedules/weekly", headers=bob)).status_code == 404
            assert (await c.post("/d/schedules/weekly/pause", headers=bob)).status_code == 404
            listed = (await c.get("/d/schedules", headers=ann)).json()["schedules"]
            assert [s["id"] for s in listed] == ["weekly"]
            assert (await c.get("/d/schedules", headers=bob)).json() == {"schedules": []}
            paused = await c.post("/d/schedules/weekly/pause", headers=ann)
            assert paused.json()["paused"] is True
            resumed = await c.post("/d/schedules/weekly/resume", headers=ann)
            assert resumed.json()["paused"] is False
            patched = await c.patch(
                "/d/schedules/weekly", json={"interval": 3600, "data": 4}, headers=ann
            )
            assert patched.json()["interval"] == 3600 and patched.json()["input"] == 4
            for bad in ({"interval": "1h"}, {"cron": 5}, {"cron": "* *"}):
                got = await c.patch("/d/schedules/weekly", json=bad, headers=ann)
                assert got.status_code == 400, bad
            missing = await c.put("/d/schedules/x", json={"cron": "* * * * *"}, headers=ann)
            assert missing.status_code == 400
            assert (await c.delete("/d/schedules/weekly", headers=bob)).status_code == 404
            assert (await c.delete("/d/schedules/weekly", headers=ann)).json()["deleted"]
            assert (await c.get("/d/schedules/weekly", headers=ann)).status_code == 404
