"""The `DurableStore` contract's `rolling_back` status, run against every store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from stream_gateway.durable import AuditEntry, DurableStore, LeaseLostError

from .conftest import NewStore
from .test_durable_store import FLOWS, T0, claim_one, entry, record

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(new_store: NewStore) -> AsyncIterator[DurableStore]:
    async with new_store() as s:
        yield s


async def test_rolling_back_is_leased_fenced_and_claimed_as_rolling_back(
    store: DurableStore,
) -> None:
    await store.create(record(1))
    lease = await claim_one(store)
    line = AuditEntry(record(1).id, "status", T0, None, {"status": "rolling_back"})
    await store.set_status(lease, "rolling_back", T0, audit=[line])
    assert (await store.get(record(1).id)).status == "rolling_back"
    await store.append(lease, entry(0, "undo", branch="$rollback"), T0)  # still fenced in
    assert await store.renew("w1", [lease], T0 + 20) == {record(1).id}
    assert [a.kind for a in await store.audit(execution_id=record(1).id)] == ["status"]
    # The worker dies: its lease lapses and another takes over, still rolling back.
    [again] = await store.claim("w2", now=T0 + 21, lease_until=T0 + 30, limit=1, flows=FLOWS)
    assert again.status == "rolling_back" and again.lease_owner == "w2"
    with pytest.raises(LeaseLostError):
        await store.set_status(lease, "running", T0)
    new = await claim_one(store, "w2", now=T0 + 40)
    # A handler's retry backoff parks it; the next claim resumes the rollback.
    await store.suspend(new, status="rolling_back", blocked_on="x", wake_at=T0 + 50, now=T0)
    parked = await store.get(record(1).id)
    assert parked.status == "rolling_back" and parked.lease_owner is None
    assert await store.claim("w3", now=T0 + 45, lease_until=T0 + 60, limit=1, flows=FLOWS) == []
    [back] = await store.claim("w3", now=T0 + 50, lease_until=T0 + 60, limit=1, flows=FLOWS)
    assert back.status == "rolling_back"
    last = await claim_one(store, "w3", now=T0 + 61)
    await store.set_status(last, "running", T0)
    await store.finish(last, status="failed", result=None, error={"code": "rollback"}, now=T0)
    assert (await store.get(record(1).id)).status == "failed"


async def test_set_status_takes_only_running_or_rolling_back(store: DurableStore) -> None:
    await store.create(record(1))
    lease = await claim_one(store)
    for status in ("completed", "sleeping", "pending"):
        with pytest.raises(ValueError):
            await store.set_status(lease, status, T0)
    assert (await store.get(record(1).id)).status == "running"
