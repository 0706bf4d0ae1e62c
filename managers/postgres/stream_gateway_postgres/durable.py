"""`PostgresDurableStore`: durable flows' executions, journals, signals and schedules in
PostgreSQL, shared by workers on any number of machines.

Claims are one ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED)``: concurrent
workers never wait on each other's claims and never take the same execution. A write
under a lease first locks the execution's row where it is still fenced (same worker,
same token, leased status) and holds that lock to its commit, so a lapsed lease can
never overwrite its successor's work. Writes that make work due ``pg_notify`` the
schema's channel in their transaction; `watch_due` LISTENs to it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import asyncpg

from stream_gateway.durable import (
    AuditEntry,
    ExecutionNotFoundError,
    ExecutionRecord,
    ExecutionStatus,
    JournalEntry,
    Lease,
    Signal,
)
from stream_gateway.durable.records import History

from ._durable_conn import Database
from ._durable_layout import (
    COLUMNS,
    DURABLE_MIGRATIONS,
    FINISHED,
    LEASED,
    LIVE,
    audit_args,
    due_channel,
    journal_args,
    split_url,
    to_json,
    to_record,
)
from ._durable_schedules import ScheduleMixin
from ._durable_watch import watch
from ._migrations import Connection, migrate, quote_schema

__all__ = ["PostgresDurableStore"]


class PostgresDurableStore(ScheduleMixin):
    """A `DurableStore` in PostgreSQL tables (``durable_*``) in ``schema``.

    ``dsn``: a libpq URI or keyword string. The tables are created (and later
    migrated) by `start`, in ``schema`` (created if missing; the streams' tables may
    share it). ``max_connections``: the pool's size; `watch_due` opens one more per
    worker for LISTEN, on ``listen_dsn`` if given (a transaction-mode pooler cannot
    carry LISTEN). ``command_timeout``: seconds any call may take before it counts as
    unavailable. ``retries``: how often a call that failed before anything could
    commit is tried again. ``connect_options`` go to `asyncpg.connect`.

    Calls run on asyncio (asyncpg): use anyio's asyncio backend.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "stream_gateway",
        max_connections: int = 10,
        command_timeout: float = 10.0,
        retries: int = 3,
        listen_dsn: str | None = None,
        connect_options: Mapping[str, Any] | None = None,
    ) -> None:
        if max_connections < 1 or command_timeout <= 0 or retries < 0:
            raise ValueError("max_connections and command_timeout must be positive")
        self.schema = schema
        s = self._s = quote_schema(schema)
        self._t = {
            name: f"{s}.durable_{name}"
            for name in (
                "executions",
                "journal",
                "signals",
                "waits",
                "audit",
                "audit_cursor",
                "schedules",
            )
        }
        self._channel = due_channel(schema)
        digest = hashlib.blake2b(f"durable-audit\0{schema}".encode(), digest_size=8).digest()
        self._audit_lock = int.from_bytes(digest, "big", signed=True)
        self._db = Database(
            dsn,
            max_connections=max_connections,
            command_timeout=command_timeout,
            retries=retries,
            options=connect_options or {},
            prepare=lambda conn: migrate(conn, schema, "durable", DURABLE_MIGRATIONS),
        )
        self.listen_dsn = listen_dsn or dsn

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresDurableStore:
        """A store at ``postgresql://user@host/db`` (``postgres://`` too), its schema
        named by a ``#schema=name`` fragment (default ``stream_gateway``)."""
        dsn, schema = split_url(url)
        if schema is not None:
            options.setdefault("schema", schema)
        return cls(dsn, **options)

    @property
    def dsn(self) -> str:
        return self._db.dsn

    async def start(self) -> None:
        """Open the pool and apply the durable tables' migrations. Idempotent."""
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    # -- reads -----------------------------------------------------------------------

    async def get(self, execution_id: str) -> ExecutionRecord:
        return await self._db.read("reading a flow", lambda conn: self._get(conn, execution_id))

    async def get_many(self, execution_ids: Collection[str]) -> dict[str, ExecutionRecord]:
        ids = list(execution_ids)
        rows = await self._db.read(
            "reading flows",
            lambda conn: conn.fetch(
                f"SELECT {COLUMNS} FROM {self._t['executions']} WHERE id = ANY($1::text[])",
                ids,
            ),
        )
        return {row["id"]: to_record(row) for row in rows}

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
        where: list[str] = ["true"]
        params: list[Any] = []
        for condition, value, given in (
            ("status = ${}", status, status is not None),
            ("flow = ${}", flow, flow is not None),
            ("parent = ${}", parent, parent is not None),
            ("owner IS NOT DISTINCT FROM ${}", owner, not any_owner),
            ("seq < ${}", after, after is not None),
        ):
            if given:
                params.append(value)
                where.append(condition.format(len(params)))
        params.append(limit)
        sql = (
            f"SELECT {COLUMNS} FROM {self._t['executions']} WHERE {' AND '.join(where)} "
            f"ORDER BY seq DESC LIMIT ${len(params)}"
        )
        rows = await self._db.read("listing flows", lambda conn: conn.fetch(sql, *params))
        return [to_record(row) for row in rows]

    async def history(self, execution_id: str) -> History:
        # One statement (one snapshot, one round trip): the execution's row (to tell
        # an unknown id), its journal in the order first written, its unconsumed
        # signals by id.
        rows = await self._db.read(
            "reading a journal",
            lambda conn: conn.fetch(
                f"""SELECT 0 AS part, 0::bigint AS n, NULL::integer AS seq, NULL AS kind,
                    NULL AS key, NULL AS status, NULL AS result, NULL AS error,
                    NULL::integer AS attempts, NULL::float8 AS started_at,
                    NULL::float8 AS finished_at, NULL::float8 AS wake_at, NULL AS branch,
                    NULL::bigint AS stream_at, NULL AS name
                FROM {self._t["executions"]} WHERE id = $1
                UNION ALL
                SELECT 1, ord, seq, kind, key, status, result, error, attempts, started_at,
                    finished_at, wake_at, branch, stream_at, NULL
                FROM {self._t["journal"]} WHERE execution_id = $1
                UNION ALL
                SELECT 2, id, NULL, NULL, NULL, NULL, payload, NULL, NULL, NULL, NULL, NULL,
                    NULL, NULL, name
                FROM {self._t["signals"]} WHERE execution_id = $1 AND NOT consumed
                ORDER BY part, n""",
                execution_id,
            ),
        )
        if not rows or rows[0]["part"] != 0:
            raise ExecutionNotFoundError("flow not found")
        entries: list[JournalEntry] = []
        signals: list[Signal] = []
        for r in rows[1:]:
            if r["part"] == 2:
                signals.append(Signal(r["n"], r["name"], r["result"]))
                continue
            entries.append(
                JournalEntry(
                    seq=r["seq"],
                    kind=r["kind"],
                    key=r["key"],
                    status=r["status"],
                    result=r["result"],
                    error=json.loads(r["error"]) if r["error"] is not None else None,
                    attempts=r["attempts"],
                    started_at=r["started_at"],
                    finished_at=r["finished_at"],
                    wake_at=r["wake_at"],
                    branch=r["branch"],
                    stream_at=r["stream_at"],
                )
            )
        return History(entries, signals)

    # -- claims and fenced writes --------------------------------------------------------

    async def create(
        self, record: ExecutionRecord, *, audit: Sequence[AuditEntry] = ()
    ) -> tuple[ExecutionRecord, bool]:
        args = (
            record.id, record.flow, record.status, record.input, record.owner,
            record.created_at, record.updated_at, record.due_at, record.parent,
            self._channel, *audit_args(audit),
        )  # fmt: skip
        row = await self._db.statement(
            "creating a flow",
            lambda conn: conn.fetchrow(
                f"SELECT (c.execution).*, c.created FROM {self._s}.durable_create($1, $2, $3, "
                "$4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) AS c",
                *args,
            ),
        )
        assert row is not None
        return to_record(row), bool(row["created"])

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
        ex = self._t["executions"]
        own = f"OR (status IN {LEASED} AND lease_owner = $1)" if reclaim_own else ""
        sql = f"""UPDATE {ex} AS x SET
                status = CASE x.status WHEN 'rolling_back' THEN 'rolling_back' ELSE 'running' END,
                lease_owner = $1, lease_token = x.lease_token + 1, due_at = $2,
                blocked_on = NULL, evict_requested = false, updated_at = $3
            FROM (SELECT id FROM {ex}
                  WHERE ((due_at <= $3 AND status IN {LIVE}) {own}) AND flow = ANY($4::text[])
                  ORDER BY due_at, seq LIMIT $5 FOR UPDATE SKIP LOCKED) AS due
            WHERE x.id = due.id
            RETURNING {", ".join("x." + c.strip() for c in COLUMNS.split(","))}"""
        names = sorted(flows)
        rows = await self._db.statement(
            "claiming flows",
            lambda conn: conn.fetch(sql, worker, lease_until, now, names, limit),
        )
        return sorted((to_record(r) for r in rows), key=lambda r: r.seq)

    async def renew(self, worker: str, leases: Collection[Lease], lease_until: float) -> set[str]:
        if not leases:
            return set()
        ids = [lease.execution_id for lease in leases]
        tokens = [lease.token for lease in leases]
        rows = await self._db.statement(
            "renewing leases",
            lambda conn: conn.fetch(
                f"UPDATE {self._t['executions']} AS x SET due_at = $1 "
                "FROM unnest($2::text[], $3::bigint[]) AS l(id, token) "
                f"WHERE x.id = l.id AND x.lease_token = l.token AND x.lease_owner = $4 "
                f"AND x.status IN {LEASED} RETURNING x.id",
                lease_until,
                ids,
                tokens,
                worker,
            ),
        )
        return {row["id"] for row in rows}

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
        # ``durable_append``: the fence, the signals, the entries (each added at its
        # address or replacing the non-final one there) and the audit lines, in one
        # statement; `LeaseLostError` or ``ValueError`` from its SQLSTATEs.
        args = (
            lease.execution_id, lease.worker, lease.token, sorted(consume),
            *journal_args([*preceding, entry]), *audit_args(audit),
        )  # fmt: skip
        await self._db.statement(
            "writing a journal entry",
            lambda conn: conn.execute(
                f"SELECT {self._s}.durable_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
                "$11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
                *args,
            ),
        )

    async def set_status(
        self,
        lease: Lease,
        status: ExecutionStatus,
        now: float,
        *,
        audit: Sequence[AuditEntry] = (),
    ) -> None:
        if status not in ("running", "rolling_back"):
            raise ValueError(f"set_status takes running or rolling_back, not {status!r}")

        async def body(conn: Connection) -> None:
            await self._fence(conn, lease)
            await conn.execute(
                f"UPDATE {self._t['executions']} SET status = $1, updated_at = $2 WHERE id = $3",
                status,
                now,
                lease.execution_id,
            )
            await self._add_audit(conn, audit)

        await self._db.write("switching a flow's status", body)

    async def prune(self, lease: Lease, branches: Collection[str], now: float) -> None:
        roots = sorted(set(branches))
        if not roots:
            return

        async def body(conn: Connection) -> None:
            await self._fence(conn, lease)
            await conn.execute(
                f"DELETE FROM {self._t['journal']} AS j USING unnest($2::text[]) AS b(root) "
                "WHERE j.execution_id = $1 AND (j.branch = b.root "
                "OR left(j.branch, length(b.root) + 1) = b.root || '/')",
                lease.execution_id,
                roots,
            )

        await self._db.write("pruning a journal", body)

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
        names = sorted(set(signals))
        targets = sorted(set(wait_for))
        ex = self._t["executions"]

        async def body(conn: Connection) -> None:
            due = wake_at
            if targets:
                # The targets' rows before this one's (the order `finish` locks them
                # in: its own, then its waiters'), so the two never deadlock; and a
                # target that finishes meanwhile either sees the wait or is seen done.
                found = await conn.fetch(
                    f"SELECT id, status FROM {ex} WHERE id = ANY($1::text[]) ORDER BY id FOR SHARE",
                    targets,
                )
                if len(found) < len(targets) or any(r["status"] in FINISHED for r in found):
                    due = now
            await self._fence(conn, lease)
            if names and await conn.fetchval(
                f"SELECT true FROM {self._t['signals']} WHERE execution_id = $1 "
                "AND NOT consumed AND name = ANY($2::text[]) LIMIT 1",
                lease.execution_id,
                names,
            ):
                due = now
            if targets:
                await conn.execute(
                    f"INSERT INTO {self._t['waits']} (target, waiter) "
                    "SELECT t, $2 FROM unnest($1::text[]) AS t ON CONFLICT DO NOTHING",
                    targets,
                    lease.execution_id,
                )
            await conn.execute(
                f"UPDATE {ex} SET status = $1, blocked_on = $2, due_at = $3, "
                "lease_owner = NULL, evict_requested = false, updated_at = $4 WHERE id = $5",
                status, blocked_on, due, now, lease.execution_id,
            )  # fmt: skip
            await self._notify(conn, due)
            await self._add_audit(conn, audit)

        await self._db.write("parking a flow", body)

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
        args = (
            lease.execution_id, lease.worker, lease.token, status, result,
            to_json(error), now, self._channel, *audit_args(audit),
        )  # fmt: skip
        await self._db.statement(
            "finishing a flow",
            lambda conn: conn.execute(
                f"SELECT {self._s}.durable_finish($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
                "$11, $12, $13)",
                *args,
            ),
        )

    # -- unfenced changes --------------------------------------------------------------

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
        signals = self._t["signals"]

        async def body(conn: Connection) -> bool:
            if await self._status(conn, execution_id) in FINISHED:
                return False
            if unique and await conn.fetchval(
                f"SELECT true FROM {signals} WHERE execution_id = $1 AND name = $2 LIMIT 1",
                execution_id,
                name,
            ):
                return False
            await conn.execute(
                f"INSERT INTO {signals} (execution_id, name, payload) VALUES ($1, $2, $3)",
                execution_id,
                name,
                payload,
            )
            woken = await conn.fetchval(
                f"UPDATE {self._t['executions']} SET updated_at = $1, due_at = $1, "
                "status = 'pending', blocked_on = NULL "
                "WHERE id = $2 AND status IN ('sleeping', 'waiting') RETURNING true",
                now,
                execution_id,
            )
            if woken:
                await self._notify(conn, now)
            await self._add_audit(conn, audit)
            return True

        return await self._db.write("sending a signal", body)

    async def request_evict(
        self, execution_id: str, now: float, *, audit: Sequence[AuditEntry] = ()
    ) -> bool:
        async def body(conn: Connection) -> bool:
            if await self._status(conn, execution_id) not in ("running", "rolling_back"):
                return False
            await conn.execute(
                f"UPDATE {self._t['executions']} SET evict_requested = true, updated_at = $1 "
                "WHERE id = $2",
                now,
                execution_id,
            )
            await self._add_audit(conn, audit)
            return True

        return await self._db.write("asking a worker to park a flow", body)

    async def recover(
        self, execution_id: str, now: float, *, audit: Sequence[AuditEntry] = ()
    ) -> bool:
        async def body(conn: Connection) -> bool:
            if await self._status(conn, execution_id) != "failed":
                return False
            await conn.execute(
                f"DELETE FROM {self._t['journal']} WHERE execution_id = $1 AND status = 'failed'",
                execution_id,
            )
            await conn.execute(
                f"UPDATE {self._t['executions']} SET status = 'pending', error = NULL, "
                "result = NULL, due_at = $1, updated_at = $1 WHERE id = $2",
                now,
                execution_id,
            )
            await self._notify(conn, now)
            await self._add_audit(conn, audit)
            return True

        return await self._db.write("recovering a flow", body)

    async def wake(self, execution_id: str, now: float) -> bool:
        async def body(conn: Connection) -> bool:
            if await self._status(conn, execution_id) not in ("pending", "sleeping", "waiting"):
                return False
            await conn.execute(
                f"UPDATE {self._t['executions']} SET due_at = $1, updated_at = $1 WHERE id = $2",
                now,
                execution_id,
            )
            await self._notify(conn, now)
            return True

        return await self._db.write("waking a flow", body)

    async def cancel(
        self,
        execution_id: str,
        error: dict[str, Any],
        now: float,
        *,
        audit: Sequence[AuditEntry] = (),
    ) -> bool:
        async def body(conn: Connection) -> bool:
            if await self._status(conn, execution_id) in FINISHED:
                return False
            await self._end(conn, execution_id, "cancelled", None, error, now)
            await self._add_audit(conn, audit)
            return True

        return await self._db.write("cancelling a flow", body)

    async def delete(self, execution_id: str) -> bool:
        async def body(conn: Connection) -> bool:
            if await self._status(conn, execution_id) not in FINISHED:
                return False
            for table, column in (
                ("journal", "execution_id"),
                ("signals", "execution_id"),
                ("waits", "waiter"),
                ("audit", "execution_id"),
                ("executions", "id"),
            ):
                await conn.execute(
                    f"DELETE FROM {self._t[table]} WHERE {column} = $1", execution_id
                )
            return True

        return await self._db.write("deleting a flow", body)

    # -- audit timeline ----------------------------------------------------------------

    async def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        if entries:
            await self._db.write("storing audit lines", lambda conn: self._add_audit(conn, entries))

    async def audit(
        self, *, execution_id: str | None = None, after: int = 0, limit: int = 1000
    ) -> list[AuditEntry]:
        where = "seq > $1" + (" AND execution_id = $3" if execution_id is not None else "")
        params: list[Any] = [after, limit]
        if execution_id is not None:
            params.append(execution_id)

        async def body(conn: Connection) -> list[asyncpg.Record]:
            await self._sequence(conn)
            return await conn.fetch(
                f"SELECT seq, execution_id, kind, at, step, data FROM {self._t['audit']} "
                f"WHERE {where} ORDER BY seq LIMIT $2",
                *params,
            )

        rows = await self._db.write("reading the audit timeline", body)
        return [
            AuditEntry(
                r["execution_id"], r["kind"], r["at"], r["step"], json.loads(r["data"]), r["seq"]
            )
            for r in rows
        ]

    # -- notifications -----------------------------------------------------------------

    async def watch_due(self, flows: Collection[str], wake: Callable[[float], None]) -> None:
        """LISTEN on the schema's channel (a connection of its own) and call ``wake``
        (with the current time) on each notification, and when the earliest future
        ``due_at`` (a timer, a lapsing lease) or schedule tick comes; raises
        `DurableStoreError` when the connection is lost (the worker calls again: it
        wakes at once then). Every flow's work wakes: ``flows`` is not filtered on."""
        del flows
        await watch(
            lambda: asyncpg.connect(
                self.listen_dsn, timeout=self._db.command_timeout, **self._db.options
            ),
            self._channel,
            f"SELECT least((SELECT min(due_at) FROM {self._t['executions']} "
            f"WHERE due_at > $1), (SELECT min(next_at) FROM {self._t['schedules']} "
            "WHERE NOT paused AND next_at > $1))",
            lambda: wake(time.time()),
        )
