"""The INFO lines operators rely on: one per stream start, resume, cancel, stop, end and
abandonment, and per execution claim and status change, each with its id, flow and
owner (the stored hash's first 12 characters)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from stream_gateway.durable import DurableEngine, SqliteDurableStore
from stream_gateway.streams import (
    ErrorEvent,
    InMemoryStreamManager,
    InMemoryStreamStorage,
    StreamManager,
    StreamRecord,
)
from tests.cli.cli_flows import FLOWS
from tests.durable.helpers import finished, until_status

pytestmark = pytest.mark.anyio

OWNER = "0123456789abcdef0123"  # a stored owner hash; logs show its first 12 characters
TAG = "0123456789ab"


def lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.INFO
    ]


async def test_stream_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stream_gateway")
    async with InMemoryStreamManager() as manager:
        first = await manager.open(flow="chat", owner=OWNER)
        await first.write("a")
        await manager.stop(first.stream_id)
        await first.done("partial")
        second = await manager.open(flow="chat")
        await manager.cancel(second.stream_id)
        await second.cancelled()
    got = lines(caplog, "stream_gateway.streams")
    a, b = first.stream_id, second.stream_id
    assert f"stream {a} opened (flow 'chat', owner {TAG})" in got
    assert f"stream {a} (flow 'chat', owner {TAG}): stop requested" in got
    assert f"stream {a} (flow 'chat', owner {TAG}) ended: done after 1 chunks" in got
    assert f"stream {b} opened (flow 'chat', owner -)" in got
    assert f"stream {b} (flow 'chat', owner -): cancellation requested" in got
    assert (
        f"stream {b} (flow 'chat', owner -) ended: CANCELLED 'flow cancelled' after 0 chunks" in got
    )


async def test_abandonment_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stream_gateway")
    storage = InMemoryStreamStorage()
    now = time.time()
    record = StreamRecord(
        stream_id="abandoned-stream-0001", flow="chat", created_at=now, updated_at=now,
        expires_at=now + 60, owner=OWNER, lease_until=now - 1,
    )  # fmt: skip
    await storage.create(record)
    async with StreamManager(storage) as manager:
        with anyio.fail_after(10):
            events = [e async for e in manager.subscribe(record.stream_id)]
    assert events == [ErrorEvent("UNAVAILABLE", "stream abandoned")]
    assert (
        f"stream {record.stream_id} (flow 'chat', owner {TAG}) abandoned: its writer's lease"
        " lapsed; end recorded"
    ) in lines(caplog, "stream_gateway.streams")


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[DurableEngine]:
    engine = DurableEngine(FLOWS, store=SqliteDurableStore(tmp_path / "durable.db"))
    async with engine, engine.worker(poll_interval=0.05, worker_id="worker-1", grace=0.5):
        yield engine


async def test_execution_lines(engine: DurableEngine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stream_gateway")
    approve = (await engine.schedule("approve", "order-1", owner=OWNER)).name
    await until_status(engine, approve, "waiting")
    await engine.resume(approve, "approval", True)
    await finished(engine, approve)
    flaky = (await engine.schedule("flaky")).name
    await until_status(engine, flaky, "failed")
    await engine.recover(flaky)
    nap = (await engine.schedule("nap")).name
    await until_status(engine, nap, "sleeping")
    await engine.cancel(nap)

    got = lines(caplog, "stream_gateway.durable")
    mine = f"execution {approve} (flow 'approve', owner {TAG}): "
    for event in (
        "pending (scheduled)",
        "claimed by worker worker-1",
        "waiting on 'approval'",
        "resume of step 'approval' sent; now ",  # pending, or running if claimed at once
        "completed",
    ):
        assert any(line.startswith(mine + event) for line in got), (event, got)
    assert any(
        line.startswith(f"execution {flaky} (flow 'flaky', owner -): recovered; now ")
        for line in got
    )
    assert f"execution {nap} (flow 'nap', owner -): sleeping on 'nap'" in got
    assert f"execution {nap} (flow 'nap', owner -): cancel requested; now cancelled" in got
    failures = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
    ]  # a failure is a WARNING, with the same shape
    assert any(
        m.startswith(f"execution {flaky} (flow 'flaky', owner -): failed: ") for m in failures
    )
