"""One SQLite connection on a worker thread, with group commit for writes.

Reads and writes run on a thread (`anyio.to_thread`), one call at a time. Writes are
queued: whoever finds no batch in progress becomes the leader and commits everything
queued so far in one ``BEGIN IMMEDIATE`` ... ``COMMIT`` (one fsync), each write in its
own ``SAVEPOINT`` so that one that raises is rolled back alone. A lone write costs
what a plain transaction costs; concurrent writes (many executions stepping at once)
share their fsync. A write's call returns only after its batch committed.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread

from .._sqlite import SchemaError, connect, ensure_schema, is_transient, transaction, use_wal
from .errors import DurableStoreError

__all__ = ["SqliteConnection", "store_error"]

logger = logging.getLogger("stream_gateway.durable")


def store_error(exc: sqlite3.Error) -> DurableStoreError:
    """A client-safe `DurableStoreError` for ``exc`` (its text goes to the log only).

    Busy, locked, I/O and full-disk failures are transient (the same classes the
    stream store retries); a corrupt file or a bug is not."""
    name = getattr(exc, "sqlite_errorname", "?")
    transient = is_transient(exc)
    logger.warning("durable store: %s: %s (%s)", type(exc).__name__, exc, name)
    error = DurableStoreError("the durable store is unavailable", transient=transient)
    error.__cause__ = exc
    return error


T = TypeVar("T")


class _Write(Generic[T]):
    __slots__ = ("body", "done", "error", "value")

    def __init__(self, body: Callable[[sqlite3.Connection], T]) -> None:
        self.body = body
        self.done = anyio.Event()
        self.value: T | None = None
        self.error: BaseException | None = None


class SqliteConnection:
    """The connection to ``path``; opened by `open` with ``schema`` applied."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str,
        busy_timeout: float,
        schema: str,
        version: int,
        migrations: Mapping[int, Sequence[str]] | None = None,
    ) -> None:
        self.path = path
        self._migrations = dict(migrations or {})
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._schema = schema
        self._version = version
        self._conn: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._queue: list[_Write[Any]] = []
        self._leading = False
        self._opening = anyio.Lock()

    @property
    def raw(self) -> sqlite3.Connection | None:
        """The underlying connection (for diagnostics), ``None`` until opened."""
        return self._conn

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path, busy_timeout=self._busy_timeout, synchronous=self._synchronous)
        try:
            use_wal(conn, self._busy_timeout)
            transaction(conn, self._migrate)
            ensure_schema(conn, [s for s in self._schema.split(";") if s.strip()], self._version)
        except SchemaError as exc:
            conn.close()
            raise DurableStoreError(
                f"{self.path} holds {exc}: it was made by another version of "
                "stream-gateway (move it aside)",
                transient=False,
            ) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring a file of an older version with a known path forward, in one
        transaction (`ensure_schema` then finds it current)."""
        (found,) = conn.execute("PRAGMA user_version").fetchone()
        while found != self._version and found in self._migrations:
            for statement in self._migrations[found]:
                conn.execute(statement)
            found += 1
            conn.execute(f"PRAGMA user_version = {found}")

    async def open(self) -> None:
        async with self._opening:
            if self._conn is not None:
                return
            try:
                self._conn = await anyio.to_thread.run_sync(self._connect, limiter=self._limiter)
            except sqlite3.Error as exc:
                raise store_error(exc) from exc

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the thread (autocommit: each statement sees committed data)."""
        if self._conn is None:
            await self.open()
        conn = self._conn
        assert conn is not None
        try:
            return await anyio.to_thread.run_sync(fn, conn, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise store_error(exc) from exc

    async def write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body(conn)`` atomically in the next group commit; its value or error."""
        if self._conn is None:
            await self.open()
        write = _Write(body)
        self._queue.append(write)
        if self._leading:
            await write.done.wait()
        else:
            self._leading = True
            try:
                # Shielded: the writes queued behind this leader must not be orphaned.
                with anyio.CancelScope(shield=True):
                    while self._queue:
                        batch, self._queue = self._queue, []
                        try:
                            await anyio.to_thread.run_sync(
                                self._commit, batch, limiter=self._limiter
                            )
                        except Exception as exc:  # a bug or a dead connection: fail them all
                            for queued in batch:
                                queued.error = queued.error or exc
                        finally:
                            for queued in batch:
                                queued.done.set()
            finally:
                self._leading = False
        if write.error is not None:
            if isinstance(write.error, sqlite3.Error):
                raise store_error(write.error) from write.error
            raise write.error
        return write.value  # type: ignore[return-value]

    def _commit(self, batch: list[_Write[Any]]) -> None:
        conn = self._conn
        try:
            assert conn is not None, "durable store is closed"
            conn.execute("BEGIN IMMEDIATE")
        except (sqlite3.Error, AssertionError) as exc:
            for write in batch:
                write.error = exc
            return
        for write in batch:
            conn.execute("SAVEPOINT w")
            try:
                write.value = write.body(conn)
            except Exception as exc:
                write.error = exc
                conn.execute("ROLLBACK TO w")
            conn.execute("RELEASE w")
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for write in batch:
                if write.error is None:
                    write.error = exc
