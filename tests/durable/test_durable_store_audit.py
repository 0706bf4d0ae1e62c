"""The `DurableStore` contract's audit timeline, run against every store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from stream_gateway.durable import AuditEntry, DurableStore, LeaseLostError

from .conftest import NewStore
from .test_durable_store import T0, claim_one, entry, record

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(new_store: NewStore) -> AsyncIterator[DurableStore]:
    async with new_store() as s:
        yield s


def line(i: int, kind: str, **data: object) -> AuditEntry:
    return AuditEntry(record(i).id, kind, T0, None, dict(data))


async def kinds(store: DurableStore, i: int) -> list[str]:
    return [a.kind for a in await store.audit(execution_id=record(i).id)]


async def test_audit_lines_are_stored_with_the_writes_they_describe(store: DurableStore) -> None:
    await store.create(record(1), audit=[line(1, "created")])
    await store.create(record(1), audit=[line(1, "created-again")])  # exists: not stored
    lease = await claim_one(store)
    await store.append(lease, entry(0, "a"), T0, audit=[line(1, "step", n=1)])
    await store.suspend(
        lease, status="waiting", blocked_on="x", wake_at=None, now=T0, audit=[line(1, "parked")]
    )
    assert await store.send_signal(record(1).id, "s", "1", T0, audit=[line(1, "sent")])
    lease = await claim_one(store)
    await store.finish(
        lease, status="failed", result=None, error={"code": "x"}, now=T0, audit=[line(1, "end")]
    )
    assert not await store.send_signal(record(1).id, "s", "1", T0, audit=[line(1, "late")])
    assert await store.recover(record(1).id, T0, audit=[line(1, "recovered")])
    assert await store.cancel(record(1).id, {"code": "cancelled"}, T0, audit=[line(1, "stop")])
    assert not await store.cancel(record(1).id, {"code": "cancelled"}, T0, audit=[line(1, "no")])
    assert await kinds(store, 1) == [
        "created",
        "step",
        "parked",
        "sent",
        "end",
        "recovered",
        "stop",
    ]
    [step] = [a for a in await store.audit(execution_id=record(1).id) if a.kind == "step"]
    assert step.data == {"n": 1} and step.at == T0 and step.execution_id == record(1).id


async def test_a_refused_write_stores_none_of_its_audit_lines(store: DurableStore) -> None:
    await store.create(record(1))
    old = await claim_one(store, "w1")
    await claim_one(store, "w2", now=T0 + 11)  # w1's lease lapsed
    with pytest.raises(LeaseLostError):
        await store.append(old, entry(0, "a"), T0, audit=[line(1, "lost")])
    with pytest.raises(LeaseLostError):
        await store.finish(
            old, status="completed", result="1", error=None, now=T0, audit=[line(1, "lost")]
        )
    assert await kinds(store, 1) == []


async def test_audit_is_a_feed_ordered_by_seq_across_executions(store: DurableStore) -> None:
    for i in (1, 2):
        await store.create(record(i))
    await store.add_audit([line(1, "a"), line(2, "b"), line(1, "c")])
    await store.add_audit([line(2, "d")])
    every = await store.audit()
    assert [a.kind for a in every] == ["a", "b", "c", "d"]
    seqs = [a.seq for a in every]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4 and seqs[0] > 0
    assert [a.kind for a in await store.audit(after=seqs[1])] == ["c", "d"]
    assert [a.kind for a in await store.audit(after=seqs[0], limit=2)] == ["b", "c"]
    assert await kinds(store, 2) == ["b", "d"]
    assert [a.kind for a in await store.audit(execution_id=record(2).id, after=seqs[1])] == ["d"]
    assert await store.audit(execution_id="no-such-execution") == []


async def test_delete_removes_the_timeline(store: DurableStore) -> None:
    for i in (1, 2):
        await store.create(record(i))
    await store.add_audit([line(1, "a"), line(2, "b")])
    assert await store.cancel(record(1).id, {"code": "cancelled"}, T0)
    assert await store.delete(record(1).id)
    assert await kinds(store, 1) == []
    assert await kinds(store, 2) == ["b"]
    before = max(a.seq for a in await store.audit())
    await store.add_audit([line(2, "c")])
    assert (await store.audit())[-1].seq > before  # seqs are never reused
