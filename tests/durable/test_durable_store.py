"""The `DurableStore` contract, run against every store (memory, SQLite).

Stores made by one ``new_store`` share their data, as processes sharing a file do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from stream_gateway.durable import (
    AuditEntry,
    DurableStore,
    DurableStoreError,
    ExecutionNotFoundError,
    ExecutionRecord,
    JournalEntry,
    Lease,
    LeaseLostError,
    SqliteDurableStore,
)

from .conftest import NewStore

pytestmark = pytest.mark.anyio

T0 = 1_000_000.0
FLOWS = ["f", "g"]


@pytest.fixture
async def store(new_store: NewStore) -> AsyncIterator[DurableStore]:
    async with new_store() as s:
        yield s


def record(
    i: int, *, flow: str = "f", due: float | None = T0, owner: str | None = None
) -> ExecutionRecord:
    return ExecutionRecord(
        id=f"exec-{i:012d}",
        flow=flow,
        input="null",
        owner=owner,
        created_at=T0,
        updated_at=T0,
        due_at=due,
    )


async def claim_one(store: DurableStore, worker: str = "w1", now: float = T0) -> Lease:
    [claimed] = await store.claim(worker, now=now, lease_until=now + 10, limit=1, flows=FLOWS)
    return Lease(claimed.id, worker, claimed.lease_token)


def entry(seq: int, key: str, status: str = "completed", branch: str = "") -> JournalEntry:
    return JournalEntry(seq, "step", key, status, "1", started_at=T0, branch=branch)  # type: ignore[arg-type]


async def test_create_is_insert_or_get(store: DurableStore) -> None:
    first, created = await store.create(record(1))
    again, created_again = await store.create(record(1, flow="g"))
    second, _ = await store.create(record(2))
    assert created and not created_again
    assert again.flow == "f" and again.seq == first.seq < second.seq
    assert (await store.get(record(1).id)).status == "pending"
    with pytest.raises(ExecutionNotFoundError):
        await store.get("nope-nope-nope-nope")
    assert set(await store.get_many([record(1).id, "missing-missing-1"])) == {record(1).id}


async def test_claim_takes_due_executions_of_known_flows_only(store: DurableStore) -> None:
    await store.create(record(1, due=T0 - 1))
    await store.create(record(2, due=T0 + 60))  # a timer not yet due
    await store.create(record(3, due=None))  # waits for an event
    await store.create(record(4, flow="other", due=T0))
    claimed = await store.claim("w1", now=T0, lease_until=T0 + 10, limit=10, flows=FLOWS)
    assert [r.id for r in claimed] == [record(1).id]
    assert claimed[0].status == "running" and claimed[0].lease_owner == "w1"
    assert claimed[0].due_at == T0 + 10
    assert await store.claim("w2", now=T0, lease_until=T0 + 10, limit=10, flows=FLOWS) == []


async def test_concurrent_claims_never_overlap(new_store: NewStore) -> None:
    for i in range(40):
        await (s := new_store()).create(record(i))
        await s.close()
    got: dict[str, list[str]] = {}

    async def claimer(name: str) -> None:
        async with new_store() as s:
            while True:
                batch = await s.claim(name, now=T0, lease_until=T0 + 10, limit=3, flows=FLOWS)
                if not batch:
                    return
                got.setdefault(name, []).extend(r.id for r in batch)

    async with anyio.create_task_group() as tg:
        for name in ("a", "b", "c"):
            tg.start_soon(claimer, name)
    every = [i for ids in got.values() for i in ids]
    assert sorted(every) == sorted(record(i).id for i in range(40))  # each exactly once


async def test_writes_are_fenced_by_the_lease(store: DurableStore) -> None:
    await store.create(record(1))
    old = await claim_one(store, "w1")
    await store.append(old, entry(0, "a"), T0)
    # The lease lapses (w1 stalled) and w2 takes over.
    new = await claim_one(store, "w2", now=T0 + 11)
    assert new.token != old.token
    for write in (
        store.append(old, entry(1, "b"), T0),
        store.suspend(old, status="sleeping", blocked_on="b", wake_at=T0, now=T0),
        store.finish(old, status="completed", result="1", error=None, now=T0),
    ):
        with pytest.raises(LeaseLostError):
            await write
    assert await store.renew("w1", [old], T0 + 100) == set()
    assert await store.renew("w2", [new], T0 + 100) == {new.execution_id}
    assert (await store.get(new.execution_id)).due_at == T0 + 100
    await store.append(new, entry(1, "b"), T0)
    assert [e.key for e in (await store.history(new.execution_id)).entries] == ["a", "b"]


async def test_a_restarted_worker_reclaims_its_own_leases(store: DurableStore) -> None:
    await store.create(record(1))
    await claim_one(store, "stable-id")
    assert await store.claim("stable-id", now=T0, lease_until=T0 + 10, limit=5, flows=FLOWS) == []
    again = await store.claim(
        "stable-id", now=T0, lease_until=T0 + 10, limit=5, flows=FLOWS, reclaim_own=True
    )
    assert [r.id for r in again] == [record(1).id]
    assert (
        await store.claim(
            "someone", now=T0, lease_until=T0 + 10, limit=5, flows=FLOWS, reclaim_own=True
        )
        == []
    )


async def test_append_replaces_only_non_final_entries(store: DurableStore) -> None:
    await store.create(record(1))
    lease = await claim_one(store)
    await store.append(lease, entry(0, "a", "retrying"), T0)
    await store.append(lease, entry(0, "a", "completed"), T0)
    with pytest.raises(ValueError):
        await store.append(lease, entry(0, "a", "failed"), T0)
    await store.append(lease, entry(0, "a", "completed", branch="j:x"), T0)  # another address
    stored, other = (await store.history(lease.execution_id)).entries
    assert (stored.key, stored.status, stored.result) == ("a", "completed", "1")
    assert (other.branch, other.key) == ("j:x", "a")


async def test_a_refused_append_writes_nothing(store: DurableStore) -> None:
    """An append the contract refuses (here: its entry is final) is all or nothing:
    the signal it would consume stays queued, its audit line and the entries it
    carries before its own are not stored."""
    await store.create(record(1))
    flow_id = record(1).id
    assert await store.send_signal(flow_id, "go", "1", T0)
    [signal] = (await store.history(flow_id)).signals
    lease = await claim_one(store)
    await store.append(lease, entry(0, "a"), T0)
    before = await store.audit(execution_id=flow_id)
    with pytest.raises(ValueError):
        await store.append(
            lease,
            entry(0, "a", "failed"),
            T0,
            consume=[signal.id],
            audit=[AuditEntry(flow_id, "note", T0, "a")],
            preceding=[entry(1, "b")],
        )
    history = await store.history(flow_id)
    assert [s.id for s in history.signals] == [signal.id]
    assert [(e.key, e.status) for e in history.entries] == [("a", "completed")]
    assert await store.audit(execution_id=flow_id) == before


async def test_timers_make_executions_due(store: DurableStore) -> None:
    await store.create(record(1))
    lease = await claim_one(store)
    await store.suspend(lease, status="sleeping", blocked_on="nap", wake_at=T0 + 5, now=T0)
    slept = await store.get(lease.execution_id)
    assert (slept.status, slept.blocked_on, slept.due_at) == ("sleeping", "nap", T0 + 5)
    assert await store.claim("w", now=T0 + 4, lease_until=T0 + 9, limit=1, flows=FLOWS) == []
    [woken] = await store.claim("w", now=T0 + 5, lease_until=T0 + 9, limit=1, flows=FLOWS)
    assert woken.blocked_on is None


async def test_waiters_wake_when_their_target_ends(store: DurableStore) -> None:
    for i in (1, 2):
        await store.create(record(i))
    w1 = await claim_one(store)  # 1 waits for 2
    await store.suspend(
        w1, status="waiting", blocked_on="w", wake_at=None, now=T0, wait_for=[record(2).id]
    )
    target = await claim_one(store)
    assert target.execution_id == record(2).id
    assert (await store.get(record(1).id)).due_at is None
    await store.finish(target, status="completed", result='"ok"', error=None, now=T0 + 1)
    assert (await store.get(record(1).id)).due_at == T0 + 1
    # Waiting for something already finished (or missing) is due at once.
    w3 = await claim_one(store, now=T0 + 1)
    assert w3.execution_id == record(1).id
    await store.suspend(
        w3,
        status="waiting",
        blocked_on="w",
        wake_at=None,
        now=T0 + 2,
        wait_for=[record(2).id, "missing-missing-1"],
    )
    assert (await store.get(record(1).id)).due_at == T0 + 2


async def test_signals_are_queued_fifo_consumed_once_and_wake_waiters(
    store: DurableStore,
) -> None:
    await store.create(record(1))
    flow_id = record(1).id
    assert await store.send_signal(flow_id, "go", "1", T0)  # before anyone waits: kept
    assert await store.send_signal(flow_id, "go", "2", T0)
    assert await store.send_signal(flow_id, "$resume:a", "3", T0, unique=True)
    assert not await store.send_signal(flow_id, "$resume:a", "4", T0, unique=True)
    signals = (await store.history(flow_id)).signals
    assert [(s.name, s.payload) for s in signals] == [("go", "1"), ("go", "2"), ("$resume:a", "3")]
    lease = await claim_one(store)
    await store.append(lease, entry(0, "w"), T0, consume=[signals[0].id])
    with pytest.raises(ValueError):  # consumed once
        await store.append(lease, entry(1, "x"), T0, consume=[signals[0].id])
    assert [s.payload for s in (await store.history(flow_id)).signals] == ["2", "3"]
    # Parked on a name with a signal waiting: due at once (never missed).
    await store.suspend(
        lease, status="waiting", blocked_on="w", wake_at=None, now=T0 + 1, signals=["go"]
    )
    assert (await store.get(flow_id)).due_at == T0 + 1
    lease = await claim_one(store, now=T0 + 1)
    await store.suspend(
        lease, status="waiting", blocked_on="w", wake_at=None, now=T0 + 1, signals=["other"]
    )
    assert (await store.get(flow_id)).due_at is None
    assert await store.send_signal(flow_id, "other", "5", T0 + 2)
    woken = await store.get(flow_id)
    assert (woken.status, woken.due_at) == ("pending", T0 + 2)
    with pytest.raises(ExecutionNotFoundError):
        await store.send_signal("missing-missing-1", "go", "1", T0)


async def test_recover_and_wake(store: DurableStore) -> None:
    await store.create(record(1))
    flow_id = record(1).id
    lease = await claim_one(store)
    await store.append(lease, entry(0, "a"), T0)
    await store.append(lease, entry(1, "b", "failed"), T0)
    assert not await store.recover(flow_id, T0)  # running, not failed
    await store.finish(lease, status="failed", result=None, error={"code": "x"}, now=T0)
    assert not await store.wake(flow_id, T0)
    assert not await store.send_signal(flow_id, "go", "1", T0)  # finished
    assert await store.recover(flow_id, T0 + 1)
    again = await store.get(flow_id)
    assert (again.status, again.due_at, again.error) == ("pending", T0 + 1, None)
    assert [e.key for e in (await store.history(flow_id)).entries] == ["a"]
    lease = await claim_one(store, now=T0 + 1)
    await store.suspend(lease, status="sleeping", blocked_on="z", wake_at=T0 + 99, now=T0 + 1)
    assert await store.wake(flow_id, T0 + 2)
    assert (await store.get(flow_id)).due_at == T0 + 2


async def test_prune_forgets_branches_and_their_children(store: DurableStore) -> None:
    await store.create(record(1))
    lease = await claim_one(store)
    for branch in ("", "l@1", "l@1/j:a", "l@10", "l@2"):
        await store.append(lease, entry(0, "s", branch=branch), T0)
    await store.prune(lease, ["l@1"], T0)
    left = [e.branch for e in (await store.history(lease.execution_id)).entries]
    assert left == ["", "l@10", "l@2"]


async def test_cancel_drops_timers_and_revokes_the_lease(store: DurableStore) -> None:
    for i in (1, 2):
        await store.create(record(i))
    sleeping = await claim_one(store)
    await store.suspend(sleeping, status="sleeping", blocked_on="nap", wake_at=T0 + 1, now=T0)
    running = await claim_one(store)
    error = {"status": "CANCELLED", "message": "flow cancelled"}
    assert await store.cancel(sleeping.execution_id, error, T0)
    assert await store.cancel(running.execution_id, error, T0)
    assert not await store.cancel(running.execution_id, error, T0)
    for flow_id in (sleeping.execution_id, running.execution_id):
        ended = await store.get(flow_id)
        assert (ended.status, ended.due_at, ended.error) == ("cancelled", None, error)
    assert await store.claim("w", now=T0 + 99, lease_until=T0 + 200, limit=9, flows=FLOWS) == []
    with pytest.raises(LeaseLostError):
        await store.finish(running, status="completed", result="1", error=None, now=T0)


async def test_delete_only_finished_executions(store: DurableStore) -> None:
    await store.create(record(1))
    flow_id = record(1).id
    assert not await store.delete(flow_id)
    lease = await claim_one(store)
    await store.append(lease, entry(0, "a"), T0)
    await store.finish(lease, status="completed", result="1", error=None, now=T0)
    assert await store.delete(flow_id)
    with pytest.raises(ExecutionNotFoundError):
        await store.history(flow_id)
    with pytest.raises(ExecutionNotFoundError):
        await store.delete(flow_id)


async def test_list_filters_and_pages_newest_first(store: DurableStore) -> None:
    for i in range(7):
        await store.create(record(i, flow="f" if i % 2 else "g", owner="me" if i < 5 else None))
    everything = await store.list_executions(limit=100)
    assert [r.id for r in everything] == [record(i).id for i in reversed(range(7))]
    page1 = await store.list_executions(owner="me", any_owner=False, limit=2)
    page2 = await store.list_executions(owner="me", any_owner=False, after=page1[-1].seq, limit=2)
    assert [r.id for r in page1 + page2] == [record(i).id for i in (4, 3, 2, 1)]
    assert [r.id for r in await store.list_executions(flow="f", owner=None, any_owner=False)] == [
        record(5).id
    ]
    assert len(await store.list_executions(status="running")) == 0


async def test_a_sqlite_file_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE journal (execution_id TEXT, seq INTEGER)")
    with pytest.raises(DurableStoreError) as refused:
        async with SqliteDurableStore(path):
            pass
    assert "another version" in refused.value.message and not refused.value.transient
    async with SqliteDurableStore(tmp_path / "new.sqlite3") as fresh:  # a new file is made
        assert await fresh.get_many(["x"]) == {}
