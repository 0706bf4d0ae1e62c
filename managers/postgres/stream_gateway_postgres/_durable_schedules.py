"""Recurring schedules in PostgreSQL: ``durable_schedules``, one row each. A tick
fired moves ``next_at`` on only if it still is the tick fired (so two workers never
fire it twice) and creates its execution in the same transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stream_gateway.durable import AuditEntry, ExecutionRecord, Schedule, ScheduleNotFoundError

from ._durable_base import PostgresBase
from ._durable_layout import SCHEDULE_COLUMNS, schedule_row, to_schedule
from ._migrations import Connection

__all__ = ["ScheduleMixin"]


class ScheduleMixin(PostgresBase):
    """The schedule half of `PostgresDurableStore`."""

    async def create_schedule(self, schedule: Schedule) -> tuple[Schedule, bool]:
        table = self._t["schedules"]

        async def body(conn: Connection) -> tuple[Schedule, bool]:
            marks = ", ".join(f"${i}" for i in range(1, 15))
            created = await conn.fetchval(
                f"INSERT INTO {table} ({SCHEDULE_COLUMNS}) VALUES ({marks}) "
                "ON CONFLICT (id) DO NOTHING RETURNING true",
                *schedule_row(schedule),
            )
            if created and not schedule.paused:
                await self._notify(conn, schedule.next_at)
            row = await conn.fetchrow(
                f"SELECT {SCHEDULE_COLUMNS} FROM {table} WHERE id = $1", schedule.id
            )
            assert row is not None  # inserted now or before; never deleted in between
            return to_schedule(row), bool(created)

        return await self._db.write("creating a schedule", body)

    async def put_schedule(self, schedule: Schedule) -> bool:
        columns = SCHEDULE_COLUMNS.split(", ")[1:]
        sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=2))

        async def body(conn: Connection) -> bool:
            updated = await conn.fetchval(
                f"UPDATE {self._t['schedules']} SET {sets} WHERE id = $1 RETURNING true",
                *schedule_row(schedule),
            )
            if updated and not schedule.paused:
                await self._notify(conn, schedule.next_at)
            return bool(updated)

        return await self._db.write("updating a schedule", body)

    async def get_schedule(self, schedule_id: str) -> Schedule:
        row = await self._db.read(
            "reading a schedule",
            lambda conn: conn.fetchrow(
                f"SELECT {SCHEDULE_COLUMNS} FROM {self._t['schedules']} WHERE id = $1",
                schedule_id,
            ),
        )
        if row is None:
            raise ScheduleNotFoundError("schedule not found")
        return to_schedule(row)

    async def list_schedules(
        self,
        *,
        owner: str | None = None,
        any_owner: bool = True,
        after: str | None = None,
        limit: int = 50,
    ) -> list[Schedule]:
        where: list[str] = ["true"]
        params: list[Any] = []
        if after is not None:
            params.append(after)
            where.append(f"id > ${len(params)}")
        if not any_owner:
            params.append(owner)
            where.append(f"owner IS NOT DISTINCT FROM ${len(params)}")
        params.append(limit)
        sql = (
            f"SELECT {SCHEDULE_COLUMNS} FROM {self._t['schedules']} "
            f"WHERE {' AND '.join(where)} ORDER BY id LIMIT ${len(params)}"
        )
        rows = await self._db.read("listing schedules", lambda conn: conn.fetch(sql, *params))
        return [to_schedule(r) for r in rows]

    async def delete_schedule(self, schedule_id: str) -> bool:
        deleted = await self._db.write(
            "deleting a schedule",
            lambda conn: conn.fetchval(
                f"DELETE FROM {self._t['schedules']} WHERE id = $1 RETURNING true", schedule_id
            ),
        )
        return bool(deleted)

    async def due_schedules(self, now: float, limit: int) -> list[Schedule]:
        rows = await self._db.read(
            "reading due schedules",
            lambda conn: conn.fetch(
                f"SELECT {SCHEDULE_COLUMNS} FROM {self._t['schedules']} "
                "WHERE NOT paused AND next_at <= $1 ORDER BY next_at, id LIMIT $2",
                now,
                limit,
            ),
        )
        return [to_schedule(r) for r in rows]

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
        async def body(conn: Connection) -> bool:
            fired = await conn.fetchval(
                f"UPDATE {self._t['schedules']} SET next_at = $1, last_tick = $2, "
                "updated_at = $3, last_execution = COALESCE($4, last_execution) "
                "WHERE id = $5 AND NOT paused AND next_at = $2 RETURNING true",
                next_at, tick, now, execution.id if execution else None, schedule_id,
            )  # fmt: skip
            if not fired:
                return False
            if execution is not None:
                await self._insert(conn, execution)
            await self._notify(conn, next_at)
            await self._add_audit(conn, audit)
            return True

        return await self._db.write("firing a schedule", body)
