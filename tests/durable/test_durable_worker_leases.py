"""A worker whose lease lapses while it runs an execution, then claims it again."""

from __future__ import annotations

import time
from collections.abc import Collection

import anyio
import pytest

from stream_gateway.durable import (
    DurableContext,
    DurableEngine,
    DurableStoreError,
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
