"""SQLite plumbing shared by the SQLite stores: connections, WAL start-up, write
transactions, schema versions and which errors are transient.

Everything here is blocking; stores run it on worker threads.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = ["SchemaError", "connect", "ensure_schema", "is_transient", "transaction", "use_wal"]

T = TypeVar("T")

SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_PROTOCOL", "SQLITE_IOERR", "SQLITE_FULL")


class SchemaError(Exception):
    """The file holds another schema version than this code reads."""


def is_transient(exc: sqlite3.Error) -> bool:
    """Busy, locked, I/O and full-disk failures: trying again later may work."""
    name = getattr(exc, "sqlite_errorname", "")
    if name:
        return bool(name.startswith(_TRANSIENT))
    return isinstance(exc, sqlite3.OperationalError)


def connect(path: str | Path, *, busy_timeout: float, synchronous: str) -> sqlite3.Connection:
    """A connection in autocommit mode, usable from any thread (one at a time)."""
    if synchronous.upper() not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS}")
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    except BaseException:
        conn.close()
        raise
    return conn


def use_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL mode (idempotent).

    Switching a new file needs an exclusive lock and SQLite does not always call the
    busy handler for it: processes starting together retry here."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            break
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorname", "").startswith("SQLITE_BUSY")
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
    if mode != "wal":
        raise sqlite3.OperationalError(f"SQLite refused WAL mode (got {mode!r})")


def transaction(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``body`` in one ``BEGIN IMMEDIATE`` write transaction; roll back if it raises.

    IMMEDIATE takes the write lock up front (waiting under the busy timeout); a
    deferred transaction that upgrades later fails at once when another process
    wrote in between."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def ensure_schema(conn: sqlite3.Connection, statements: Sequence[str], version: int) -> None:
    """Create the schema of ``version`` in a new file, in one transaction (processes
    opening a new file together never see half of it); `SchemaError` if the file
    holds tables of another version (``PRAGMA user_version``)."""

    def create(conn: sqlite3.Connection) -> None:
        (found,) = conn.execute("PRAGMA user_version").fetchone()
        if found == version:
            return
        (tables,) = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
        ).fetchone()
        if tables:
            raise SchemaError(f"schema version {found}, not {version}")
        for statement in statements:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")

    transaction(conn, create)
