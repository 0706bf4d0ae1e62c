"""Workers on Firestore wake on the store's snapshot listener, not on their poll.

The worker polls once an hour; the executions and signals come from another engine
on its own store object (as another process would send them), which cannot wake the
worker in-process. Each is still picked up: the listener on the earliest due
execution told the worker.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator

import anyio
import pytest

from stream_gateway.durable import DurableContext, DurableEngine, durable_flow
from stream_gateway_firestore import FirestoreDurableStore
from stream_gateway_firestore.testing import FirestoreEmulator

pytestmark = pytest.mark.anyio

HOUR = 3600.0


@durable_flow(input=int, output=float)
async def waits(n: int, ctx: DurableContext) -> float:
    """Waits for ``go`` (its payload: when it was sent); returns how long it took
    until a step ran after it."""
    sent: float = await ctx.wait_for_signal("go", "go")
    seen: float = await ctx.run("seen", time.time)
    return seen - sent


@durable_flow(input=float, output=str)
async def naps(seconds: float, ctx: DurableContext) -> str:
    await ctx.sleep("nap", seconds)
    return "rested"


async def until(engine: DurableEngine, flow_id: str, status: str) -> None:
    """Poll the execution's status (the caller bounds the time)."""
    for _ in range(100_000):
        if (await engine.get_state(flow_id)).status == status:
            return
        await anyio.sleep(0.05)


@pytest.fixture
async def where(emulator: FirestoreEmulator) -> AsyncIterator[str]:
    yield f"firestore://{emulator.project}?prefix=k{secrets.token_hex(5)}"


async def test_a_signal_from_elsewhere_wakes_a_worker_polling_hourly(where: str) -> None:
    worker_engine = DurableEngine([waits], store=FirestoreDurableStore.from_url(where))
    sender = DurableEngine([waits], store=FirestoreDurableStore.from_url(where))
    async with worker_engine, sender, worker_engine.worker(poll_interval=HOUR):
        with anyio.fail_after(120):  # far below the poll interval
            op = await sender.schedule(waits, 1)
            await until(sender, op.name, "waiting")  # started by the listener, not a poll
            await sender.signal(op.name, "go", time.time())
            final = await sender.wait(op.name)
    assert final.status == "completed", final.to_json()
    assert 0 <= final.response < HOUR


async def test_a_timer_set_elsewhere_wakes_a_worker_polling_hourly(where: str) -> None:
    worker_engine = DurableEngine([naps], store=FirestoreDurableStore.from_url(where))
    sender = DurableEngine([naps], store=FirestoreDurableStore.from_url(where))
    async with worker_engine, sender:
        # Another worker parks the execution on a 3 s timer, then goes away.
        async with sender.worker(poll_interval=0.05):
            op = await sender.schedule(naps, 3.0)
            with anyio.fail_after(60):
                await until(sender, op.name, "sleeping")
        async with worker_engine.worker(poll_interval=HOUR):
            with anyio.fail_after(120):
                final = await sender.wait(op.name)
    assert final.status == "completed" and final.response == "rested"


async def test_a_store_without_notifications_leaves_workers_to_poll() -> None:
    from stream_gateway.durable import InMemoryDurableStore

    seen: list[float] = []
    with anyio.fail_after(5):
        await InMemoryDurableStore().watch_due(["any"], seen.append)  # returns at once
    assert seen == []
