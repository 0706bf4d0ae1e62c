"""Recurring schedules in Firestore: ``{prefix}_schedules/{id}``, one document each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.cloud.firestore_v1 import AsyncTransaction, FieldFilter

from stream_gateway.durable import AuditEntry, ExecutionRecord, Schedule, ScheduleNotFoundError

from ._durable_base import FirestoreBase, doc_id, fields_of
from ._durable_docs import schedule_fields, schedule_from_fields

__all__ = ["ScheduleMixin"]


class ScheduleMixin(FirestoreBase):
    """The schedule half of the store: each change is one transaction on its document;
    a tick fired creates its execution in the same transaction."""

    def _schedule(self, schedule_id: str) -> Any:
        return self._collection("schedules").document(doc_id(schedule_id))

    async def create_schedule(self, schedule: Schedule) -> tuple[Schedule, bool]:
        ref = self._schedule(schedule.id)

        async def body(txn: AsyncTransaction) -> tuple[Schedule, bool]:
            snap = await self._snap(ref, txn)
            if snap.exists:
                return schedule_from_fields(fields_of(snap)), False
            txn.set(ref, schedule_fields(schedule))
            return schedule, True

        result: tuple[Schedule, bool] = await self._transact("creating a schedule", body)
        return result

    async def put_schedule(self, schedule: Schedule) -> bool:
        ref = self._schedule(schedule.id)

        async def body(txn: AsyncTransaction) -> bool:
            if not (await self._snap(ref, txn)).exists:
                return False
            txn.set(ref, schedule_fields(schedule))
            return True

        stored: bool = await self._transact("updating a schedule", body)
        return stored

    async def get_schedule(self, schedule_id: str) -> Schedule:
        snap = await self._call(
            "reading a schedule",
            self._schedule(schedule_id).get(retry=None, timeout=self.rpc_timeout),
        )
        if not snap.exists:
            raise ScheduleNotFoundError("schedule not found")
        return schedule_from_fields(fields_of(snap))

    async def list_schedules(
        self,
        *,
        owner: str | None = None,
        any_owner: bool = True,
        after: str | None = None,
        limit: int = 50,
    ) -> list[Schedule]:
        query: Any = self._collection("schedules")
        if not any_owner:
            query = query.where(filter=FieldFilter("owner", "==", owner))
        if after is not None:
            query = query.where(filter=FieldFilter("id", ">", after))
        snaps = await self._call(
            "listing schedules", self._query(query.order_by("id").limit(limit))
        )
        return [schedule_from_fields(fields_of(s)) for s in snaps]

    async def delete_schedule(self, schedule_id: str) -> bool:
        ref = self._schedule(schedule_id)

        async def body(txn: AsyncTransaction) -> bool:
            if not (await self._snap(ref, txn)).exists:
                return False
            txn.delete(ref)
            return True

        deleted: bool = await self._transact("deleting a schedule", body)
        return deleted

    async def due_schedules(self, now: float, limit: int) -> list[Schedule]:
        query = (
            self._collection("schedules")
            .where(filter=FieldFilter("paused", "==", False))
            .where(filter=FieldFilter("next_at", "<=", now))
            .order_by("next_at")
            .order_by("id")
            .limit(limit)
        )
        snaps = await self._call("reading due schedules", self._query(query))
        return [schedule_from_fields(fields_of(s)) for s in snaps]

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
        ref = self._schedule(schedule_id)

        async def body(txn: AsyncTransaction) -> bool:
            snap = await self._snap(ref, txn)
            fields = fields_of(snap)
            if not snap.exists or fields.get("paused") or fields.get("next_at") != tick:
                return False
            planned = await self._plan_create(txn, execution) if execution is not None else None
            if planned is not None:
                self._apply_create(txn, planned)
            changes: dict[str, Any] = {"next_at": next_at, "last_tick": tick, "updated_at": now}
            if execution is not None:
                changes["last_execution"] = execution.id
            txn.update(ref, changes)
            self._put_audit(txn, audit)
            return True

        fired: bool = await self._transact("firing a schedule", body)
        return fired
