"""`InMemoryDurableStore`: the durable contract in one process's memory (tests, dev).

Nothing survives the process; several engines and workers in one process may share
one instance (that is how the tests simulate restarts). Each method runs without an
``await`` between its check and its write, which makes it atomic on the event loop.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Sequence
from typing import Any

from .errors import ExecutionNotFoundError, LeaseLostError, ScheduleNotFoundError
from .records import (
    FINISHED,
    AuditEntry,
    ExecutionRecord,
    ExecutionStatus,
    History,
    JournalEntry,
    Lease,
    Schedule,
    Signal,
)
from .store import DurableStore

__all__ = ["InMemoryDurableStore"]

_DUE_STATUSES = frozenset({"pending", "sleeping", "waiting", "running", "rolling_back"})
_LEASED = frozenset({"running", "rolling_back"})


class InMemoryDurableStore(DurableStore):
    """A `DurableStore` in memory; records handed out are copies."""

    def __init__(self) -> None:
        self._records: dict[str, ExecutionRecord] = {}
        self._journals: dict[str, dict[tuple[str, str], JournalEntry]] = {}
        # id -> [signal, consumed]; names ever sent (for unique sends)
        self._signals: dict[str, dict[int, tuple[Signal, bool]]] = {}
        self._signal_seq = 0
        self._waiters: dict[str, set[str]] = {}  # target id -> waiting execution ids
        self._seq = 0
        self._token = 0
        self._audit: list[AuditEntry] = []
        self._audit_seq = 0
        self._schedules: dict[str, Schedule] = {}

    def _get(self, execution_id: str) -> ExecutionRecord:
        record = self._records.get(execution_id)
        if record is None:
            raise ExecutionNotFoundError("flow not found")
        return record

    def _fenced(self, lease: Lease) -> ExecutionRecord:
        record = self._records.get(lease.execution_id)
        if (
            record is None
            or record.status not in _LEASED
            or record.lease_owner != lease.worker
            or record.lease_token != lease.token
        ):
            raise LeaseLostError(f"lease on flow {lease.execution_id} was lost")
        return record

    async def create(
        self, record: ExecutionRecord, *, audit: Sequence[AuditEntry] = ()
    ) -> tuple[ExecutionRecord, bool]:
        existing = self._records.get(record.id)
        if existing is not None:
            return copy.copy(existing), False
        self._seq += 1
        stored = copy.copy(record)
        stored.seq = self._seq
        self._records[record.id] = stored
        self._journals[record.id] = {}
        self._signals[record.id] = {}
        self._add(audit)
        return copy.copy(stored), True

    async def get(self, execution_id: str) -> ExecutionRecord:
        return copy.copy(self._get(execution_id))

    async def get_many(self, execution_ids: Collection[str]) -> dict[str, ExecutionRecord]:
        return {i: copy.copy(self._records[i]) for i in execution_ids if i in self._records}

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
        found: list[ExecutionRecord] = []
        for record in sorted(self._records.values(), key=lambda r: r.seq, reverse=True):
            if (
                (after is not None and record.seq >= after)
                or (status is not None and record.status != status)
                or (flow is not None and record.flow != flow)
                or (not any_owner and record.owner != owner)
                or (parent is not None and record.parent != parent)
            ):
                continue
            found.append(copy.copy(record))
            if len(found) >= limit:
                break
        return found

    async def history(self, execution_id: str) -> History:
        self._get(execution_id)
        return History(
            entries=[copy.copy(e) for e in self._journals[execution_id].values()],
            signals=[s for s, used in self._signals[execution_id].values() if not used],
        )

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
        names = set(flows)
        due = [
            r
            for r in self._records.values()
            if r.status in _DUE_STATUSES
            and r.flow in names
            and (
                (r.due_at is not None and r.due_at <= now)
                or (reclaim_own and r.status in _LEASED and r.lease_owner == worker)
            )
        ]
        due.sort(key=lambda r: (r.due_at or 0.0, r.seq))
        claimed = []
        for record in due[:limit]:
            self._token += 1
            record.status = "rolling_back" if record.status == "rolling_back" else "running"
            record.lease_owner = worker
            record.lease_token = self._token
            record.due_at = lease_until
            record.blocked_on = None
            record.evict_requested = False
            record.updated_at = now
            claimed.append(copy.copy(record))
        return claimed

    async def renew(self, worker: str, leases: Collection[Lease], lease_until: float) -> set[str]:
        held = set()
        for lease in leases:
            record = self._records.get(lease.execution_id)
            if (
                record is not None
                and record.status in _LEASED
                and record.lease_owner == worker
                and record.lease_token == lease.token
            ):
                record.due_at = lease_until
                held.add(lease.execution_id)
        return held

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
        record = self._fenced(lease)
        journal = self._journals[lease.execution_id]
        staged: dict[tuple[str, str], JournalEntry] = {}
        for written in [*preceding, entry]:
            address = (written.branch, written.key)
            existing = staged.get(address, journal.get(address))
            if existing is not None and existing.final:
                raise ValueError(f"journal entry {written.path!r} is final")
            staged[address] = written
        signals = self._signals[lease.execution_id]
        for signal_id in consume:
            if signal_id not in signals or signals[signal_id][1]:
                raise ValueError(f"signal {signal_id} is not waiting to be consumed")
        for signal_id in consume:
            signals[signal_id] = (signals[signal_id][0], True)
        for address, written in staged.items():
            journal[address] = copy.copy(written)
        record.updated_at = now
        self._add(audit)

    async def set_status(
        self,
        lease: Lease,
        status: ExecutionStatus,
        now: float,
        *,
        audit: Sequence[AuditEntry] = (),
    ) -> None:
        if status not in _LEASED:
            raise ValueError(f"set_status takes running or rolling_back, not {status!r}")
        record = self._fenced(lease)
        record.status = status
        record.updated_at = now
        self._add(audit)

    async def prune(self, lease: Lease, branches: Collection[str], now: float) -> None:
        self._fenced(lease)
        journal = self._journals[lease.execution_id]
        gone = set(branches)
        for address in [a for a in journal if _within(a[0], gone)]:
            del journal[address]

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
        record = self._fenced(lease)
        names = set(signals)
        if any(s.name in names for s, used in self._signals[record.id].values() if not used):
            wake_at = now
        for target in wait_for:
            other = self._records.get(target)
            if other is None or other.done:
                wake_at = now
            self._waiters.setdefault(target, set()).add(record.id)
        record.status = status
        record.blocked_on = blocked_on
        record.due_at = wake_at
        record.lease_owner = None
        record.evict_requested = False
        record.updated_at = now
        self._add(audit)

    def _end(
        self,
        record: ExecutionRecord,
        status: ExecutionStatus,
        result: str | None,
        error: dict[str, Any] | None,
        now: float,
    ) -> None:
        record.status = status
        record.result = result
        record.error = error
        record.due_at = None
        record.lease_owner = None
        record.blocked_on = None
        record.evict_requested = False
        record.updated_at = now
        for waiter_id in self._waiters.pop(record.id, ()):
            waiter = self._records.get(waiter_id)
            if waiter is not None and waiter.status == "waiting":
                waiter.due_at = now

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
        self._end(self._fenced(lease), status, result, error, now)
        self._add(audit)

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
        record = self._get(execution_id)
        signals = self._signals[execution_id]
        if record.status in FINISHED or (
            unique and any(s.name == name for s, _ in signals.values())
        ):
            return False
        self._signal_seq += 1
        signals[self._signal_seq] = (Signal(self._signal_seq, name, payload), False)
        if record.status in ("sleeping", "waiting"):
            record.status, record.blocked_on, record.due_at = "pending", None, now
        record.updated_at = now
        self._add(audit)
        return True

    async def request_evict(
        self, execution_id: str, now: float, *, audit: Sequence[AuditEntry] = ()
    ) -> bool:
        record = self._get(execution_id)
        if record.status not in _LEASED:
            return False
        record.evict_requested = True
        record.updated_at = now
        self._add(audit)
        return True

    async def recover(
        self, execution_id: str, now: float, *, audit: Sequence[AuditEntry] = ()
    ) -> bool:
        record = self._get(execution_id)
        if record.status != "failed":
            return False
        journal = self._journals[execution_id]
        for address in [a for a, e in journal.items() if e.status == "failed"]:
            del journal[address]
        record.status, record.error, record.result = "pending", None, None
        record.due_at = record.updated_at = now
        self._add(audit)
        return True

    async def wake(self, execution_id: str, now: float) -> bool:
        record = self._get(execution_id)
        if record.status not in ("pending", "sleeping", "waiting"):
            return False
        record.due_at = record.updated_at = now
        return True

    async def cancel(
        self,
        execution_id: str,
        error: dict[str, Any],
        now: float,
        *,
        audit: Sequence[AuditEntry] = (),
    ) -> bool:
        record = self._get(execution_id)
        if record.status in FINISHED:
            return False
        self._end(record, "cancelled", None, error, now)
        self._add(audit)
        return True

    async def delete(self, execution_id: str) -> bool:
        record = self._get(execution_id)
        if record.status not in FINISHED:
            return False
        del self._records[execution_id]
        del self._journals[execution_id]
        del self._signals[execution_id]
        self._waiters.pop(execution_id, None)
        self._audit = [a for a in self._audit if a.execution_id != execution_id]
        return True

    def _add(self, entries: Sequence[AuditEntry]) -> None:
        for entry in entries:
            self._audit_seq += 1
            stored = copy.deepcopy(entry)
            stored.seq = self._audit_seq
            self._audit.append(stored)

    async def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        self._add(entries)

    async def audit(
        self, *, execution_id: str | None = None, after: int = 0, limit: int = 1000
    ) -> list[AuditEntry]:
        found = []
        for entry in self._audit:
            if entry.seq > after and execution_id in (None, entry.execution_id):
                found.append(copy.deepcopy(entry))
                if len(found) >= limit:
                    break
        return found

    # -- recurring schedules -----------------------------------------------------------

    async def create_schedule(self, schedule: Schedule) -> tuple[Schedule, bool]:
        existing = self._schedules.get(schedule.id)
        if existing is not None:
            return copy.copy(existing), False
        self._schedules[schedule.id] = copy.copy(schedule)
        return copy.copy(schedule), True

    async def put_schedule(self, schedule: Schedule) -> bool:
        if schedule.id not in self._schedules:
            return False
        self._schedules[schedule.id] = copy.copy(schedule)
        return True

    async def get_schedule(self, schedule_id: str) -> Schedule:
        found = self._schedules.get(schedule_id)
        if found is None:
            raise ScheduleNotFoundError("schedule not found")
        return copy.copy(found)

    async def list_schedules(
        self,
        *,
        owner: str | None = None,
        any_owner: bool = True,
        after: str | None = None,
        limit: int = 50,
    ) -> list[Schedule]:
        found = [
            copy.copy(s)
            for _, s in sorted(self._schedules.items())
            if (after is None or s.id > after) and (any_owner or s.owner == owner)
        ]
        return found[:limit]

    async def delete_schedule(self, schedule_id: str) -> bool:
        return self._schedules.pop(schedule_id, None) is not None

    async def due_schedules(self, now: float, limit: int) -> list[Schedule]:
        due = [
            s
            for s in self._schedules.values()
            if not s.paused and s.next_at is not None and s.next_at <= now
        ]
        due.sort(key=lambda s: (s.next_at or 0.0, s.id))
        return [copy.copy(s) for s in due[:limit]]

    async def fire_schedule(
        self,
        schedule_id: str,
        *,
        tick: float,
        next_at: float | None,
        execution: ExecutionRecord | None,
        now: float,
        audit: Sequence[AuditEntry] = (),
    ) -> bool:
        schedule = self._schedules.get(schedule_id)
        if schedule is None or schedule.paused or schedule.next_at != tick:
            return False
        if execution is not None:
            await self.create(execution)
            schedule.last_execution = execution.id
        schedule.next_at, schedule.last_tick, schedule.updated_at = next_at, tick, now
        self._add(audit)
        return True


def _within(branch: str, roots: set[str]) -> bool:
    """Whether ``branch`` is one of ``roots`` or nested in one."""
    while True:
        if branch in roots:
            return True
        if "/" not in branch:
            return False
        branch = branch.rsplit("/", 1)[0]
