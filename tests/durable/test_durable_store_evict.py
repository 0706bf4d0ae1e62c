"""The `DurableStore` contract for evictions (`request_evict`, ``evict_requested``) and
batched journal writes (``append(..., preceding=)``), run against every store."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stream_gateway.durable import (
    AuditEntry,
    DurableStore,
    ExecutionNotFoundError,
    LeaseLostError,
    SqliteDurableStore,
)
from stream_gateway.durable.sqlite import _SCHEMA

from .conftest import NewStore
from .test_durable_store import FLOWS, T0, claim_one, entry, record

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(new_store: NewStore) -> AsyncIterator[DurableStore]:
    async with new_store() as s:
        yield s


def line(i: int, kind: str = "evict") -> AuditEntry:
    return AuditEntry(record(i).id, kind, T0)


async def test_evict_flags_a_leased_execution_until_it_is_parked(store: DurableStore) -> None:
    await store.create(record(1))
    assert not await store.request_evict(record(1).id, T0, audit=[line(1)])  # pending
    lease = await claim_one(store)
    assert not (await store.get(record(1).id)).evict_requested
    assert await store.request_evict(record(1).id, T0, audit=[line(1)])
    flagged = await store.get(record(1).id)
    assert flagged.evict_requested and flagged.status == "running"
    await store.append(lease, entry(0, "a"), T0)  # the lease is still valid
    assert set(await store.renew("w1", [lease], T0 + 20)) == {record(1).id}
    assert (await store.get_many([record(1).id]))[record(1).id].evict_requested
    await store.suspend(lease, status="pending", blocked_on=None, wake_at=T0, now=T0)
    parked = await store.get(record(1).id)
    assert not parked.evict_requested and parked.status == "pending"
    assert [a.kind for a in await store.audit(execution_id=record(1).id)] == ["evict"]


async def test_claim_finish_and_cancel_clear_the_flag(store: DurableStore) -> None:
    await store.create(record(1))
    await store.create(record(2))
    lease = await claim_one(store)
    assert await store.request_evict(lease.execution_id, T0)
    await store.finish(lease, status="completed", result="1", error=None, now=T0)
    assert not (await store.get(lease.execution_id)).evict_requested
    assert not await store.request_evict(lease.execution_id, T0)  # finished

    other = await claim_one(store)
    assert await store.request_evict(other.execution_id, T0)
    assert await store.cancel(other.execution_id, {"code": "CANCELLED"}, T0)
    assert not (await store.get(other.execution_id)).evict_requested
    with pytest.raises(ExecutionNotFoundError):
        await store.request_evict("nope-nope-nope-nope", T0)


async def test_a_lapsed_lease_reclaimed_clears_the_flag(store: DurableStore) -> None:
    await store.create(record(1))
    await claim_one(store, now=T0)
    assert await store.request_evict(record(1).id, T0)
    [again] = await store.claim("w2", now=T0 + 11, lease_until=T0 + 21, limit=1, flows=FLOWS)
    assert not again.evict_requested and again.lease_owner == "w2"


async def test_rolling_back_can_be_evicted(store: DurableStore) -> None:
    await store.create(record(1))
    lease = await claim_one(store)
    await store.set_status(lease, "rolling_back", T0)
    assert await store.request_evict(record(1).id, T0)
    assert (await store.get(record(1).id)).evict_requested


async def test_append_writes_preceding_entries_first_all_or_nothing(
    store: DurableStore,
) -> None:
    await store.create(record(1))
    lease = await claim_one(store)
    await store.append(lease, entry(2, "c"), T0, preceding=[entry(0, "a"), entry(1, "b")])
    history = await store.history(lease.execution_id)
    assert [e.key for e in history.entries] == ["a", "b", "c"]

    # One final entry among them refuses the whole write.
    with pytest.raises(ValueError):
        await store.append(lease, entry(4, "e"), T0, preceding=[entry(3, "d"), entry(0, "a")])
    with pytest.raises(ValueError):
        await store.append(lease, entry(3, "d"), T0, preceding=[entry(3, "d")])
    assert [e.key for e in (await store.history(lease.execution_id)).entries] == ["a", "b", "c"]

    # A non-final entry may be followed by its final successor in one write.
    await store.append(lease, entry(5, "f", "completed"), T0, preceding=[entry(5, "f", "retrying")])
    [last] = [e for e in (await store.history(lease.execution_id)).entries if e.key == "f"]
    assert last.status == "completed"

    await store.suspend(lease, status="pending", blocked_on=None, wake_at=T0, now=T0)
    with pytest.raises(LeaseLostError):
        await store.append(lease, entry(7, "h"), T0, preceding=[entry(6, "g")])
    assert "g" not in [e.key for e in (await store.history(lease.execution_id)).entries]


async def test_a_version_3_sqlite_file_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite3"
    old = _SCHEMA.replace(",\n    evict_requested INTEGER NOT NULL DEFAULT 0", "")
    old = old.replace("\n    stream_at INTEGER,", "")
    assert "evict_requested" not in old and "stream_at" not in old
    with sqlite3.connect(path) as conn:
        conn.executescript(old)
        conn.execute(
            "INSERT INTO executions (id, flow, status, input, created_at, updated_at, due_at) "
            "VALUES (?, 'f', 'pending', 'null', ?, ?, ?)",
            (record(1).id, T0, T0, T0),
        )
        conn.execute("PRAGMA user_version = 3")
    conn.close()
    async with SqliteDurableStore(path) as store:
        kept = await store.get(record(1).id)
        assert kept.status == "pending" and not kept.evict_requested
        lease = await claim_one(store)
        assert await store.request_evict(record(1).id, T0)
        await store.append(lease, dataclasses.replace(entry(0, "s"), stream_at=7), T0)
    async with SqliteDurableStore(path) as again:  # opening it again changes nothing
        assert (await again.get(record(1).id)).evict_requested
        [kept_entry] = (await again.history(record(1).id)).entries
        assert kept_entry.key == "s" and kept_entry.stream_at == 7
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (4,)
    conn.close()
