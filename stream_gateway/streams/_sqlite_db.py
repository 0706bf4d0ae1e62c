"""The SQLite file behind `SqliteStreamStorage`: schema, connections, errors, rows.

Layout (schema version 2, kept in ``PRAGMA user_version``; a version 1 file is
migrated in place when opened, see `_MIGRATIONS`)::

    streams(id PK, flow, status, length, created_at, updated_at, expires_at, owner,
            lease_until, cancel_requested, terminal_kind, terminal_payload, extra,
            compacted)
        index streams_by_creation (created_at DESC, id DESC)
    batches(stream_id, first_offset, count, data)    PK (stream_id, first_offset)

Everything here is blocking; the storage runs it in worker threads.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any, cast

from .._errors import InternalError, UnavailableError
from .._json import dumps, loads
from .._sqlite import SYNCHRONOUS as SYNCHRONOUS
from .._sqlite import connect as connect
from .._sqlite import is_transient, use_wal
from .._sqlite import transaction as transaction
from .base import StreamRecord, StreamStatus, Terminal

logger = logging.getLogger("stream_gateway.streams")

SCHEMA_VERSION = 2
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS streams (
        id TEXT PRIMARY KEY, flow TEXT NOT NULL, status TEXT NOT NULL,
        length INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
        expires_at REAL NOT NULL, owner TEXT, lease_until REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0, terminal_kind TEXT,
        terminal_payload BLOB, extra TEXT NOT NULL DEFAULT '{}', compacted INTEGER)""",
    "CREATE INDEX IF NOT EXISTS streams_by_expiry ON streams (expires_at)",
    """CREATE TABLE IF NOT EXISTS batches (
        stream_id TEXT NOT NULL, first_offset INTEGER NOT NULL, count INTEGER NOT NULL,
        data BLOB NOT NULL, PRIMARY KEY (stream_id, first_offset))""",
)
#: How a file of an older version becomes the current one (from-version -> statements),
#: in the transaction that opens it. Version 2 added ``compacted`` (stream compaction).
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE streams ADD COLUMN compacted INTEGER",),
}
# Indexes added since version 1, created on every start if missing: an index changes
# no row, so files made by older releases take them without a version bump (and those
# releases keep opening the file).
_INDEXES = (
    # Listing newest first (`list_streams`) seeks through this instead of sorting.
    "CREATE INDEX IF NOT EXISTS streams_by_creation ON streams (created_at DESC, id DESC)",
)
COLUMNS = (
    "id, flow, created_at, updated_at, expires_at, owner, status, length,"
    " lease_until, cancel_requested, terminal_kind, terminal_payload, extra, compacted"
)
_MAX_PARAMS = 500  # ids per IN (...) list, well under SQLite's variable limit


def translate_error(exc: sqlite3.Error) -> Exception:
    """Busy, locked, I/O and full-disk errors become `UnavailableError` (the manager
    retries); a corrupt file a clear `InternalError`; anything else stays as is."""
    name = getattr(exc, "sqlite_errorname", "")
    # The messages may reach clients; the cause (paths, driver text) goes to the log.
    if name and is_transient(exc):
        logger.warning("stream database unavailable: %s (%s)", exc, name)
        return UnavailableError("stream database unavailable")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        logger.error("stream database is corrupt or not a SQLite database: %s", exc)
        return InternalError("Internal Error")
    return exc


def prepare(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL and create the schema if it is new (idempotent)."""
    try:
        use_wal(conn, busy_timeout)
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorname", ""):
            raise
        raise InternalError(str(exc)) from None  # WAL refused (a file system without it)
    version = transaction(conn, _create_schema)
    if version > SCHEMA_VERSION:
        raise InternalError(
            f"stream schema v{version} is newer than this stream-gateway's v{SCHEMA_VERSION}"
        )


def _create_schema(conn: sqlite3.Connection) -> int:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version == 0:
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    elif version < SCHEMA_VERSION:
        for step in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS[step]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        logger.info("stream database migrated from schema v%d to v%d", version, SCHEMA_VERSION)
    if version <= SCHEMA_VERSION:
        for statement in _INDEXES:
            conn.execute(statement)
    return int(version)


def placeholders(values: Sequence[Any]) -> str:
    """``(?,?,...)``: one parameter per value."""
    return f"({','.join('?' * len(values))})"


def parts(ids: Collection[str]) -> list[list[str]]:
    """``ids`` in lists short enough for one ``IN (...)`` each."""
    ordered = list(ids)
    return [ordered[i : i + _MAX_PARAMS] for i in range(0, len(ordered), _MAX_PARAMS)]


#: Values of the ``cancel_requested`` column: a cancel (1) outranks a stop (2).
CANCEL, STOP = 1, 2


def flags(record: StreamRecord) -> int:
    """The ``cancel_requested`` column of a record."""
    return CANCEL if record.cancel_requested else STOP if record.stop_requested else 0


def record_row(record: StreamRecord) -> tuple[Any, ...]:
    """The ``streams`` row of a record, in `COLUMNS` order."""
    terminal = record.terminal
    return (
        record.stream_id, record.flow, record.created_at, record.updated_at,
        record.expires_at, record.owner, record.status, record.length,
        record.lease_until, flags(record),
        None if terminal is None else terminal.kind,
        None if terminal is None else terminal.payload,
        dumps(record.extra).decode(), record.compacted,
    )  # fmt: skip


def row_record(row: Any) -> StreamRecord:
    """The record of a ``streams`` row selected in `COLUMNS` order."""
    sid, flow, created, updated, expires, owner, status, length, lease, cancel, kind = row[:11]
    return StreamRecord(
        stream_id=sid,
        flow=flow,
        created_at=created,
        updated_at=updated,
        expires_at=expires,
        owner=owner,
        status=cast(StreamStatus, status),
        length=length,
        lease_until=lease,
        cancel_requested=cancel == CANCEL,
        stop_requested=cancel == STOP,
        terminal=None if kind is None else Terminal(kind, row[11]),
        extra=loads(row[12]),
        compacted=row[13],
    )


def read_states(conn: sqlite3.Connection, ids: Collection[str]) -> dict[str, Any]:
    """(length, status) of each stream, ``None`` for a stream that is gone."""
    states: dict[str, Any] = dict.fromkeys(ids)
    for part in parts(ids):
        sql = f"SELECT id, length, status FROM streams WHERE id IN {placeholders(part)}"
        for sid, length, status in conn.execute(sql, part):
            states[sid] = (length, status)
    return states
