"""Recurring schedules: their ticks, and firing the due ones (`fire_due`, run by every
worker's claim loop).

Exactly one execution per tick, however many workers fire: the store's
`fire_schedule` moves ``next_at`` from the tick to the next one only if it still is
that tick (a compare-and-set), and the execution's id is derived from the schedule
id and the tick, so even a repeated attempt creates nothing twice. A tick missed
while no worker ran fires once (late), and the next tick is the first one after
now: missed ticks are not replayed one by one.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .. import _telemetry
from .._errors import InvalidArgumentError
from ._cron import Cron, zone
from ._ids import derive_flow_id
from ._timeline import audit_line
from .errors import DurableStoreError, ExecutionNotFoundError
from .records import ExecutionRecord, Schedule

if TYPE_CHECKING:
    from .engine import DurableEngine

__all__ = ["check_spec", "fire_due", "next_tick", "tick_execution_id"]

logger = logging.getLogger("stream_gateway.durable")

#: The smallest interval accepted (seconds).
MIN_INTERVAL = 0.1


def check_spec(
    cron: str | None, interval: float | timedelta | None, timezone: str, overlap: str
) -> tuple[str | None, float | None]:
    """Validate a schedule's timing; returns ``(cron, interval seconds)``."""
    if (cron is None) == (interval is None):
        raise InvalidArgumentError("give a schedule cron= or interval=, one of them")
    zone(timezone)
    if overlap not in ("skip", "allow"):
        raise InvalidArgumentError("overlap is 'skip' or 'allow'")
    if cron is not None:
        return Cron.parse(cron).expression, None
    seconds = interval.total_seconds() if isinstance(interval, timedelta) else interval
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds < MIN_INTERVAL
    ):
        raise InvalidArgumentError(f"interval must be at least {MIN_INTERVAL} seconds")
    return None, float(seconds)


def next_tick(schedule: Schedule, after: float, anchor: float | None = None) -> float | None:
    """The schedule's first tick strictly after ``after``. Interval ticks lie on the
    grid ``anchor + k * interval`` (``anchor``: the last tick, else ``after``)."""
    if schedule.cron is not None:
        return Cron.parse(schedule.cron).next_after(after, zone(schedule.timezone))
    assert schedule.interval is not None
    start = anchor if anchor is not None else after
    steps = max(1, math.floor((after - start) / schedule.interval) + 1)
    tick = start + steps * schedule.interval
    while tick <= after:  # float rounding
        tick += schedule.interval
    return tick


def tick_execution_id(schedule_id: str, tick: float) -> str:
    """The id of the execution a tick starts: the same for every worker."""
    return derive_flow_id("schedule", schedule_id, f"{tick:.6f}")


async def fire_due(engine: DurableEngine, *, limit: int = 100) -> int:
    """Fire every due tick (one per schedule per call); returns how many started an
    execution. Safe to run in every worker at once."""
    now = time.time()
    started = 0
    for schedule in await engine.store.due_schedules(now, limit):
        tick = schedule.next_at
        assert tick is not None
        following = next_tick(schedule, max(now, tick), anchor=tick)
        execution: ExecutionRecord | None = None
        line: dict[str, Any] = {"schedule": schedule.id, "tick": tick}
        target = None
        if schedule.overlap == "skip" and schedule.last_execution is not None:
            try:
                last = await engine.store.get(schedule.last_execution)
            except ExecutionNotFoundError:
                last = None
            if last is not None and not last.done:
                line["skipped"] = True
                target = last.id
        if target is None:
            target = tick_execution_id(schedule.id, tick)
            execution = ExecutionRecord(
                id=target,
                flow=schedule.flow,
                input=schedule.input,
                owner=schedule.owner,
                created_at=now,
                updated_at=now,
                due_at=now,
            )
        audit = [audit_line(target, "schedule_tick", **line)]
        if execution is not None:
            audit.append(audit_line(target, "status", status="pending", schedule=schedule.id))
        fired = await engine.store.fire_schedule(
            schedule.id, tick=tick, next_at=following, execution=execution, now=now, audit=audit
        )
        if fired and execution is not None:
            started += 1
            for observer in _telemetry.observers:
                observer.execution_status("pending")
            logger.info("schedule %s: tick %.3f started flow %s", schedule.id, tick, target)
    if started:
        engine.notifier.due()
    return started


async def fire_due_quietly(engine: DurableEngine) -> None:
    """`fire_due` for a worker's loop: a store failure is logged, never raised."""
    try:
        await fire_due(engine)
    except DurableStoreError:
        logger.warning("durable schedules: the store is unavailable; ticks fire later")
    except Exception:
        logger.exception("durable schedules: firing due ticks failed")
