"""`PostgresStreamStorage`: streams as a record row plus one row per flushed batch."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import asyncpg

from stream_gateway import (
    InvalidArgumentError,
    StreamClosedError,
    StreamExistsError,
    StreamNotFoundError,
    UnavailableError,
)
from stream_gateway.streams import StreamFilter, StreamPage, StreamRecord, StreamStorage, Terminal

from ._errors import translated
from ._layout import STREAMS_MIGRATIONS, Statements, channel
from ._migrations import Connection, migrate, quote_schema
from ._notify import Notifier

__all__ = ["PostgresStreamStorage"]

logger = logging.getLogger("stream_gateway_postgres")
T = TypeVar("T")
_PURGE_ROUND = 500  # streams deleted per statement, so a purge never holds many locks


# Python's datetimes end with year 9999; a later time (a `ttl` meant as "forever")
# is stored as that, which is as good as never.
_LATEST = datetime(9999, 12, 31, tzinfo=UTC).timestamp()


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(min(seconds, _LATEST), UTC)


def _seconds(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _record(row: asyncpg.Record) -> StreamRecord:
    status = row["status"]
    payload: bytes | None = row["terminal_payload"]
    return StreamRecord(
        stream_id=row["stream_id"],
        flow=row["flow"],
        owner=row["owner"],
        status=status,
        length=row["length"],
        created_at=row["created_at"].timestamp(),
        updated_at=row["updated_at"].timestamp(),
        expires_at=row["expires_at"].timestamp(),
        lease_until=_seconds(row["lease_until"]),
        cancel_requested=row["cancel_requested"],
        # A cancel outranks a stop (`request_cancel` clears it; this is only defence).
        stop_requested=row["stop_requested"] and not row["cancel_requested"],
        terminal=None if status == "open" or payload is None else Terminal(status, payload),
        extra=json.loads(row["extra"]),
        compacted=row["compacted"],
    )


def _joined(entries: Sequence[bytes], length: int) -> bytes:
    """A compaction's entries as one batch; checks what `compact` promises to receive."""
    if not 1 <= len(entries) <= length:
        raise InvalidArgumentError("a compaction stores between 1 and `length` entries")
    data = b"\n".join(entries)
    if data.count(b"\n") != len(entries) - 1:
        raise InvalidArgumentError("a compacted entry contains a raw newline")
    return data


def _where(dsn: str) -> str:
    """The server a DSN names, without credentials, for error messages."""
    try:
        parts = urlsplit(dsn)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
    except ValueError:
        return "the configured server"


class PostgresStreamStorage(StreamStorage):
    """Streams in PostgreSQL: ``<schema>.streams`` rows, chunks in ``stream_batches`` rows.

    Each flush is one row keyed by (stream id, first offset), written together with
    the record's ``length`` and a NOTIFY in one statement; a resume reads only the
    batches from its offset on. Other processes' changes arrive by LISTEN on one
    connection per storage, shared by every watched stream. The tables are created (and
    later migrated) on `start`, in ``schema``, which is created if missing.

    ``dsn``: a libpq connection URI or keyword string. ``max_connections``: the pool's
    size (the LISTEN connection is one more). ``command_timeout``: seconds any call may
    take before it counts as unavailable. ``listen_dsn``: where to LISTEN, if not
    ``dsn`` (a transaction-mode pooler such as PgBouncer cannot carry LISTEN).
    ``connect_options``: passed to `asyncpg.connect` (``ssl``, ``server_settings``,
    ``statement_cache_size=0`` behind a transaction-mode pooler, ...).
    """

    shared = True

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "stream_gateway",
        flush_interval: float = 0.05,
        max_connections: int = 10,
        command_timeout: float = 10.0,
        listen_dsn: str | None = None,
        connect_options: Mapping[str, Any] | None = None,
    ) -> None:
        if max_connections < 1 or command_timeout <= 0:
            raise ValueError("max_connections and command_timeout must be positive")
        self.dsn = dsn
        self.schema = schema
        self.flush_interval = flush_interval
        self.max_connections = max_connections
        self.command_timeout = command_timeout
        self.listen_dsn = listen_dsn or dsn
        self._options = dict(connect_options or {})
        self._sql = Statements(quote_schema(schema))
        self._pool: asyncpg.Pool | None = None
        self._notifier = Notifier(self._connect_listener)
        self._create_tokens: dict[str, uuid.UUID] = {}

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the pool and apply the schema's migrations (creating the tables)."""
        if self._pool is not None:
            raise RuntimeError("PostgresStreamStorage.start() may be called once")
        with translated(f"connecting to {_where(self.dsn)}"):
            pool = await asyncpg.create_pool(
                self.dsn,
                # No floor: a pool that must keep one connection retries (and logs)
                # in the background all the while the server is down.
                min_size=0,
                max_size=self.max_connections,
                command_timeout=self.command_timeout,
                timeout=self.command_timeout,
                **self._options,
            )
        try:
            with translated(f"migrating schema {self.schema} at {_where(self.dsn)}"):
                async with pool.acquire(timeout=self.command_timeout) as conn:
                    await migrate(conn, self.schema, "streams", STREAMS_MIGRATIONS)
        except BaseException:
            pool.terminate()
            raise
        self._pool = pool

    async def close(self) -> None:
        """Close the LISTEN connection and the pool (after the calls in flight)."""
        # Even while our task is being cancelled: leaving sockets open would leak them.
        with anyio.CancelScope(shield=True):
            await self._notifier.close()
            pool, self._pool = self._pool, None
            if pool is None:
                return
            with anyio.move_on_after(self.command_timeout) as waited:
                try:
                    await pool.close()
                except Exception as exc:  # connections the server already dropped
                    logger.debug("closing the pool: %r", exc)
                    pool.terminate()
            if waited.cancelled_caught:
                pool.terminate()

    async def _connect_listener(self) -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(
            self.listen_dsn, timeout=self.command_timeout, **self._options
        )
        return conn

    async def _call(self, what: str, call: Callable[[Connection], Awaitable[T]]) -> T:
        pool = self._pool
        if pool is None:
            raise RuntimeError(
                "PostgresStreamStorage is not started: a StreamManager starts it "
                "(`async with manager:`)"
            )
        with translated(what):
            async with pool.acquire(timeout=self.command_timeout) as conn:
                return await call(conn)

    # -- the contract ------------------------------------------------------------------

    async def create(self, record: StreamRecord) -> None:
        # Kept across retries: a create that landed but whose answer was lost knows
        # itself by its token instead of reporting its own stream as taken.
        token = self._create_tokens.setdefault(record.stream_id, uuid.uuid4())
        args = (
            record.stream_id, record.flow, record.owner, _time(record.created_at),
            _time(record.updated_at), _time(record.expires_at),
            None if record.lease_until is None else _time(record.lease_until),
            json.dumps(record.extra), token,
        )  # fmt: skip

        async def body(conn: Connection) -> bool:
            if await conn.fetchval(self._sql.create, *args):
                return True
            return bool(await conn.fetchval(self._sql.create_token, record.stream_id) == token)

        try:
            created = await self._call("creating a stream", body)
        except UnavailableError:
            raise
        except BaseException:
            self._create_tokens.pop(record.stream_id, None)
            raise
        self._create_tokens.pop(record.stream_id, None)
        if not created:
            raise StreamExistsError(f"stream {record.stream_id} exists")

    async def append(self, stream_id: str, offset: int, chunks: Sequence[bytes]) -> None:
        if not chunks:
            return
        data = b"\n".join(chunks)
        if data.count(b"\n") != len(chunks) - 1:
            raise InvalidArgumentError("a chunk contains a raw newline: not compact JSON")
        args = (stream_id, offset, len(chunks), data, channel(self.schema, stream_id))

        async def body(conn: Connection) -> bool | None:
            if await conn.fetchval(self._sql.append, *args):
                return True
            # Refused: a finished stream (its end recorded, e.g. by `abandon`) or none.
            return False if await conn.fetchval(self._sql.exists, stream_id) else None

        appended = await self._call("appending chunks", body)
        if appended is None:
            raise StreamNotFoundError(f"stream {stream_id} not found")
        if not appended:
            raise StreamClosedError(f"stream {stream_id} is finished")

    async def finish(
        self, stream_id: str, length: int, terminal: Terminal, *, now: float, expires_at: float
    ) -> None:
        args = (
            stream_id, terminal.kind, terminal.payload, length, _time(now), _time(expires_at),
            channel(self.schema, stream_id),
        )  # fmt: skip

        async def body(conn: Connection) -> bool:
            if await conn.fetchval(self._sql.finish, *args):
                return True
            # Not open: an end recorded already stands (a retry, or an abandonment).
            return bool(await conn.fetchval(self._sql.exists, stream_id))

        if not await self._call("finishing a stream", body):
            raise StreamNotFoundError(
                f"stream {stream_id} not found: its record was deleted while it was written"
            )

    async def abandon(
        self, stream_id: str, terminal: Terminal, *, now: float, expires_at: float
    ) -> bool:
        args = (
            stream_id, terminal.kind, terminal.payload, _time(now), _time(expires_at),
            channel(self.schema, stream_id),
        )  # fmt: skip
        return bool(
            await self._call(
                "recording an abandoned stream",
                lambda conn: conn.fetchval(self._sql.abandon, *args),
            )
        )

    async def load(self, stream_id: str) -> StreamRecord | None:
        row = await self._call(
            "loading a stream", lambda conn: conn.fetchrow(self._sql.load, stream_id)
        )
        return None if row is None else _record(row)

    async def read(self, stream_id: str, offset: int, limit: int) -> list[bytes]:
        end = offset + limit
        rows = await self._call(
            "reading chunks", lambda conn: conn.fetch(self._sql.read, stream_id, offset, end)
        )
        chunks: list[bytes] = []
        for row in rows:
            first, count = row["first_offset"], row["count"]
            if first > offset + len(chunks):
                break  # a gap: batches are dense, so this is only defence
            batch: bytes = row["chunks"]
            chunks.extend(batch.split(b"\n")[max(offset - first, 0) : min(end - first, count)])
        return chunks

    async def compact(self, stream_id: str, length: int, entries: Sequence[bytes]) -> bool:
        """One transaction: the conditional mark, the deletion of every batch, and the
        entries inserted as one batch at offset 0. A reader's statement sees the stream
        wholly before or wholly after it; a failure part-way leaves it as it was."""
        data = _joined(entries, length)
        args = (stream_id, length, len(entries))

        async def body(conn: Connection) -> bool:
            async with conn.transaction():
                if not await conn.fetchval(self._sql.compact_mark, *args):
                    return False
                await conn.execute(self._sql.compact_delete, stream_id)
                await conn.execute(self._sql.compact_insert, stream_id, len(entries), data)
            return True

        return await self._call("compacting a stream", body)

    async def renew(
        self, stream_ids: Sequence[str], lease_until: float, expires_at: float
    ) -> set[str]:
        ids = sorted(set(stream_ids))
        if not ids:
            return set()
        rows = await self._call(
            "renewing leases",
            lambda conn: conn.fetch(self._sql.renew, ids, _time(lease_until), _time(expires_at)),
        )
        # Cancelled or stopped (the manager loads the record to tell which), and those
        # no longer open (finished elsewhere, e.g. abandoned, or gone): their writers stop.
        flagged = {r["stream_id"] for r in rows if r["cancel_requested"] or r["stop_requested"]}
        return flagged | (set(ids) - {row["stream_id"] for row in rows})

    async def request_cancel(self, stream_id: str) -> bool:
        return bool(
            await self._call(
                "requesting cancellation",
                lambda conn: conn.fetchval(self._sql.request_cancel, stream_id),
            )
        )

    async def request_stop(self, stream_id: str) -> bool:
        return bool(
            await self._call(
                "requesting a stop",
                lambda conn: conn.fetchval(self._sql.request_stop, stream_id),
            )
        )

    async def list_streams(self, selection: StreamFilter) -> StreamPage:
        """One statement walking the ``(created_at DESC, stream_id DESC)`` index from
        the cursor (a row comparison the index seeks to), checking status, flow and owner
        on the rows it passes."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in (
            ("status", selection.status), ("flow", selection.flow), ("owner", selection.owner)
        ):  # fmt: skip
            if value is not None:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        if selection.after is not None:
            when, sid = selection.after
            args += [_time(when), sid]
            where.append(f"(created_at, stream_id) < (${len(args) - 1}, ${len(args)})")
        args.append(selection.limit + 1)
        condition = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"""{self._sql.list_from} {condition}
            ORDER BY created_at DESC, stream_id DESC LIMIT ${len(args)}"""
        rows = await self._call("listing streams", lambda conn: conn.fetch(sql, *args))
        return selection.page([_record(row) for row in rows], more=False)

    async def purge(self, now: float) -> int:
        total = 0
        for _ in range(10_000):  # bounded: 5 million streams per call at most
            removed: int = await self._call(
                "purging expired streams",
                lambda conn: conn.fetchval(self._sql.purge, _time(now), _PURGE_ROUND),
            )
            total += removed
            if removed < _PURGE_ROUND:
                break
        return total

    def watch(self, stream_id: str) -> AsyncIterator[None]:
        """Yield once the stream's channel is listened to, then on each NOTIFY from a
        commit to the stream (append, finish) and after each reconnect."""
        if self._pool is None:
            raise RuntimeError("PostgresStreamStorage is not started")
        return self._notifier.watch(channel(self.schema, stream_id))

    @property
    def listen_connections(self) -> int:
        """How many LISTEN connections this storage has opened so far (one at a time)."""
        return self._notifier.connections
