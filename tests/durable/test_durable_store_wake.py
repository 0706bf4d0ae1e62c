"""`DurableStore.watch_due`, run against every store: a store that notifies wakes a
watcher for work another store instance (another process) makes due; one that does
not returns at once (its workers poll)."""

from __future__ import annotations

import time

import anyio
import pytest

from stream_gateway.durable import ExecutionRecord, Lease

from .backends import DurableHarness

pytestmark = pytest.mark.anyio


class Wakes:
    """Counts ``wake(at)`` calls; `next` waits for the next one and returns when the
    worker would look for work: ``at``, or the time of the call if ``at`` is past."""

    def __init__(self) -> None:
        self.count = 0
        self.looks_at = 0.0
        self._event = anyio.Event()

    def __call__(self, at: float) -> None:
        self.count += 1
        self.looks_at = max(at, time.time())
        self._event.set()

    async def next(self) -> float:
        with anyio.fail_after(20):
            await self._event.wait()
        self._event = anyio.Event()
        return self.looks_at

    def clear(self) -> None:
        self._event = anyio.Event()


def record(name: str, due: float | None) -> ExecutionRecord:
    now = time.time()
    return ExecutionRecord(
        id=f"wake-{name}-0000000000", flow="f", input="null", created_at=now, updated_at=now,
        due_at=due,
    )  # fmt: skip


async def test_watch_due_wakes_for_work_made_due_elsewhere(
    durable_harness: DurableHarness,
) -> None:
    wakes = Wakes()
    async with durable_harness.new_store() as watcher, durable_harness.new_store() as other:
        if not durable_harness.notifies:
            with anyio.fail_after(5):
                await watcher.watch_due(["f"], wakes)  # returns at once: workers poll
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.watch_due, ["f"], wakes)
            await wakes.next()  # listening (work made due before may have been missed)
            wakes.clear()
            await other.create(record("new", time.time()))
            await wakes.next()  # a new execution, due now

            # Parked until a signal: the signal wakes.
            [claimed] = await other.claim(
                "w", now=time.time(), lease_until=time.time() + 30, limit=1, flows=["f"]
            )
            lease = Lease(claimed.id, "w", claimed.lease_token)
            await other.suspend(
                lease, status="waiting", blocked_on="go", wake_at=None, now=time.time()
            )
            wakes.clear()
            await other.send_signal(claimed.id, "go", "1", time.time())
            await wakes.next()
            # A worker takes that work: nothing is due any more.
            [again] = await other.claim(
                "w", now=time.time(), lease_until=time.time() + 30, limit=1, flows=["f"]
            )
            await other.finish(
                Lease(again.id, "w", again.lease_token),
                status="completed", result="1", error=None, now=time.time(),
            )  # fmt: skip

            # A timer: a wake comes once it is due, with nothing else happening.
            due = time.time() + 0.5
            await other.create(record("timer", due))
            while (woken := await wakes.next()) < due:
                pass
            assert woken >= due
            tg.cancel_scope.cancel()
