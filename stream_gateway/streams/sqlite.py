"""SQLite streams: the embedded durable default, shared by the processes of one host.

One file holds a ``streams`` table (the records) and a ``batches`` table with one row
per append: the chunks joined by ``\\n`` (compact JSON never has a raw newline), keyed
by (stream id, first offset); see `_sqlite_db` for the schema. An append writes its row
and the record's ``length`` in one transaction, so `load` is exact; a retried append at
the same offset replaces its row. A read seeks to the batch holding its offset.

Durability (the WAL journal; ``synchronous`` chooses when SQLite calls fsync):

- A crash of the process (an exception, SIGKILL, OOM kill) loses, in every mode, only
  what the writer had not flushed yet (at most ``flush_interval`` of chunks) and a
  terminal entry not yet recorded: a commit reaches the OS before it returns.
- An OS crash or power loss, with ``"FULL"`` (the default): nothing committed is lost;
  every commit is synced to disk before it returns.
- An OS crash or power loss, with ``"NORMAL"``: the WAL is synced only when it is
  checkpointed (about every 1,000 pages, ~4 MiB), so *every* commit since the last
  checkpoint may be rolled back: whole streams, finished ones included, not only the
  last chunks. The file stays consistent. Faster when commits are frequent.
- ``"OFF"`` may also corrupt the file on an OS crash; ``"EXTRA"`` is ``"FULL"`` here.

Each call runs in a worker thread (`anyio.to_thread`). Writes go through one
connection and reads through another, each used by one call at a time, so that a
subscriber never waits behind a write that waits for another process's lock. Other
processes' commits reach `watch` through one `ChangePoller` per storage.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import anyio

from .._errors import (
    InternalError,
    InvalidArgumentError,
    StreamClosedError,
    StreamExistsError,
    StreamNotFoundError,
    UnavailableError,
)
from . import _sqlite_db as db
from ._sqlite_poller import ChangePoller
from .base import StreamFilter, StreamPage, StreamRecord, StreamStorage, Terminal
from .manager import StreamManager

__all__ = ["SqliteStreamManager", "SqliteStreamStorage"]

T = TypeVar("T")

# The batch holding `offset` (the last one starting at or before it) and those after
# it, up to `end`: two seeks on the primary key, however long the stream.
_READ = """SELECT first_offset, count, data FROM batches
    WHERE stream_id = :id AND first_offset < :end AND first_offset >= IFNULL(
        (SELECT first_offset FROM batches WHERE stream_id = :id AND first_offset <= :offset
         ORDER BY first_offset DESC LIMIT 1), 0)
    ORDER BY first_offset"""
_PURGE_ROUND = 256  # streams deleted per transaction, so other writers get a turn


class SqliteStreamStorage(StreamStorage):
    """Streams in one SQLite file (WAL), shared live by the processes of a host.

    ``flush_interval``: the default batching window (a crash loses at most this much).
    ``poll_interval``: how often `watch` looks for other processes' commits.
    ``synchronous``: ``"FULL"`` (default) loses nothing committed, even on an OS
    crash or power loss; ``"NORMAL"`` survives process crashes only, and an OS
    fault may roll back every commit since the last WAL checkpoint (see the module
    docstring).
    ``busy_timeout``: seconds a call waits for another process's write lock before it
    raises `UnavailableError` (which the manager retries).
    """

    shared = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = 0.02,
        poll_interval: float = 0.02,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
    ) -> None:
        if synchronous.upper() not in db.SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(db.SYNCHRONOUS)}")
        if poll_interval <= 0 or busy_timeout < 0:
            raise ValueError("poll_interval must be positive and busy_timeout >= 0")
        self.path = os.fspath(path)
        self.flush_interval = flush_interval
        self.poll_interval = poll_interval
        self.synchronous = synchronous.upper()
        self.busy_timeout = busy_timeout
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_lock = anyio.Lock()
        self._read_lock = anyio.Lock()
        self._closed = False
        self._connect = functools.partial(
            db.connect, self.path, busy_timeout=busy_timeout, synchronous=self.synchronous
        )
        self._poller = ChangePoller(
            self._connect, db.read_states, db.translate_error, poll_interval
        )

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the file in WAL mode, creating it, its schema and its missing parent
        directories if need be."""
        if self._writer is not None or self._closed:
            raise RuntimeError("SqliteStreamStorage.start() may be called once")
        self._writer, self._reader = await anyio.to_thread.run_sync(self._open)

    async def close(self) -> None:
        """Stop watching and close the connections. The storage cannot be restarted."""
        self._closed = True
        await self._poller.close()
        for conn, lock in ((self._writer, self._write_lock), (self._reader, self._read_lock)):
            if conn is not None:
                async with lock:  # after the call in flight, if any
                    await anyio.to_thread.run_sync(conn.close)
        self._writer = self._reader = None

    def _open(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        self._make_parent_dirs()
        conns: list[sqlite3.Connection] = []
        try:
            conns.append(self._connect())
            db.prepare(conns[0], self.busy_timeout)
            conns.append(self._connect())
            return conns[0], conns[1]
        except BaseException as exc:
            for conn in conns:
                conn.close()
            if isinstance(exc, InternalError):
                raise InternalError(f"{self.path}: {exc}") from exc
            if not isinstance(exc, sqlite3.Error):
                raise
            if isinstance(db.translate_error(exc), UnavailableError):
                raise UnavailableError(f"{self.path}: {exc}") from exc
            raise InternalError(f"cannot open stream database {self.path}: {exc}") from exc

    def _make_parent_dirs(self) -> None:
        """Create the file's missing parent directories (``.data/`` in ``.data/streams.db``)."""
        if self.path in ("", ":memory:"):
            return
        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise InternalError(
                f"cannot create the directory of stream database {self.path}: {exc}"
            ) from exc

    def _connection(self, write: bool) -> sqlite3.Connection:
        conn = self._writer if write else self._reader
        if conn is None:
            state = "closed" if self._closed else "not started: call `await storage.start()`"
            raise RuntimeError(f"SqliteStreamStorage is {state} (a StreamManager starts it)")
        return conn

    async def _run(self, write: bool, call: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection(write)
        async with self._write_lock if write else self._read_lock:
            try:
                return await anyio.to_thread.run_sync(call, conn)
            except sqlite3.Error as exc:
                error = db.translate_error(exc)
                if error is exc:
                    raise
                raise error from exc

    # -- the contract ------------------------------------------------------------------

    async def create(self, record: StreamRecord) -> None:
        row = db.record_row(record)
        sql = f"INSERT INTO streams ({db.COLUMNS}) VALUES {db.placeholders(row)}"
        try:
            await self._run(True, lambda conn: conn.execute(sql, row))
        except sqlite3.IntegrityError:
            raise StreamExistsError(f"stream {record.stream_id} exists") from None

    async def append(self, stream_id: str, offset: int, chunks: Sequence[bytes]) -> None:
        data = b"\n".join(chunks)
        if data.count(b"\n") != len(chunks) - 1:
            raise InvalidArgumentError("a chunk contains a raw newline: not compact JSON")

        def body(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT status FROM streams WHERE id = ?", (stream_id,)).fetchone()
            if row is None or row[0] != "open":
                return None if row is None else str(row[0])
            conn.execute(
                "INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?)",
                (stream_id, offset, len(chunks), data),
            )
            conn.execute(
                "UPDATE streams SET length = MAX(length, ?) WHERE id = ?",
                (offset + len(chunks), stream_id),
            )
            return "open"

        status = await self._run(True, lambda conn: db.transaction(conn, body))
        if status is None:
            raise StreamNotFoundError(f"stream {stream_id} not found")
        if status != "open":
            raise StreamClosedError(f"stream {stream_id} is finished")

    async def finish(
        self, stream_id: str, length: int, terminal: Terminal, *, now: float, expires_at: float
    ) -> None:
        # Only an open stream: an end recorded already (abandoned) stands.
        sql = """UPDATE streams SET status = ?, terminal_kind = ?, terminal_payload = ?,
            length = ?, updated_at = ?, expires_at = ?, lease_until = NULL
            WHERE id = ? AND status = 'open'"""
        args = (terminal.kind, terminal.kind, terminal.payload, length, now, expires_at, stream_id)

        def body(conn: sqlite3.Connection) -> bool:
            if conn.execute(sql, args).rowcount:
                return True
            return (
                conn.execute("SELECT 1 FROM streams WHERE id = ?", (stream_id,)).fetchone()
                is not None
            )

        if not await self._run(True, lambda conn: db.transaction(conn, body)):
            raise StreamNotFoundError(f"stream {stream_id} not found")

    async def abandon(
        self, stream_id: str, terminal: Terminal, *, now: float, expires_at: float
    ) -> bool:
        # ``length`` is exact here: every append updates it in its own transaction.
        sql = """UPDATE streams SET status = ?, terminal_kind = ?, terminal_payload = ?,
            updated_at = ?, expires_at = ?, lease_until = NULL
            WHERE id = ? AND status = 'open' AND lease_until < ?"""
        args = (terminal.kind, terminal.kind, terminal.payload, now, expires_at, stream_id, now)
        return bool(await self._run(True, lambda conn: conn.execute(sql, args).rowcount))

    async def compact(self, stream_id: str, length: int, entries: Sequence[bytes]) -> bool:
        """One transaction: mark the record, delete its batches, write the entries as
        one batch at offset 0 (readers see the stream before or after, never between)."""
        if not 1 <= len(entries) <= length:
            raise ValueError("a compacted stream holds between 1 and `length` entries")
        data = b"\n".join(entries)
        if data.count(b"\n") != len(entries) - 1:
            raise InvalidArgumentError("an entry contains a raw newline: not compact JSON")
        mark = """UPDATE streams SET compacted = ? WHERE id = ? AND status <> 'open'
            AND length = ? AND compacted IS NULL"""

        def body(conn: sqlite3.Connection) -> bool:
            if not conn.execute(mark, (len(entries), stream_id, length)).rowcount:
                return False
            conn.execute("DELETE FROM batches WHERE stream_id = ?", (stream_id,))
            conn.execute("INSERT INTO batches VALUES (?, 0, ?, ?)", (stream_id, len(entries), data))
            return True

        return await self._run(True, lambda conn: db.transaction(conn, body))

    async def load(self, stream_id: str) -> StreamRecord | None:
        sql = f"SELECT {db.COLUMNS} FROM streams WHERE id = ?"
        row = await self._run(False, lambda conn: conn.execute(sql, (stream_id,)).fetchone())
        return None if row is None else db.row_record(row)

    async def read(self, stream_id: str, offset: int, limit: int) -> list[bytes]:
        end = offset + limit
        params = {"id": stream_id, "offset": offset, "end": end}
        rows = await self._run(False, lambda conn: conn.execute(_READ, params).fetchall())
        chunks: list[bytes] = []
        for first, count, data in rows:
            if first > offset + len(chunks):
                break  # a gap; batches are dense, so this is only defence
            chunks.extend(data.split(b"\n")[max(offset - first, 0) : min(end - first, count)])
        return chunks

    async def renew(
        self, stream_ids: Sequence[str], lease_until: float, expires_at: float
    ) -> set[str]:
        def body(conn: sqlite3.Connection) -> set[str]:
            cancelled: set[str] = set()
            for part in db.parts(stream_ids):
                where = f"WHERE status = 'open' AND id IN {db.placeholders(part)}"
                conn.execute(
                    f"UPDATE streams SET lease_until = ?, expires_at = ? {where}",
                    (lease_until, expires_at, *part),
                )
                rows = conn.execute(f"SELECT id FROM streams {where} AND cancel_requested", part)
                cancelled.update(sid for (sid,) in rows)
                # Finished elsewhere (abandoned) or gone: their writers stop.
                still_open = {
                    sid for (sid,) in conn.execute(f"SELECT id FROM streams {where}", part)
                }
                cancelled.update(set(part) - still_open)
            return cancelled

        return await self._run(True, lambda conn: db.transaction(conn, body))

    async def request_cancel(self, stream_id: str) -> bool:
        sql = f"UPDATE streams SET cancel_requested = {db.CANCEL} WHERE id = ? AND status = 'open'"
        return bool(await self._run(True, lambda conn: conn.execute(sql, (stream_id,)).rowcount))

    async def request_stop(self, stream_id: str) -> bool:
        # A cancel already requested outranks the stop (the column keeps the cancel).
        sql = f"""UPDATE streams SET cancel_requested = {db.STOP}
            WHERE id = ? AND status = 'open' AND cancel_requested = 0"""
        check = "SELECT 1 FROM streams WHERE id = ? AND status = 'open'"

        def body(conn: sqlite3.Connection) -> bool:
            conn.execute(sql, (stream_id,))
            return conn.execute(check, (stream_id,)).fetchone() is not None

        return await self._run(True, lambda conn: db.transaction(conn, body))

    async def list_streams(self, selection: StreamFilter) -> StreamPage:
        """One query through the ``(created_at DESC, id DESC)`` index: it seeks to the
        cursor and reads rows in order, checking status, flow and owner on the way (a
        selective filter reads further; none sorts)."""
        where: list[str] = ["1"]
        args: list[Any] = []
        for column, value in (
            ("status", selection.status), ("flow", selection.flow), ("owner", selection.owner)
        ):  # fmt: skip
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if selection.after is not None:
            when, sid = selection.after
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            args += [when, when, sid]
        sql = f"""SELECT {db.COLUMNS} FROM streams WHERE {" AND ".join(where)}
            ORDER BY created_at DESC, id DESC LIMIT ?"""
        args.append(selection.limit + 1)
        rows = await self._run(False, lambda conn: conn.execute(sql, args).fetchall())
        return selection.page([db.row_record(row) for row in rows], more=False)

    async def purge(self, now: float) -> int:
        def one_round(conn: sqlite3.Connection) -> int:
            sql = "SELECT id FROM streams WHERE expires_at <= ? LIMIT ?"
            ids = [sid for (sid,) in conn.execute(sql, (now, _PURGE_ROUND))]
            if ids:
                conn.execute(f"DELETE FROM batches WHERE stream_id IN {db.placeholders(ids)}", ids)
                conn.execute(f"DELETE FROM streams WHERE id IN {db.placeholders(ids)}", ids)
            return len(ids)

        total = 0
        while True:  # one transaction per round: records and their batches go together
            removed = await self._run(True, lambda conn: db.transaction(conn, one_round))
            total += removed
            if removed < _PURGE_ROUND:
                return total

    def watch(self, stream_id: str) -> AsyncIterator[None]:
        """Yield at once, then whenever another connection changed the stream's length,
        status or existence (one poller per storage checks ``PRAGMA data_version``)."""
        self._connection(write=True)  # fail here if not started
        return self._poller.watch(stream_id)


class SqliteStreamManager(StreamManager):
    """A `StreamManager` on `SqliteStreamStorage`: durable, shared by a host's processes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        poll_interval: float = 0.02,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
        **options: Any,
    ) -> None:
        """Storage options as in `SqliteStreamStorage`; others as in `StreamManager`
        (``flush_interval`` defaults to the storage's 0.02 s)."""
        storage = SqliteStreamStorage(
            path, poll_interval=poll_interval, synchronous=synchronous, busy_timeout=busy_timeout
        )
        super().__init__(storage, **options)
