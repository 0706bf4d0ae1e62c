"""The helpers every part of `PostgresDurableStore` shares: fencing, notifying,
inserting executions and numbering the audit timeline, each on a connection inside the
caller's transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence

from stream_gateway.durable import (
    AuditEntry,
    DurableStore,
    ExecutionNotFoundError,
    ExecutionRecord,
    Lease,
    LeaseLostError,
)

from ._durable_conn import Database
from ._durable_layout import COLUMNS, LEASED, to_record
from ._migrations import Connection

__all__ = ["PostgresBase"]


class PostgresBase(DurableStore):
    """What `PostgresDurableStore`'s ``__init__`` sets up, and the statements its
    reads, fenced writes and schedules share."""

    #: The durable tables, schema-qualified and quoted, by short name.
    _t: dict[str, str]
    #: The channel writes that make work due ``pg_notify``.
    _channel: str
    #: The advisory lock that serializes numbering the audit timeline.
    _audit_lock: int
    _db: Database

    async def _notify(self, conn: Connection, at: float | None) -> None:
        """Tell the workers (at commit) that something is due at ``at``."""
        if at is not None:
            await conn.execute("SELECT pg_notify($1, $2)", self._channel, repr(at))

    async def _fence(self, conn: Connection, lease: Lease) -> None:
        """Lock the execution's row while ``lease`` is current (to the commit)."""
        locked = await conn.fetchval(
            f"SELECT true FROM {self._t['executions']} WHERE id = $1 AND status IN {LEASED} "
            "AND lease_owner = $2 AND lease_token = $3 FOR NO KEY UPDATE",
            lease.execution_id,
            lease.worker,
            lease.token,
        )
        if not locked:
            raise LeaseLostError(f"lease on flow {lease.execution_id} was lost")

    async def _status(self, conn: Connection, execution_id: str) -> str:
        """The execution's status, its row locked to the commit."""
        status: str | None = await conn.fetchval(
            f"SELECT status FROM {self._t['executions']} WHERE id = $1 FOR NO KEY UPDATE",
            execution_id,
        )
        if status is None:
            raise ExecutionNotFoundError("flow not found")
        return status

    async def _add_audit(self, conn: Connection, entries: Sequence[AuditEntry]) -> None:
        # Stored without a seq: see `_sequence`. Writers never wait on each other here.
        if not entries:
            return
        await conn.execute(
            f"""INSERT INTO {self._t["audit"]} (execution_id, kind, at, step, data)
            SELECT e, k, a, s, d FROM unnest($1::text[], $2::text[], $3::float8[],
                $4::text[], $5::text[]) WITH ORDINALITY AS u(e, k, a, s, d, n)
            ORDER BY n""",
            [a.execution_id for a in entries],
            [a.kind for a in entries],
            [a.at for a in entries],
            [a.step for a in entries],
            [json.dumps(a.data) for a in entries],
        )

    async def _sequence(self, conn: Connection) -> None:
        """Number the audit lines committed since the last reader did, in insertion
        order, after every number given so far (kept in ``durable_audit_cursor``, so
        none is ever reused). Audit seqs are a feed cursor: a reader that saw seq n
        must never later find a smaller one. Numbers drawn by writers would commit out
        of order (a transaction may draw 9, commit after another drew and committed
        10); numbered by readers, one at a time under a lock, a line committed late
        just gets a later number. So writers never serialize on the audit table."""
        audit, cursor = self._t["audit"], self._t["audit_cursor"]
        await conn.execute("SELECT pg_advisory_xact_lock($1)", self._audit_lock)
        await conn.execute(
            f"""WITH todo AS (
                SELECT id, row_number() OVER (ORDER BY id) AS r FROM {audit}
                WHERE seq IS NULL),
            bump AS (
                UPDATE {cursor} SET last = last + (SELECT count(*) FROM todo)
                RETURNING last - (SELECT count(*) FROM todo) AS base)
            UPDATE {audit} AS a SET seq = bump.base + todo.r FROM todo, bump
            WHERE a.id = todo.id"""
        )

    async def _insert(self, conn: Connection, record: ExecutionRecord) -> bool:
        created = await conn.fetchval(
            f"INSERT INTO {self._t['executions']} (id, flow, status, input, owner, "
            "created_at, updated_at, due_at, parent) VALUES ($1, $2, $3, $4, $5, $6, $7, "
            "$8, $9) ON CONFLICT (id) DO NOTHING RETURNING true",
            record.id, record.flow, record.status, record.input, record.owner,
            record.created_at, record.updated_at, record.due_at, record.parent,
        )  # fmt: skip
        if created:
            await self._notify(conn, record.due_at)
        return bool(created)

    async def _get(self, conn: Connection, execution_id: str) -> ExecutionRecord:
        row = await conn.fetchrow(
            f"SELECT {COLUMNS} FROM {self._t['executions']} WHERE id = $1", execution_id
        )
        if row is None:
            raise ExecutionNotFoundError("flow not found")
        return to_record(row)
