"""A flow using every v2 primitive (note, switch, removed, checkpoint, rollback
handlers, manual rollback, RollbackError, ephemeral steps, evict) stopped after
*every* journal write: it replays from the store each time and ends in the same
state as an uninterrupted run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from stream_gateway.durable import (
    AuditEntry,
    Case,
    DurableContext,
    DurableEngine,
    DurableStore,
    DurableStoreError,
    JournalEntry,
    Lease,
    RollbackError,
    _driver,
    durable_flow,
)

from .conftest import NewStore
from .helpers import finished

pytestmark = pytest.mark.anyio


class CrashAfterEveryWrite:
    """Wraps a store: every journal write is committed, then the run "crashes"
    (a transient store error), so the next run replays from the store."""

    def __init__(self, store: DurableStore) -> None:
        self.store = store
        self.crashes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def append(
        self,
        lease: Lease,
        entry: JournalEntry,
        now: float,
        *,
        consume: Any = (),
        audit: Sequence[AuditEntry] = (),
        preceding: Sequence[JournalEntry] = (),
    ) -> None:
        await self.store.append(
            lease, entry, now, consume=consume, audit=audit, preceding=preceding
        )
        self.crashes += 1
        raise DurableStoreError("crash right after the write")


def make_flows(effects: Counter[str]) -> list[Any]:
    def effect(name: str, value: Any = None) -> Any:
        def run(*_: Any) -> Any:
            effects[name] += 1
            return value

        return run

    @durable_flow(name="every")
    async def every(amount: int, ctx: DurableContext) -> Any:
        async def evict_me() -> str:
            if not effects["evict"]:  # evicts its own run once, mid-step
                effects["evict"] += 1
                await ctx.engine.evict(ctx.flow_id)
                await anyio.sleep_forever()
            effects["evicted-step"] += 1
            return "E"

        await ctx.note("start", amount=amount)
        await ctx.run("cheap", effect("cheap", "c"), ephemeral=True)
        await ctx.run("evict-me", evict_me)
        await ctx.run("cheap-2", effect("cheap-2", "c"), ephemeral=True)
        kind, routed = await ctx.switch(
            "route",
            amount,
            [Case("small", lambda a: a < 10, effect("small", "s"))],
            default=effect("large", "L"),
        )
        await ctx.removed("old_step")
        await ctx.rollback_checkpoint("booking")
        await ctx.run("flight", effect("flight", "F"), rollback=effect("undo-flight"))
        await ctx.run("hotel", effect("hotel", "H"), rollback=effect("undo-hotel"))
        await ctx.rollback()
        await ctx.run("after", effect("after", 1))
        await ctx.run("last", effect("last", 2), ephemeral=True)  # flushed by the end
        return [kind, routed]

    def decline() -> None:
        effects["decline"] += 1
        raise RollbackError("declined")

    @durable_flow(name="declined")
    async def declined(_: None, ctx: DurableContext) -> Any:
        await ctx.rollback_checkpoint("start")
        await ctx.run("a", effect("a", 1), rollback=effect("undo-a"))
        await ctx.run("b", effect("b", 2), rollback=effect("undo-b"))
        await ctx.run("charge", decline)

    return [every, declined]


async def run_both(store: DurableStore) -> tuple[Any, Counter[str]]:
    effects: Counter[str] = Counter()
    flows = make_flows(effects)
    engine = DurableEngine(flows, store=store, poll_interval=0.02)
    outcome = {}
    async with engine, engine.worker(poll_interval=0.02, lease=5.0, grace=1.0):
        for flow, value in ((flows[0], 50), (flows[1], None)):
            op = await finished(engine, (await engine.schedule(flow, value)).name)
            detail = await engine.detail(op.name)
            outcome[flow.name] = {
                "status": op.status,
                "response": op.response,
                "error": op.error.to_json() if op.error else None,
                "journal": [(e.path, e.kind, e.status, e.result) for e in detail.steps],
                "timeline": [
                    (a.kind, a.step, a.data.get("status"), a.data.get("case"))
                    for a in detail.timeline
                    if not (a.kind == "status" and a.data["status"] in ("running", "pending"))
                ],
            }
    return outcome, effects


async def test_a_stop_after_every_write_ends_in_the_same_state(
    new_store: NewStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_driver, "RETRY_LATER", 0.0)
    plain, plain_effects = await run_both(new_store())
    crashing = CrashAfterEveryWrite(new_store())
    replayed, replayed_effects = await run_both(crashing)  # type: ignore[arg-type]

    assert crashing.crashes >= 15
    assert replayed == plain
    assert plain["every"]["response"] == ["default", "L"]
    assert plain["declined"]["error"]["message"] == "declined"
    # Each side effect once: every write is committed before the stop, so a stop
    # never repeats a step (the crash comes after the journal entry).
    assert replayed_effects == plain_effects
    assert plain_effects == Counter(
        {
            "large": 1,
            "flight": 1,
            "hotel": 1,
            "undo-hotel": 1,
            "undo-flight": 1,
            "after": 1,
            "a": 1,
            "cheap": 1,
            "cheap-2": 1,
            "evict": 1,
            "evicted-step": 1,
            "last": 1,
            "b": 1,
            "decline": 1,
            "undo-b": 1,
            "undo-a": 1,
        }
    )
