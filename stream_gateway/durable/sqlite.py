"""`SqliteDurableStore`: the embedded default, on one SQLite file (stdlib ``sqlite3``).

WAL mode with ``synchronous=FULL`` by default: every committed write (a journal entry,
a claim) is fsynced before the call returns, so it survives a process crash and a
power loss. Several processes may share the file: each write runs in a ``BEGIN
IMMEDIATE`` transaction, so claims and fenced writes are atomic conditional updates
across processes. Calls run on a thread (`anyio.to_thread`) on one connection per
store instance; concurrent writes share one commit (see `_sqlite_conn`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from ._sqlite_conn import SqliteConnection
from .errors import ExecutionNotFoundError, LeaseLostError, ScheduleNotFoundError
from .records import (
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

__all__ = ["SqliteDurableStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    flow TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    owner TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    due_at REAL,
    lease_owner TEXT,
    lease_token INTEGER NOT NULL DEFAULT 0,
    blocked_on TEXT,
    result TEXT,
    error TEXT,
    parent TEXT,
    evict_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS executions_due ON executions (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS executions_parent ON executions (parent) WHERE parent IS NOT NULL;
CREATE TABLE IF NOT EXISTS journal (
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL,
    branch TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    wake_at REAL,
    stream_at INTEGER,
    UNIQUE (execution_id, branch, key)
);
CREATE TABLE IF NOT EXISTS signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    consumed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS signals_execution ON signals (execution_id, consumed);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL,
    step TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_execution ON audit (execution_id, seq);
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY,
    flow TEXT NOT NULL,
    input TEXT NOT NULL,
    owner TEXT,
    cron TEXT,
    interval REAL,
    timezone TEXT NOT NULL,
    overlap TEXT NOT NULL,
    paused INTEGER NOT NULL,
    next_at REAL,
    last_tick REAL,
    last_execution TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS schedules_due ON schedules (next_at) WHERE paused = 0;
CREATE TABLE IF NOT EXISTS waits (
    target TEXT NOT NULL,
    waiter TEXT NOT NULL,
    PRIMARY KEY (target, waiter)
) WITHOUT ROWID;
"""

_COLUMNS = (
    "id, flow, status, input, owner, created_at, updated_at, due_at, lease_owner, "
    "lease_token, blocked_on, result, error, seq, parent, evict_requested"
)
_VERSION = 4
#: How a file of an older version becomes the current one (from-version -> statements).
_MIGRATIONS = {
    3: [
        "ALTER TABLE executions ADD COLUMN evict_requested INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE journal ADD COLUMN stream_at INTEGER",
    ],
}
_LIVE = "('pending', 'sleeping', 'waiting', 'running', 'rolling_back')"
_FENCE = "id = ? AND status IN ('running', 'rolling_back') AND lease_owner = ? AND lease_token = ?"


def _record(row: tuple[Any, ...]) -> ExecutionRecord:
    return ExecutionRecord(
        id=row[0],
        flow=row[1],
        status=row[2],
        input=row[3],
        owner=row[4],
        created_at=row[5],
        updated_at=row[6],
        due_at=row[7],
        lease_owner=row[8],
        lease_token=row[9],
        blocked_on=row[10],
        result=row[11],
        error=json.loads(row[12]) if row[12] is not None else None,
        seq=row[13],
        parent=row[14],
        evict_requested=bool(row[15]),
    )


def _add_audit(conn: sqlite3.Connection, entries: Sequence[AuditEntry]) -> None:
    conn.executemany(
        "INSERT INTO audit (execution_id, kind, at, step, data) VALUES (?, ?, ?, ?, ?)",
        [(a.execution_id, a.kind, a.at, a.step, json.dumps(a.data)) for a in entries],
    )


_SCHEDULE_COLUMNS = (
    "id, flow, input, owner, cron, interval, timezone, overlap, paused, next_at, "
    "last_tick, last_execution, created_at, updated_at"
)


def _schedule(row: tuple[Any, ...]) -> Schedule:
    return Schedule(
        id=row[0],
        flow=row[1],
        input=row[2],
        owner=row[3],
        cron=row[4],
        interval=row[5],
        timezone=row[6],
        overlap=row[7],
        paused=bool(row[8]),
        next_at=row[9],
        last_tick=row[10],
        last_execution=row[11],
        created_at=row[12],
        updated_at=row[13],
    )


def _schedule_row(s: Schedule) -> tuple[Any, ...]:
    return (
        s.id,
        s.flow,
        s.input,
        s.owner,
        s.cron,
        s.interval,
        s.timezone,
        s.overlap,
        int(s.paused),
        s.next_at,
        s.last_tick,
        s.last_execution,
        s.created_at,
        s.updated_at,
    )


def _fence(lease: Lease) -> tuple[str, str, int]:
    return (lease.execution_id, lease.worker, lease.token)


class SqliteDurableStore(DurableStore):
    """A `DurableStore` in the SQLite file at ``path`` (created with its folder).

    ``synchronous`` is SQLite's setting: ``"FULL"`` (default) fsyncs every commit;
    ``"NORMAL"`` survives process crashes but may lose the last commits on power loss.
    """

    def __init__(
        self, path: str | Path, *, synchronous: str = "FULL", busy_timeout: float = 30.0
    ) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self._db = SqliteConnection(
            self.path,
            synchronous=self.synchronous,
            busy_timeout=busy_timeout,
            schema=_SCHEMA,
            version=_VERSION,
            migrations=_MIGRATIONS,
        )

    @property
    def connection(self) -> sqlite3.Connection | None:
        """The underlying connection once started (diagnostics: ``PRAGMA`` checks)."""
        return self._db.raw

    async def start(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def _read(self, sql: str, params: Collection[Any]) -> list[tuple[Any, ...]]:
        return await self._db.read(lambda conn: conn.execute(sql, tuple(params)).fetchall())

    # -- reads ---------------------------------------------------------------------

    async def get(self, execution_id: str) -> ExecutionRecord:
        rows = await self._read(f"SELECT {_COLUMNS} FROM executions WHERE id = ?", (execution_id,))
        if not rows:
            raise ExecutionNotFoundError("flow not found")
        return _record(rows[0])

    async def get_many(self, execution_ids: Collection[str]) -> dict[str, ExecutionRecord]:
        ids = list(execution_ids)
        found: dict[str, ExecutionRecord] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = await self._read(
                f"SELECT {_COLUMNS} FROM executions WHERE id IN ({marks})", part
            )
            found.update((row[0], _record(row)) for row in rows)
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
        where: list[str] = ["1"]
        params: list[Any] = []
        for column, value in (("status", status), ("flow", flow), ("parent", parent)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if not any_owner:
            where.append("owner IS ?")
            params.append(owner)
        if after is not None:
            where.append("seq < ?")
            params.append(after)
        sql = (
            f"SELECT {_COLUMNS} FROM executions WHERE {' AND '.join(where)} "
            "ORDER BY seq DESC LIMIT ?"
        )
        rows = await self._read(sql, [*params, limit])
        return [_record(row) for row in rows]

    async def history(self, execution_id: str) -> History:
        def read(conn: sqlite3.Connection) -> History:
            if not conn.execute(
                "SELECT 1 FROM executions WHERE id = ?", (execution_id,)
            ).fetchone():
                raise ExecutionNotFoundError("flow not found")
            entries = [
                JournalEntry(
                    seq=r[0],
                    kind=r[1],
                    key=r[2],
                    status=r[3],
                    result=r[4],
                    error=json.loads(r[5]) if r[5] is not None else None,
                    attempts=r[6],
                    started_at=r[7],
                    finished_at=r[8],
                    wake_at=r[9],
                    branch=r[10],
                    stream_at=r[11],
                )
                for r in conn.execute(
                    "SELECT seq, kind, key, status, result, error, attempts, started_at, "
                    "finished_at, wake_at, branch, stream_at FROM journal WHERE execution_id = ? "
                    "ORDER BY ord",
                    (execution_id,),
                )
            ]
            signals = [
                Signal(*row)
                for row in conn.execute(
                    "SELECT id, name, payload FROM signals WHERE execution_id = ? "
                    "AND consumed = 0 ORDER BY id",
                    (execution_id,),
                )
            ]
            return History(entries, signals)

        return await self._db.read(read)

    # -- writes --------------------------------------------------------------------

    async def create(
        self, record: ExecutionRecord, *, audit: Sequence[AuditEntry] = ()
    ) -> tuple[ExecutionRecord, bool]:
        return await self._db.write(lambda conn: self._create(conn, record, audit))

    @staticmethod
    def _create(
        conn: sqlite3.Connection, record: ExecutionRecord, audit: Sequence[AuditEntry]
    ) -> tuple[ExecutionRecord, bool]:
        cursor = conn.execute(
            "INSERT INTO executions (id, flow, status, input, owner, created_at, "
            "updated_at, due_at, parent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (
                record.id,
                record.flow,
                record.status,
                record.input,
                record.owner,
                record.created_at,
                record.updated_at,
                record.due_at,
                record.parent,
            ),
        )
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM executions WHERE id = ?", (record.id,)
        ).fetchone()
        if cursor.rowcount == 1:
            _add_audit(conn, audit)
        return _record(row), cursor.rowcount == 1

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
        names = sorted(flows)

        def body(conn: sqlite3.Connection) -> list[ExecutionRecord]:
            own = (
                "OR (status IN ('running', 'rolling_back') AND lease_owner = ?)"
                if reclaim_own
                else ""
            )
            marks = ",".join("?" * len(names))
            params: list[Any] = [worker, lease_until, now, now]
            if reclaim_own:
                params.append(worker)
            rows = conn.execute(
                "UPDATE executions SET status = CASE status WHEN 'rolling_back' "
                "THEN 'rolling_back' ELSE 'running' END, lease_owner = ?, "
                "lease_token = lease_token + 1, due_at = ?, blocked_on = NULL, updated_at = ?, "
                "evict_requested = 0 "
                "WHERE seq IN (SELECT seq FROM executions WHERE "
                f"((due_at <= ? AND status IN {_LIVE}) {own}) AND flow IN ({marks}) "
                "ORDER BY due_at LIMIT ?) "
                f"RETURNING {_COLUMNS}",
                [*params, *names, limit],
            ).fetchall()
            return sorted((_record(r) for r in rows), key=lambda r: r.seq)

        return await self._db.write(body)

    async def renew(self, worker: str, leases: Collection[Lease], lease_until: float) -> set[str]:
        def body(conn: sqlite3.Connection) -> set[str]:
            held = set()
            for lease in leases:
                cursor = conn.execute(
                    f"UPDATE executions SET due_at = ? WHERE {_FENCE}",
                    (lease_until, *_fence(lease)),
                )
                if cursor.rowcount:
                    held.add(lease.execution_id)
            return held

        if not leases:
            return set()
        return await self._db.write(body)

    @staticmethod
    def _check(conn: sqlite3.Connection, lease: Lease) -> None:
        if not conn.execute(f"SELECT 1 FROM executions WHERE {_FENCE}", _fence(lease)).fetchone():
            raise LeaseLostError(f"lease on flow {lease.execution_id} was lost")

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
        def body(conn: sqlite3.Connection) -> None:
            self._check(conn, lease)
            for signal_id in consume:
                used = conn.execute(
                    "UPDATE signals SET consumed = 1 WHERE id = ? AND execution_id = ? "
                    "AND consumed = 0",
                    (signal_id, lease.execution_id),
                )
                if used.rowcount != 1:
                    raise ValueError(f"signal {signal_id} is not waiting to be consumed")
            for written in [*preceding, entry]:
                self._write_entry(conn, lease, written)
            _add_audit(conn, audit)

        await self._db.write(body)

    @staticmethod
    def _write_entry(conn: sqlite3.Connection, lease: Lease, entry: JournalEntry) -> None:
        cursor = conn.execute(
            "INSERT INTO journal (execution_id, branch, seq, kind, key, status, result, "
            "error, attempts, started_at, finished_at, wake_at, stream_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (execution_id, branch, key) DO UPDATE SET status = excluded.status, "
            "result = excluded.result, error = excluded.error, "
            "attempts = excluded.attempts, finished_at = excluded.finished_at, "
            "wake_at = excluded.wake_at, stream_at = excluded.stream_at "
            "WHERE journal.status NOT IN ('completed', 'failed')",
            (
                lease.execution_id,
                entry.branch,
                entry.seq,
                entry.kind,
                entry.key,
                entry.status,
                entry.result,
                json.dumps(entry.error) if entry.error is not None else None,
                entry.attempts,
                entry.started_at,
                entry.finished_at,
                entry.wake_at,
                entry.stream_at,
            ),
        )
        if cursor.rowcount != 1:
            raise ValueError(f"journal entry {entry.path!r} is final")

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

        def body(conn: sqlite3.Connection) -> None:
            self._check(conn, lease)
            conn.execute(
                "UPDATE executions SET status = ?, updated_at = ? WHERE id = ?",
                (status, now, lease.execution_id),
            )
            _add_audit(conn, audit)

        await self._db.write(body)

    async def prune(self, lease: Lease, branches: Collection[str], now: float) -> None:
        def body(conn: sqlite3.Connection) -> None:
            self._check(conn, lease)
            for branch in branches:
                prefix = branch.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                conn.execute(
                    "DELETE FROM journal WHERE execution_id = ? AND (branch = ? "
                    "OR branch LIKE ? ESCAPE '\\')",
                    (lease.execution_id, branch, prefix + "/%"),
                )

        if branches:
            await self._db.write(body)

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

        def body(conn: sqlite3.Connection) -> None:
            self._check(conn, lease)
            due = wake_at
            if names:
                marks = ",".join("?" * len(names))
                if conn.execute(
                    "SELECT 1 FROM signals WHERE execution_id = ? AND consumed = 0 "
                    f"AND name IN ({marks}) LIMIT 1",
                    (lease.execution_id, *names),
                ).fetchone():
                    due = now
            for target in wait_for:
                conn.execute(
                    "INSERT OR IGNORE INTO waits (target, waiter) VALUES (?, ?)",
                    (target, lease.execution_id),
                )
                row = conn.execute(
                    "SELECT status FROM executions WHERE id = ?", (target,)
                ).fetchone()
                if row is None or row[0] in ("completed", "failed", "cancelled"):
                    due = now
            conn.execute(
                "UPDATE executions SET status = ?, blocked_on = ?, due_at = ?, "
                "lease_owner = NULL, evict_requested = 0, updated_at = ? WHERE id = ?",
                (status, blocked_on, due, now, lease.execution_id),
            )
            _add_audit(conn, audit)

        await self._db.write(body)

    @staticmethod
    def _end(
        conn: sqlite3.Connection,
        execution_id: str,
        status: str,
        result: str | None,
        error: dict[str, Any] | None,
        now: float,
    ) -> None:
        conn.execute(
            "UPDATE executions SET status = ?, result = ?, error = ?, due_at = NULL, "
            "lease_owner = NULL, blocked_on = NULL, evict_requested = 0, updated_at = ? "
            "WHERE id = ?",
            (status, result, json.dumps(error) if error is not None else None, now, execution_id),
        )
        conn.execute(
            "UPDATE executions SET due_at = ? WHERE status = 'waiting' AND id IN "
            "(SELECT waiter FROM waits WHERE target = ?)",
            (now, execution_id),
        )
        conn.execute("DELETE FROM waits WHERE target = ?", (execution_id,))

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
        def body(conn: sqlite3.Connection) -> None:
            self._check(conn, lease)
            self._end(conn, lease.execution_id, status, result, error, now)
            _add_audit(conn, audit)

        await self._db.write(body)

    def _status(self, conn: sqlite3.Connection, execution_id: str) -> tuple[str, str | None]:
        row = conn.execute(
            "SELECT status, blocked_on FROM executions WHERE id = ?", (execution_id,)
        ).fetchone()
        if row is None:
            raise ExecutionNotFoundError("flow not found")
        return row[0], row[1]

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
        def body(conn: sqlite3.Connection) -> bool:
            status, _ = self._status(conn, execution_id)
            if status in ("completed", "failed", "cancelled"):
                return False
            if (
                unique
                and conn.execute(
                    "SELECT 1 FROM signals WHERE execution_id = ? AND name = ?",
                    (execution_id, name),
                ).fetchone()
            ):
                return False
            conn.execute(
                "INSERT INTO signals (execution_id, name, payload) VALUES (?, ?, ?)",
                (execution_id, name, payload),
            )
            conn.execute(
                "UPDATE executions SET updated_at = ?, due_at = ?, status = 'pending', "
                "blocked_on = NULL WHERE id = ? AND status IN ('sleeping', 'waiting')",
                (now, now, execution_id),
            )
            _add_audit(conn, audit)
            return True

        return await self._db.write(body)

    async def request_evict(
        self, execution_id: str, now: float, *, audit: Sequence[AuditEntry] = ()
    ) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            status, _ = self._status(conn, execution_id)
            if status not in ("running", "rolling_back"):
                return False
            conn.execute(
                "UPDATE executions SET evict_requested = 1, updated_at = ? WHERE id = ?",
                (now, execution_id),
            )
            _add_audit(conn, audit)
            return True

        return await self._db.write(body)

    async def recover(
        self, execution_id: str, now: float, *, audit: Sequence[AuditEntry] = ()
    ) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            status, _ = self._status(conn, execution_id)
            if status != "failed":
                return False
            conn.execute(
                "DELETE FROM journal WHERE execution_id = ? AND status = 'failed'", (execution_id,)
            )
            conn.execute(
                "UPDATE executions SET status = 'pending', error = NULL, result = NULL, "
                "due_at = ?, updated_at = ? WHERE id = ?",
                (now, now, execution_id),
            )
            _add_audit(conn, audit)
            return True

        return await self._db.write(body)

    async def wake(self, execution_id: str, now: float) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            status, _ = self._status(conn, execution_id)
            if status not in ("pending", "sleeping", "waiting"):
                return False
            conn.execute(
                "UPDATE executions SET due_at = ?, updated_at = ? WHERE id = ?",
                (now, now, execution_id),
            )
            return True

        return await self._db.write(body)

    async def cancel(
        self,
        execution_id: str,
        error: dict[str, Any],
        now: float,
        *,
        audit: Sequence[AuditEntry] = (),
    ) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            status, _ = self._status(conn, execution_id)
            if status in ("completed", "failed", "cancelled"):
                return False
            self._end(conn, execution_id, "cancelled", None, error, now)
            _add_audit(conn, audit)
            return True

        return await self._db.write(body)

    async def delete(self, execution_id: str) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            status, _ = self._status(conn, execution_id)
            if status not in ("completed", "failed", "cancelled"):
                return False
            for table, column in (
                ("executions", "id"),
                ("journal", "execution_id"),
                ("signals", "execution_id"),
                ("waits", "waiter"),
                ("audit", "execution_id"),
            ):
                conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (execution_id,))
            return True

        return await self._db.write(body)

    # -- audit timeline ----------------------------------------------------------------

    async def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        if entries:
            await self._db.write(lambda conn: _add_audit(conn, entries))

    async def audit(
        self, *, execution_id: str | None = None, after: int = 0, limit: int = 1000
    ) -> list[AuditEntry]:
        where, params = "seq > ?", [after]
        if execution_id is not None:
            where += " AND execution_id = ?"
            params.append(execution_id)  # type: ignore[arg-type]
        rows = await self._read(
            f"SELECT seq, execution_id, kind, at, step, data FROM audit WHERE {where} "
            "ORDER BY seq LIMIT ?",
            [*params, limit],
        )
        return [AuditEntry(r[1], r[2], r[3], r[4], json.loads(r[5]), r[0]) for r in rows]

    # -- recurring schedules -----------------------------------------------------------

    async def create_schedule(self, schedule: Schedule) -> tuple[Schedule, bool]:
        def body(conn: sqlite3.Connection) -> tuple[Schedule, bool]:
            marks = ",".join("?" * 14)
            cursor = conn.execute(
                f"INSERT INTO schedules ({_SCHEDULE_COLUMNS}) VALUES ({marks}) "
                "ON CONFLICT (id) DO NOTHING",
                _schedule_row(schedule),
            )
            row = conn.execute(
                f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE id = ?", (schedule.id,)
            ).fetchone()
            return _schedule(row), cursor.rowcount == 1

        return await self._db.write(body)

    async def put_schedule(self, schedule: Schedule) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            columns = _SCHEDULE_COLUMNS.split(", ")[1:]
            sets = ", ".join(f"{c} = ?" for c in columns)
            row = _schedule_row(schedule)
            cursor = conn.execute(
                f"UPDATE schedules SET {sets} WHERE id = ?", (*row[1:], schedule.id)
            )
            return cursor.rowcount == 1

        return await self._db.write(body)

    async def get_schedule(self, schedule_id: str) -> Schedule:
        rows = await self._read(
            f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE id = ?", (schedule_id,)
        )
        if not rows:
            raise ScheduleNotFoundError("schedule not found")
        return _schedule(rows[0])

    async def list_schedules(
        self,
        *,
        owner: str | None = None,
        any_owner: bool = True,
        after: str | None = None,
        limit: int = 50,
    ) -> list[Schedule]:
        where: list[str] = ["1"]
        params: list[Any] = []
        if after is not None:
            where.append("id > ?")
            params.append(after)
        if not any_owner:
            where.append("owner IS ?")
            params.append(owner)
        rows = await self._read(
            f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE {' AND '.join(where)} "
            "ORDER BY id LIMIT ?",
            [*params, limit],
        )
        return [_schedule(r) for r in rows]

    async def delete_schedule(self, schedule_id: str) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,)).rowcount == 1

        return await self._db.write(body)

    async def due_schedules(self, now: float, limit: int) -> list[Schedule]:
        rows = await self._read(
            f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE paused = 0 AND next_at <= ? "
            "ORDER BY next_at, id LIMIT ?",
            (now, limit),
        )
        return [_schedule(r) for r in rows]

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
        def body(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE schedules SET next_at = ?, last_tick = ?, updated_at = ?, "
                "last_execution = COALESCE(?, last_execution) "
                "WHERE id = ? AND paused = 0 AND next_at = ?",
                (next_at, tick, now, execution.id if execution else None, schedule_id, tick),
            )
            if cursor.rowcount != 1:
                return False
            if execution is not None:
                self._create(conn, execution, ())
            _add_audit(conn, audit)
            return True

        return await self._db.write(body)
