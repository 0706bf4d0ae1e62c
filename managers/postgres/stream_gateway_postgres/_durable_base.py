"""The helpers every part of `PostgresDurableStore` shares: fencing, notifying,
inserting executions and numbering the audit timeline, each on a connection inside the
caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stream_gateway.durable import (
    AuditEntry,
    DurableStore,
    ExecutionNotFoundError,
    ExecutionRecord,
    Lease,
)

from ._durable_conn import Database
from ._durable_layout import COLUMNS, audit_args, to_json, to_record
from ._migrations import Connection

__all__ = ["PostgresBase"]


class PostgresBase(DurableStore):
    """What `PostgresDurableStore`'s ``__init__`` sets up, and the statements its
    reads, fenced writes and schedules share."""

    #: The schema, quoted (the durable functions' qualifier).
    _s: str
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
        """Lock the execution's row while ``lease`` is current (to the commit), or
        raise `LeaseLostError` (``durable_fence``, translated by `store_errors`)."""
        await conn.execute(
            f"SELECT {self._s}.durable_fence($1, $2, $3)",
            lease.execution_id,
            lease.worker,
            lease.token,
        )

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
        if entries:
            await conn.execute(
                f"SELECT {self._s}.durable_add_audit($1, $2, $3, $4, $5)", *audit_args(entries)
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

    async def _end(
        self,
        conn: Connection,
        execution_id: str,
        status: str,
        result: str | None,
        error: dict[str, Any] | None,
        now: float,
    ) -> None:
        """End the execution and wake its waiters (``durable_end``)."""
        await conn.execute(
            f"SELECT {self._s}.durable_end($1, $2, $3, $4, $5, $6)",
            execution_id, status, result, to_json(error), now, self._channel,
        )  # fmt: skip

    async def _insert(self, conn: Connection, record: ExecutionRecord) -> bool:
        """Insert the execution unless its id exists, notifying when it is due
        (``durable_create``, without audit lines); whether it was inserted."""
        created = await conn.fetchval(
            f"SELECT created FROM {self._s}.durable_create($1, $2, $3, $4, $5, $6, $7, $8, "
            "$9, $10, $11, $12, $13, $14, $15)",
            record.id, record.flow, record.status, record.input, record.owner,
            record.created_at, record.updated_at, record.due_at, record.parent,
            self._channel, *audit_args(()),
        )  # fmt: skip
        return bool(created)

    async def _get(self, conn: Connection, execution_id: str) -> ExecutionRecord:
        row = await conn.fetchrow(
            f"SELECT {COLUMNS} FROM {self._t['executions']} WHERE id = $1", execution_id
        )
        if row is None:
            raise ExecutionNotFoundError("flow not found")
        return to_record(row)
