"""A worker whose lease lapses while it runs an execution, or that cannot renew it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import Any

import anyio
import pytest

from stream_gateway.durable import (
    DurableContext,
    DurableEngine,
    DurableStoreError,
    ExecutionRecord,
    InMemoryDurableStore,
    Lease,
    durable_flow,
)

pytestmark = pytest.mark.anyio


class RenewalsFailAtFirst(InMemoryDurableStore):
    """A store whose lease renewals fail for the first ``outage`` seconds (as when
    the backend is unreachable), so a running execution's lease lapses."""

    def __init__(self, outage: float) -> None:
        super().__init__()
        self.until = time.monotonic() + outage

    async def renew(self, worker: str, leases: Collection[Lease], lease_until: float) -> set[str]:
        if time.monotonic() < self.until:
            raise DurableStoreError("the durable store is unavailable")
        return await super().renew(worker, leases, lease_until)


@durable_flow(input=float, output=str)
async def slow(seconds: float, ctx: DurableContext) -> str:
    async def work() -> str:
        await anyio.sleep(seconds)
        return "done"

    result: str = await ctx.run("work", work)
    return result


async def test_an_execution_claimed_again_by_its_own_worker_keeps_the_worker_up() -> None:
    # The lease (0.3 s) lapses during the 0.6 s step while renewals fail; the same
    # worker claims the execution again. The stale run must make way: it used to
    # remove the new run's bookkeeping, and the worker died on a KeyError.
    store = RenewalsFailAtFirst(outage=1.0)
    engine = DurableEngine([slow], store=store, poll_interval=0.02)
    async with engine:
        with anyio.fail_after(30):
            async with engine.worker(lease=0.3, poll_interval=0.02, grace=1.0):
                op = await engine.schedule(slow, 0.6)
                final = await engine.wait(op.name)
    assert final.status == "completed" and final.response == "done"


class RenewalsStall(InMemoryDurableStore):
    """A store in which worker ``stalled``'s renewals hang (``mode="hang"``) or raise
    (``mode="raise"``) and which gives that worker nothing after its first claim (so
    it cannot take its lapsed lease back); every claim's lease end is recorded."""

    def __init__(self, stalled: str, mode: str) -> None:
        super().__init__()
        self.stalled = stalled
        self.mode = mode
        self.claims: list[tuple[str, float, float]] = []  # (worker, claimed at, lease until)

    async def claim(
        self,
        worker: str,
        *,
        now: float,
        lease_until: float,
        limit: int,
        flows: Collection[str],
        reclaim_own: bool = False,
    ) -> list[ExecutionRecord]:
        if worker == self.stalled and any(w == worker for w, _, _ in self.claims):
            return []
        claimed = await super().claim(
            worker,
            now=now,
            lease_until=lease_until,
            limit=limit,
            flows=flows,
            reclaim_own=reclaim_own,
        )
        if claimed:
            self.claims.append((worker, now, lease_until))
        return claimed

    async def renew(self, worker: str, leases: Collection[Lease], lease_until: float) -> set[str]:
        if worker != self.stalled:
            return await super().renew(worker, leases, lease_until)
        if self.mode == "hang":
            await anyio.sleep_forever()
        raise DurableStoreError("the durable store is unavailable")


@pytest.mark.parametrize("mode", ["hang", "raise"])
async def test_a_run_whose_renewals_fail_stops_before_its_lease_ends(mode: str) -> None:
    # Worker "a" claims the execution, then cannot renew its lease (the store hangs or
    # fails). It must stop the step before the lease it claimed ends: worker "b" claims
    # the execution once that lease lapses, and the two must never run it at once.
    # (Before a worker gave renewals up, the first attempt went on until the worker
    # stopped; the margin the worker keeps is a sixth of the lease.)
    lease = 1.5
    store = RenewalsStall("a", mode)
    attempts: list[list[float]] = []
    started = anyio.Event()

    @durable_flow(name="ticking", input=int, output=int)
    async def ticking(ticks: int, ctx: DurableContext) -> int:
        async def tick() -> int:
            stamps: list[float] = []
            attempts.append(stamps)
            started.set()
            # The first attempt ticks for three leases unless stopped; later ones finish.
            for _ in range(ticks if len(attempts) == 1 else 1):
                stamps.append(time.time())
                await anyio.sleep(0.01)
            return len(stamps)

        done: int = await ctx.run("tick", tick, retry=None)
        return done

    first = DurableEngine([ticking], store=store, poll_interval=0.02)
    second = DurableEngine([ticking], store=store, poll_interval=0.02)
    async with first, second:
        with anyio.fail_after(30):
            async with first.worker(worker_id="a", lease=lease, poll_interval=0.02, grace=0.1):
                op = await first.schedule(ticking, int(3 * lease / 0.01))
                await started.wait()
                async with second.worker(worker_id="b", lease=lease, poll_interval=0.02, grace=0.1):
                    final = await second.wait(op.name)
    assert final.status == "completed" and final.response == 1
    (a, a_claimed, a_until), (b, b_claimed, _) = store.claims
    assert (a, b) == ("a", "b")
    assert len(attempts) == 2 and attempts[0][0] >= a_claimed
    stopped_at = attempts[0][-1]
    assert stopped_at < a_until, f"ran {stopped_at - a_until:.3f}s past its lease"
    assert stopped_at < attempts[1][0] and stopped_at < b_claimed


async def test_no_step_starts_in_the_last_third_of_a_lease_not_renewed() -> None:
    # Worker "a" cannot renew (its renewals hang): it gives up the renewal when a sixth
    # of the lease is left. Steps it started in between could still run when another
    # worker takes over; so no step starts with less than a third of the lease left:
    # the run is abandoned instead, and replays elsewhere.
    lease = 3.0
    store = RenewalsStall("a", "hang")
    starts: list[float] = []
    started = anyio.Event()

    @durable_flow(name="stepping", input=int, output=int)
    async def stepping(steps: int, ctx: DurableContext) -> int:
        for i in range(steps):

            async def step() -> None:
                starts.append(time.time())
                started.set()
                await anyio.sleep(0.02)

            await ctx.run(f"s{i}", step)
        return steps

    first = DurableEngine([stepping], store=store, poll_interval=0.02)
    second = DurableEngine([stepping], store=store, poll_interval=0.02)
    async with first, second:
        with anyio.fail_after(60):
            async with first.worker(worker_id="a", lease=lease, poll_interval=0.02, grace=0.1):
                op = await first.schedule(stepping, int(2 * lease / 0.02))
                await started.wait()
                async with second.worker(worker_id="b", lease=lease, poll_interval=0.02, grace=0.1):
                    final = await second.wait(op.name)
    assert final.status == "completed"
    (a, _, a_until), (b, b_claimed, _) = store.claims
    assert (a, b) == ("a", "b")
    last_a = max(at for at in starts if at < b_claimed)  # "b" claims once a's lease lapsed
    # Without the check steps start until a sixth is left (the renewal given up).
    assert last_a < a_until - lease / 3 + lease / 12, (
        f"a step started {a_until - last_a:.2f}s before the lease's end"
    )


async def _foreign_cancellation() -> None:
    """Raise a CancelledError that no cancel scope sent, as a client library does when
    it cancels its own call (gRPC's asyncio channel does under load)."""
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


class StoreCallsCancelledOnce(InMemoryDurableStore):
    """A store whose first call to each of ``methods`` raises a foreign CancelledError."""

    def __init__(self, *methods: str) -> None:
        super().__init__()
        self.pending = set(methods)

    async def _maybe(self, method: str) -> None:
        if method in self.pending:
            self.pending.discard(method)
            await _foreign_cancellation()

    async def renew(self, worker: str, leases: Collection[Lease], lease_until: float) -> set[str]:
        await self._maybe("renew")
        return await super().renew(worker, leases, lease_until)

    async def claim(self, worker: str, **kwargs: Any) -> list[ExecutionRecord]:
        await self._maybe("claim")
        return await super().claim(worker, **kwargs)

    async def append(self, *args: Any, **kwargs: Any) -> Any:
        await self._maybe("append")
        return await super().append(*args, **kwargs)


@pytest.mark.parametrize("method", ["renew", "claim", "append"])
async def test_a_foreign_cancellation_from_the_store_never_takes_the_worker_down(
    method: str,
) -> None:
    # A CancelledError raised by a store call that no cancel scope of the worker sent
    # used to end that task with it, and the worker's task group then cancelled every
    # run and loop: the worker process died. It is now one failed call.
    store = StoreCallsCancelledOnce(method)
    engine = DurableEngine([slow], store=store, poll_interval=0.02)
    async with engine:
        with anyio.fail_after(30):
            async with engine.worker(lease=0.3, poll_interval=0.02, grace=1.0) as worker:
                first = await engine.schedule(slow, 0.4)
                assert (await engine.wait(first.name)).status == "completed"
                assert not store.pending, f"{method} was never called"
                # Still working: a later execution runs too.
                second = await engine.schedule(slow, 0.05)
                assert (await engine.wait(second.name)).response == "done"
                assert worker.running == 0
