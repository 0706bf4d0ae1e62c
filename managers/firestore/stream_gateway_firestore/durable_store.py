"""`FirestoreDurableStore`: durable flows in Cloud Firestore, shared by any number of
workers on any number of machines.

Every write that must be atomic (a claim, a fenced journal write, a signal with the
wake-up it causes, a schedule tick) is one Firestore transaction; contention makes
it run again (`in_transaction`). Claims query the due executions of the worker's
flows (``flow in [...]``, ``due_at <= now``, earliest first, an index) rather than
scanning, then take them in one transaction. A snapshot listener on the earliest due
execution tells workers when work is due (`watch_due`), so signals, new executions
and timers set by other processes wake them without waiting for their poll.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.to_thread
from google.api_core import exceptions as gexc
from google.cloud.firestore_v1 import AsyncQuery, AsyncTransaction, Client, FieldFilter, Query
from google.cloud.firestore_v1.base_document import DocumentSnapshot

from stream_gateway.durable import (
    AuditEntry,
    DurableStoreError,
    ExecutionNotFoundError,
    ExecutionRecord,
    ExecutionStatus,
    JournalEntry,
    Lease,
    LeaseLostError,
    Signal,
)
from stream_gateway.durable.records import History

from ._durable_base import FINISHED, LEASED, fields_of, held
from ._durable_calls import store_errors
from ._durable_docs import (
    JOURNAL,
    SIGNALS,
    WAITERS,
    audit_from_fields,
    dump_error,
    entry_fields,
    entry_from_fields,
    journal_id,
    record_from_fields,
    signal_id,
)
from ._durable_schedules import ScheduleMixin
from ._watch import listen_to

__all__ = ["FirestoreDurableStore"]

#: Firestore's ``in`` takes at most 30 values: more flows mean more queries.
_IN_LIMIT = 30
#: Deletes per transaction or batch, well inside Firestore's per-commit limit.
_CHUNK = 400


class FirestoreDurableStore(ScheduleMixin):
    """A `DurableStore` in Cloud Firestore (the README draws the documents).

    ``client`` is an `AsyncClient` (made from ``project`` and the environment when
    omitted, and closed with the store); ``watch_client`` the synchronous client the
    snapshot listener needs (derived from ``client`` when omitted). Collections are
    named ``{prefix}_executions``, ``{prefix}_audit``, ``{prefix}_schedules`` and
    ``{prefix}_meta``. ``rpc_timeout`` bounds every call and every transaction
    attempt; a timeout, like an unreachable backend, is a transient
    `DurableStoreError`: the engine then replays the execution later.
    """

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FirestoreDurableStore:
        """The store a URL names: ``firestore://project`` (collections ``durable_*``)
        or ``firestore://project#prefix=name`` (``?prefix=name`` too); ``options`` as
        for the constructor.

        The client finds credentials the usual way (``GOOGLE_APPLICATION_CREDENTIALS``,
        the metadata server) or the emulator (``FIRESTORE_EMULATOR_HOST``).
        """
        parts = urlsplit(url)
        if parts.scheme != "firestore" or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError("expected firestore://project or firestore://project#prefix=name")
        query = parse_qs(parts.query)
        for name, values in parse_qs(parts.fragment).items():
            query.setdefault(name, []).extend(values)
        unknown = set(query) - {"prefix"}
        if unknown:
            raise ValueError(f"unknown firestore URL parameters: {sorted(unknown)}")
        if "prefix" in query:
            options.setdefault("prefix", query["prefix"][-1])
        return cls(project=parts.netloc, **options)

    # -- reads ---------------------------------------------------------------------

    async def get(self, execution_id: str) -> ExecutionRecord:
        snap: DocumentSnapshot[Any] = await self._call(
            "reading a flow",
            self._execution(execution_id).get(retry=None, timeout=self.rpc_timeout),
        )
        if not snap.exists:
            raise ExecutionNotFoundError("flow not found")
        return record_from_fields(execution_id, fields_of(snap))

    async def get_many(self, execution_ids: Collection[str]) -> dict[str, ExecutionRecord]:
        ids = list(dict.fromkeys(execution_ids))
        found: dict[str, ExecutionRecord] = {}
        for start in range(0, len(ids), 300):
            refs = [self._execution(i) for i in ids[start : start + 300]]
            for snap in await self._call("reading flows", self._get_all(refs)):
                if snap.exists:
                    fields = fields_of(snap)
                    found[fields["id"]] = record_from_fields(fields["id"], fields)
        return found

    async def list_executions(
        self,
        *,
        status: ExecutionStatus | None = None,
        flow: str | None = None,
        owner: str | None = None,
        any_owner: bool = True,
        parent: str | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> list[ExecutionRecord]:
        query: Any = self._collection("executions")
        for field, value in (("status", status), ("flow", flow), ("parent", parent)):
            if value is not None:
                query = query.where(filter=FieldFilter(field, "==", value))
        if not any_owner:
            query = query.where(filter=FieldFilter("owner", "==", owner))
        if after is not None:
            query = query.where(filter=FieldFilter("seq", "<", after))
        query = query.order_by("seq", direction=Query.DESCENDING).limit(limit)
        snaps = await self._call("listing flows", self._query(query))
        return [record_from_fields(fields_of(s)["id"], fields_of(s)) for s in snaps]

    async def history(self, execution_id: str) -> History:
        ref = self._execution(execution_id)
        snap: DocumentSnapshot[Any] = await self._call(
            "reading a journal", ref.get(retry=None, timeout=self.rpc_timeout)
        )
        if not snap.exists:
            raise ExecutionNotFoundError("flow not found")
        journal = ref.collection(JOURNAL).order_by("ord")
        waiting = ref.collection(SIGNALS).where(filter=FieldFilter("consumed", "==", False))
        entries = await self._call("reading a journal", self._query(journal))
        signals = await self._call("reading signals", self._query(waiting))
        return History(
            [entry_from_fields(fields_of(s)) for s in entries],
            sorted(
                (Signal(f["id"], f["name"], f["payload"]) for f in map(fields_of, signals)),
                key=lambda s: s.id,
            ),
        )

    # -- creating and claiming -----------------------------------------------------

    async def create(
        self, record: ExecutionRecord, *, audit: Sequence[AuditEntry] = ()
    ) -> tuple[ExecutionRecord, bool]:
        async def body(txn: AsyncTransaction) -> tuple[ExecutionRecord, bool]:
            planned = await self._plan_create(txn, record)
            self._apply_create(txn, planned)
            if planned[1]:
                self._put_audit(txn, audit)
            return planned

        result: tuple[ExecutionRecord, bool] = await self._transact("creating a flow", body)
        return result

    def _due_queries(
        self, flows: Collection[str], now: float, limit: int, worker: str | None
    ) -> list[AsyncQuery]:
        executions: Any = self._collection("executions")
        names = sorted(flows)
        queries = [
            executions.where(filter=FieldFilter("flow", "in", names[i : i + _IN_LIMIT]))
            .where(filter=FieldFilter("due_at", "<=", now))
            .order_by("due_at")
            .limit(limit)
            for i in range(0, len(names), _IN_LIMIT)
        ]
        if worker is not None:
            queries.append(
                executions.where(filter=FieldFilter("lease_owner", "==", worker)).limit(limit)
            )
        return queries

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
        if not flows or limit <= 0:
            return []
        claimed: list[ExecutionRecord] = []
        tried: set[str] = set()
        # Candidates are read outside any transaction (no lock on the queue), then
        # each is taken in a transaction of its own, all at once: workers racing for
        # one execution queue on that document only. A candidate another worker took
        # meanwhile is skipped, and the queue is read again (a few rounds at most).
        for _ in range(3):
            wanted = limit - len(claimed)
            queries = self._due_queries(flows, now, wanted, worker if reclaim_own else None)
            seen: dict[str, float] = {}
            for query in queries:
                for snap in await self._call("looking for due flows", self._query(query)):
                    if snap.id not in tried:
                        seen[snap.id] = fields_of(snap).get("due_at") or 0.0
            candidates = sorted(seen, key=lambda d: seen[d])[:wanted]
            if not candidates:
                break
            tried.update(candidates)
            taken = await self._take_all(worker, candidates, now, lease_until, reclaim_own)
            claimed.extend(taken)
            if len(taken) == len(candidates) or len(claimed) >= limit:
                break
        return sorted(claimed, key=lambda r: r.seq)

    async def _take_all(
        self, worker: str, candidates: list[str], now: float, lease_until: float, own: bool
    ) -> list[ExecutionRecord]:
        taken: list[ExecutionRecord] = []
        failures: list[Exception] = []

        async def take(doc: str) -> None:
            try:
                record = await self._take(worker, doc, now, lease_until, own)
            except DurableStoreError as exc:
                failures.append(exc)  # the others may still have been taken
            else:
                if record is not None:
                    taken.append(record)

        async with anyio.create_task_group() as tg:
            for doc in candidates:
                tg.start_soon(take, doc)
        if failures and not taken:
            raise failures[0]
        return taken

    async def _take(
        self, worker: str, doc: str, now: float, lease_until: float, reclaim_own: bool
    ) -> ExecutionRecord | None:
        ref = self._collection("executions").document(doc)

        async def body(txn: AsyncTransaction) -> ExecutionRecord | None:
            snap = await self._snap(ref, txn)
            fields = fields_of(snap)
            status = fields.get("status")
            due = fields.get("due_at")
            own = reclaim_own and status in LEASED and fields.get("lease_owner") == worker
            if (
                not snap.exists
                or status in FINISHED
                or not (own or (due is not None and due <= now))
            ):
                return None
            changes = {
                "status": "rolling_back" if status == "rolling_back" else "running",
                "lease_owner": worker,
                "lease_token": int(fields.get("lease_token", 0)) + 1,
                "due_at": lease_until,
                "blocked_on": None,
                "evict_requested": False,
                "updated_at": now,
            }
            txn.update(ref, changes)
            return record_from_fields(fields["id"], {**fields, **changes})

        record: ExecutionRecord | None = await self._transact("claiming a flow", body)
        return record

    async def renew(self, worker: str, leases: Collection[Lease], lease_until: float) -> set[str]:
        # No transaction: each held lease is extended by a write that only lands if
        # the document is unchanged since it was read (``last_update_time``), so a
        # renewal never takes locks that the leases' own journal writes queue on.
        wanted = {lease.execution_id: lease for lease in leases}
        kept: set[str] = set()

        async def extend(lease: Lease) -> None:
            ref = self._execution(lease.execution_id)
            for _ in range(8):
                snap: DocumentSnapshot[Any] = await self._call(
                    "renewing leases", ref.get(retry=None, timeout=self.rpc_timeout)
                )
                if not snap.exists or not held(fields_of(snap), lease):
                    return
                guard = self.client.write_option(last_update_time=snap.update_time)
                try:
                    await self._call(
                        "renewing leases",
                        ref.update({"due_at": lease_until}, option=guard, retry=None),
                    )
                except DurableStoreError as exc:
                    # Written meanwhile (a signal), or locked by a transaction on it too
                    # long (a journal write reads it): read again.
                    if isinstance(exc.__cause__, gexc.FailedPrecondition | gexc.Aborted):
                        continue
                    raise
                kept.add(lease.execution_id)
                return
            raise DurableStoreError("the durable store is busy (renewing leases)")

        failures: list[DurableStoreError] = []

        async def attempt(lease: Lease) -> None:
            try:
                await extend(lease)
            except DurableStoreError as exc:
                failures.append(exc)

        async with anyio.create_task_group() as tg:
            for lease in wanted.values():
                tg.start_soon(attempt, lease)
        if failures:  # unknown whether those are held: the worker tries again soon
            raise failures[0]
        return kept

    # -- fenced writes -------------------------------------------------------------

    async def append(
        self,
        lease: Lease,
        entry: JournalEntry,
        now: float,
        *,
        consume: Collection[int] = (),
        audit: Sequence[AuditEntry] = (),
        preceding: Sequence[JournalEntry] = (),
    ) -> None:
        ref = self._execution(lease.execution_id)
        written = [*preceding, entry]
        entry_refs = [
            ref.collection(JOURNAL).document(journal_id(e.branch, e.key)) for e in written
        ]
        distinct = list({r.path: r for r in entry_refs}.values())
        signal_refs = [ref.collection(SIGNALS).document(signal_id(i)) for i in consume]
        orders = [self._next_order(lease) for _ in written]

        async def body(txn: AsyncTransaction) -> None:
            # One round trip for every read: the execution stays locked (other
            # writers to it wait) for as short a time as a transaction allows.
            snaps = {
                snap.reference.path: snap
                for snap in await self._get_all([ref, *distinct, *signal_refs], txn)
            }
            execution = snaps[ref.path]
            if not execution.exists or not held(fields_of(execution), lease):
                raise LeaseLostError(f"lease on flow {lease.execution_id} was lost")
            # Every check before any write: a refused entry leaves nothing written.
            # Entries at one address follow each other (the last one is stored, at
            # the place the first one took), checked as the journal would be.
            staged: dict[str, tuple[Any, JournalEntry, int]] = {}
            for item, entry_ref, order in zip(written, entry_refs, orders, strict=True):
                if entry_ref.path in staged:
                    earlier, kept = staged[entry_ref.path][1], staged[entry_ref.path][2]
                    if earlier.final:
                        raise ValueError(f"journal entry {item.path!r} is final")
                else:
                    existing = snaps[entry_ref.path]
                    kept = order
                    if existing.exists:
                        old = fields_of(existing)
                        if old.get("status") in ("completed", "failed"):
                            raise ValueError(f"journal entry {item.path!r} is final")
                        kept = old["ord"]
                staged[entry_ref.path] = (entry_ref, item, kept)
            signals = [snaps[r.path] for r in signal_refs]
            for snap in signals:
                if not snap.exists or fields_of(snap).get("consumed"):
                    raise ValueError(f"signal {snap.id} is not waiting to be consumed")
            for snap in signals:
                txn.update(snap.reference, {"consumed": True})
            for entry_ref, item, kept in staged.values():
                txn.set(entry_ref, entry_fields(item, kept))
            self._put_audit(txn, audit)

        await self._transact("writing a journal entry", body)

    async def set_status(
        self,
        lease: Lease,
        status: ExecutionStatus,
        now: float,
        *,
        audit: Sequence[AuditEntry] = (),
    ) -> None:
        if status not in LEASED:
            raise ValueError(f"set_status takes running or rolling_back, not {status!r}")

        async def body(txn: AsyncTransaction) -> None:
            await self._fence(lease, txn)
            txn.update(self._execution(lease.execution_id), {"status": status, "updated_at": now})
            self._put_audit(txn, audit)

        await self._transact("setting a status", body)

    async def prune(self, lease: Lease, branches: Collection[str], now: float) -> None:
        journal = self._execution(lease.execution_id).collection(JOURNAL)
        for branch in branches:
            # ``branch`` itself, and ``branch/...``: '0' is the character after '/'.
            exact = journal.where(filter=FieldFilter("branch", "==", branch)).limit(_CHUNK)
            nested = (
                journal.where(filter=FieldFilter("branch", ">=", branch + "/"))
                .where(filter=FieldFilter("branch", "<", branch + "0"))
                .limit(_CHUNK)
            )

            async def body(txn: AsyncTransaction, exact: Any = exact, nested: Any = nested) -> int:
                await self._fence(lease, txn)
                doomed = [*await self._query(exact, txn), *await self._query(nested, txn)]
                for snap in doomed:
                    txn.delete(snap.reference)
                return len(doomed)

            while await self._transact("pruning a journal", body):
                pass

    async def suspend(
        self,
        lease: Lease,
        *,
        status: ExecutionStatus,
        blocked_on: str | None,
        wake_at: float | None,
        now: float,
        wait_for: Collection[str] = (),
        signals: Collection[str] = (),
        audit: Sequence[AuditEntry] = (),
    ) -> None:
        ref = self._execution(lease.execution_id)
        names = set(signals)
        targets = sorted(set(wait_for))

        async def body(txn: AsyncTransaction) -> None:
            fields = await self._fence(lease, txn)
            due = wake_at
            if names:
                waiting = ref.collection(SIGNALS).where(filter=FieldFilter("consumed", "==", False))
                if any(fields_of(s).get("name") in names for s in await self._query(waiting, txn)):
                    due = now
            for snap in await self._get_all([self._execution(t) for t in targets], txn):
                if not snap.exists or fields_of(snap).get("status") in FINISHED:
                    due = now
            for target in targets:
                waiter = self._execution(target).collection(WAITERS).document(ref.id)
                txn.set(waiter, {"waiter": lease.execution_id})
            changes: dict[str, Any] = {
                "status": status,
                "blocked_on": blocked_on,
                "due_at": due,
                "lease_owner": None,
                "evict_requested": False,
                "updated_at": now,
            }
            if targets:
                changes["waits_for"] = sorted({*fields.get("waits_for", ()), *targets})
            txn.update(ref, changes)
            self._put_audit(txn, audit)

        await self._transact("parking a flow", body)
        self._forget_lease(lease)

    async def _end(
        self,
        txn: AsyncTransaction,
        execution_id: str,
        audit: Sequence[AuditEntry],
        changes: dict[str, Any],
        now: float,
    ) -> None:
        """End an execution and wake its waiters: reads first, then writes."""
        ref = self._execution(execution_id)
        waiters = await self._query(ref.collection(WAITERS), txn)
        woken = await self._get_all([self._execution(fields_of(w)["waiter"]) for w in waiters], txn)
        txn.update(
            ref,
            {
                **changes,
                "due_at": None,
                "lease_owner": None,
                "blocked_on": None,
                "evict_requested": False,
                "updated_at": now,
            },
        )
        for snap in woken:
            if snap.exists and fields_of(snap).get("status") == "waiting":
                txn.update(snap.reference, {"due_at": now})
        for waiter in waiters:
            txn.delete(waiter.reference)
        self._put_audit(txn, audit)

    async def finish(
        self,
        lease: Lease,
        *,
        status: ExecutionStatus,
        result: str | None,
        error: dict[str, Any] | None,
        now: float,
        audit: Sequence[AuditEntry] = (),
    ) -> None:
        stored_error = dump_error(error)

        async def body(txn: AsyncTransaction) -> None:
            await self._fence(lease, txn)
            changes = {"status": status, "result": result, "error": stored_error}
            await self._end(txn, lease.execution_id, audit, changes, now)

        await self._transact("finishing a flow", body)
        self._forget_lease(lease)

    # -- unfenced changes ----------------------------------------------------------

    async def send_signal(
        self,
        execution_id: str,
        name: str,
        payload: str,
        now: float,
        *,
        unique: bool = False,
        audit: Sequence[AuditEntry] = (),
    ) -> bool:
        ref = self._execution(execution_id)

        async def body(txn: AsyncTransaction) -> bool:
            fields = await self._existing(execution_id, txn)
            if fields.get("status") in FINISHED:
                return False
            if unique:
                named = ref.collection(SIGNALS).where(filter=FieldFilter("name", "==", name))
                if await self._query(named.limit(1), txn):
                    return False
            number = int(fields.get("signal_next", 1))
            txn.set(
                ref.collection(SIGNALS).document(signal_id(number)),
                {"id": number, "name": name, "payload": payload, "consumed": False},
            )
            changes: dict[str, Any] = {"signal_next": number + 1}
            if fields.get("status") in ("sleeping", "waiting"):
                changes.update(status="pending", due_at=now, blocked_on=None, updated_at=now)
            txn.update(ref, changes)
            self._put_audit(txn, audit)
            return True

        sent: bool = await self._transact("sending a signal", body)
        return sent

    async def request_evict(
        self, execution_id: str, now: float, *, audit: Sequence[AuditEntry] = ()
    ) -> bool:
        async def body(txn: AsyncTransaction) -> bool:
            fields = await self._existing(execution_id, txn)
            if fields.get("status") not in LEASED:
                return False
            txn.update(self._execution(execution_id), {"evict_requested": True, "updated_at": now})
            self._put_audit(txn, audit)
            return True

        requested: bool = await self._transact("asking a flow to park", body)
        return requested

    async def recover(
        self, execution_id: str, now: float, *, audit: Sequence[AuditEntry] = ()
    ) -> bool:
        ref = self._execution(execution_id)
        failed = ref.collection(JOURNAL).where(filter=FieldFilter("status", "==", "failed"))

        async def body(txn: AsyncTransaction) -> bool:
            fields = await self._existing(execution_id, txn)
            if fields.get("status") != "failed":
                return False
            doomed = await self._query(failed, txn)
            for snap in doomed:
                txn.delete(snap.reference)
            txn.update(
                ref,
                {
                    "status": "pending",
                    "error": None,
                    "result": None,
                    "due_at": now,
                    "updated_at": now,
                },
            )
            self._put_audit(txn, audit)
            return True

        recovered: bool = await self._transact("recovering a flow", body)
        return recovered

    async def wake(self, execution_id: str, now: float) -> bool:
        async def body(txn: AsyncTransaction) -> bool:
            fields = await self._existing(execution_id, txn)
            if fields.get("status") not in ("pending", "sleeping", "waiting"):
                return False
            txn.update(self._execution(execution_id), {"due_at": now, "updated_at": now})
            return True

        woken: bool = await self._transact("waking a flow", body)
        return woken

    async def cancel(
        self,
        execution_id: str,
        error: dict[str, Any],
        now: float,
        *,
        audit: Sequence[AuditEntry] = (),
    ) -> bool:
        stored_error = dump_error(error)

        async def body(txn: AsyncTransaction) -> bool:
            fields = await self._existing(execution_id, txn)
            if fields.get("status") in FINISHED:
                return False
            changes = {"status": "cancelled", "result": None, "error": stored_error}
            await self._end(txn, execution_id, audit, changes, now)
            return True

        cancelled: bool = await self._transact("cancelling a flow", body)
        return cancelled

    async def delete(self, execution_id: str) -> bool:
        record = await self.get(execution_id)
        if not record.done:
            return False
        ref = self._execution(execution_id)
        snap: DocumentSnapshot[Any] = await self._call(
            "deleting a flow", ref.get(retry=None, timeout=self.rpc_timeout)
        )
        # Children first, the record last: a delete cut short is finished by the next
        # one, and a record that still exists never lacks its journal.
        leftovers: list[AsyncQuery] = [
            ref.collection(JOURNAL).limit(_CHUNK),
            ref.collection(SIGNALS).limit(_CHUNK),
            ref.collection(WAITERS).limit(_CHUNK),
            self._collection("audit")
            .where(filter=FieldFilter("execution_id", "==", execution_id))
            .limit(_CHUNK),
        ]
        for query in leftovers:
            while docs := await self._call("deleting a flow", self._query(query)):
                batch = self.client.batch()
                for doc in docs:
                    batch.delete(doc.reference)
                await self._call("deleting a flow", batch.commit(retry=None))
        batch = self.client.batch()
        for target in fields_of(snap).get("waits_for", ()):
            batch.delete(self._execution(target).collection(WAITERS).document(ref.id))
        batch.delete(ref)
        await self._call("deleting a flow", batch.commit(retry=None))
        return True

    # -- audit timeline ------------------------------------------------------------

    async def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return

        async def body(txn: AsyncTransaction) -> None:
            self._put_audit(txn, entries)

        await self._transact("writing audit lines", body)

    async def audit(
        self, *, execution_id: str | None = None, after: int = 0, limit: int = 1000
    ) -> list[AuditEntry]:
        await self._sequence()
        query: Any = self._collection("audit")
        if execution_id is not None:
            query = query.where(filter=FieldFilter("execution_id", "==", execution_id))
        query = query.where(filter=FieldFilter("seq", ">", after)).order_by("seq").limit(limit)
        snaps = await self._call("reading audit lines", self._query(query))
        return [audit_from_fields(fields_of(s)) for s in snaps]

    async def _sequence(self) -> None:
        """Number the audit lines written since the last reader did, in their order:
        a transaction on the audit counter, taken by readers only."""
        pending = (
            self._collection("audit")
            .where(filter=FieldFilter("seq", "==", None))
            .order_by("order")
            .limit(_CHUNK)
        )
        if not await self._call("numbering audit lines", self._query(pending.limit(1))):
            return

        async def body(txn: AsyncTransaction) -> int:
            first = await self._reserve(txn, "audit", 1)
            docs = await self._query(pending, txn)
            for offset, snap in enumerate(docs):
                txn.update(snap.reference, {"seq": first + offset})
            self._advance(txn, "audit", first, len(docs))
            return len(docs)

        while await self._transact("numbering audit lines", body) == _CHUNK:
            pass

    # -- notifications -------------------------------------------------------------

    async def watch_due(self, flows: Collection[str], wake: Callable[[float], None]) -> None:
        """Call ``wake`` with the earliest ``due_at`` among the executions of ``flows``
        whenever it may have changed (the current time once listening, if nothing is
        due): one snapshot listener per 30 flows on
        ``flow in [...] and due_at >= 0 order by due_at limit 1``."""
        async for due_at in self._due_times(flows):
            wake(due_at)

    async def _due_times(self, flows: Collection[str]) -> AsyncIterator[float]:
        names = sorted(flows)
        if not names:
            return
        listening = await self._listening_client()
        targets = [
            listening.collection(f"{self.prefix}_executions")
            .where(filter=FieldFilter("flow", "in", names[i : i + _IN_LIMIT]))
            .where(filter=FieldFilter("due_at", ">=", 0))
            .order_by("due_at")
            .limit(1)
            for i in range(0, len(names), _IN_LIMIT)
        ]
        executions: Any = self._collection("executions")
        earliest = [
            executions.where(filter=FieldFilter("flow", "in", names[i : i + _IN_LIMIT]))
            .where(filter=FieldFilter("due_at", ">=", 0))
            .order_by("due_at")
            .limit(1)
            for i in range(0, len(names), _IN_LIMIT)
        ]
        first = True
        with store_errors("watching for due flows"):
            async for _ in listen_to(targets):
                found = [
                    fields_of(snap)["due_at"]
                    for query in earliest
                    for snap in await self._call("watching for due flows", self._query(query))
                ]
                if found:
                    yield min(found)
                elif first:  # listening now: the worker looks once, even with nothing due
                    yield time.time()
                first = False

    async def _listening_client(self) -> Client:
        if self._watch_client is None:
            source: Any = self.client
            self._watch_client = await anyio.to_thread.run_sync(
                lambda: Client(
                    project=source.project,
                    credentials=getattr(source, "_credentials", None),
                    database=getattr(source, "_database", None),
                )
            )
            self._owned.append(self._watch_client)
        return self._watch_client
