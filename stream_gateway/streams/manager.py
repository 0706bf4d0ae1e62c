"""`StreamManager`: buffering, leases, fan-out and limits, once, over any `StreamStorage`.

Fan-out is pull-based. A subscriber is a cursor (an offset) over the committed log;
when it has caught up it waits on the stream's `_Listener`, which this process keeps
once per stream and shares among its subscribers. A slow subscriber costs O(1)
memory and only falls further behind; the writer never waits for it.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
from anyio.abc import TaskGroup

from .. import _telemetry
from .._cancel import foreign_cancellation
from .._errors import (
    FailedPreconditionError,
    GatewayError,
    InvalidArgumentError,
    StreamClosedError,
    StreamCompactedError,
    StreamInterruptedError,
    StreamNotFoundError,
    UnavailableError,
)
from .._ids import new_stream_id, validate_stream_id
from .._json import loads
from .._logs import owner_tag
from .base import (
    CONTROL_PREFIX,
    ChunkEvent,
    ErrorEvent,
    ResetEvent,
    ResultEvent,
    StreamEvent,
    StreamFilter,
    StreamPage,
    StreamRecord,
    StreamStatus,
    StreamStorage,
    Terminal,
    parse_compacted,
    parse_reset,
)
from .compaction import (
    Coalesce,
    CompactionReport,
    entry_starts,
    join_deltas,
    plan_entries,
    read_compacted,
)
from .writer import StreamWriter, error_terminal

__all__ = ["DURABLE", "KEEP_AS_WRITTEN", "StreamManager"]

#: The key in `StreamRecord.extra` that marks the stream of a durable execution (its
#: value is the execution id). Such a stream outlives its writers: a worker attaches
#: one per run (`StreamManager.attach`); readers never call it abandoned; it may hold
#: reset entries, and readers get its live view (see `StreamManager.subscribe`).
DURABLE = "durable"

#: The key in `StreamRecord.extra` of a stream that must keep its chunks as written
#: (`compact` leaves it alone): a Durable Streams protocol stream, whose messages are
#: not text deltas and whose offsets forks refer to.
KEEP_AS_WRITTEN = "keepAsWritten"

logger = logging.getLogger("stream_gateway.streams")
T = TypeVar("T")
_WEEK = 7 * 86400.0


class _Listener:
    """This process's one view of a stream: a change counter and a tail of recent chunks.

    Waiters remember `version` before they read; `wait` returns at once if a change
    came in since, so a write that races a read is never missed.
    """

    def __init__(self, tail_size: int) -> None:
        self.version = 0
        self.users = 0
        self._waiting = 0
        self._event = anyio.Event()
        self._tail: deque[bytes] = deque(maxlen=tail_size)
        self._tail_end = 0  # offset just past the last chunk in the tail
        self.watch_scope: anyio.CancelScope | None = None
        self.abandon_logged = False

    def notify(self) -> None:
        self.version += 1
        if self._waiting:  # a fresh event only when someone waits on the old one
            self._event.set()
            self._event = anyio.Event()

    async def wait(self, seen: int, patience: float | None) -> None:
        """Return once `version` moved past ``seen``, or after ``patience`` seconds
        (``None``: no time limit, for streams whose writer notifies us itself)."""
        if self.version == seen:
            self._waiting += 1
            try:
                if patience is None:
                    await self._event.wait()
                else:
                    with anyio.move_on_after(patience):
                        await self._event.wait()
            finally:
                self._waiting -= 1

    def remember(self, offset: int, chunks: list[bytes]) -> None:
        """Keep committed chunks that continue the tail (or restart it)."""
        if offset != self._tail_end:
            if offset + len(chunks) <= self._tail_end:
                return
            self._tail.clear()
        self._tail.extend(chunks)
        self._tail_end = offset + len(chunks)

    @property
    def known_end(self) -> int:
        """The offset just past the newest chunk this process has seen committed."""
        return self._tail_end

    def recall(self, offset: int, limit: int) -> list[bytes]:
        start = self._tail_end - len(self._tail)
        if not start <= offset < self._tail_end:
            return []
        skip = offset - start
        stop = min(len(self._tail), skip + limit)
        return [self._tail[i] for i in range(skip, stop)]


def check_offset(record: StreamRecord, offset: int) -> None:
    """Raise `InvalidArgumentError` for an offset no reader of ``record`` can ask for.

    Readers only ever see committed chunks, and `StreamStorage.load` counts every
    committed chunk, so a client resuming after chunk ``n - 1`` (from any process)
    asks for at most ``record.length``. Past that, open or finished, the client
    miscounted: telling it beats handing it a terminal event later and letting it
    lose chunks unseen.
    """
    if offset < 0:
        raise InvalidArgumentError("offset must be >= 0")
    if offset > record.length:
        raise InvalidArgumentError(
            f"offset {offset} is past the end of the stream ({record.length} chunks)",
            details={"length": record.length},
        )


def terminal_event(terminal: Terminal) -> ResultEvent | ErrorEvent:
    """The subscriber-facing event for a stored terminal entry."""
    if terminal.kind == "done":
        return ResultEvent(terminal.payload)
    body = loads(terminal.payload)
    return ErrorEvent(body["status"], body["message"], body.get("details"))


class StreamManager:
    """Opens, writes, follows and expires streams on one `StreamStorage`.

    Use it as an async context manager (a `Gateway` does this in its lifespan): the
    manager runs its flush timers, lease renewals and listeners in its own task group.

    Guarantees: a subscriber sees offsets ``from_offset, from_offset + 1, ...`` with no
    gap and no repeat, then exactly one terminal event. A writer that stops renewing
    its lease (its process died) makes subscribers end with ``UNAVAILABLE`` /
    "stream abandoned" once the lease lapses. Chunks are committed in batches: a crash
    loses at most the last ``flush_interval`` seconds of chunks, never a committed one.
    """

    def __init__(
        self,
        storage: StreamStorage,
        *,
        ttl: float = 3600.0,
        max_ttl: float | None = None,
        lease: float = 10.0,
        flush_interval: float | None = None,
        max_batch: int = 512,
        max_chunk_bytes: int = 256 * 1024,
        max_stream_chunks: int = 1_000_000,
        read_batch: int = 1024,
        tail_size: int = 2048,
        poll_fallback: float = 2.0,
        purge_interval: float = 60.0,
        write_retry_for: float | None = None,
        coalesce: Coalesce = join_deltas,
        compact_finished: bool = False,
        compact_delay: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Configure limits and timings; ``flush_interval`` defaults to the storage's.

        ``ttl``: seconds a finished stream stays readable, unless `open` is given
        another, at most ``max_ttl`` (default: a week, or ``ttl`` if longer). ``lease``: how long a
        writer's claim lasts without renewal (renewed every third of it).
        ``max_chunk_bytes`` / ``max_stream_chunks``: limits on what a writer accepts.
        ``write_retry_for``: how long a write is retried while the backend reports
        itself unavailable (default: one lease).

        Compaction (`compact`): ``coalesce`` joins two consecutive chunks or says they
        stay apart (default `join_deltas`: text deltas joined). ``compact_finished``
        compacts every stream this manager writes once it has ended,
        ``compact_delay`` seconds later (so that readers still replaying it can
        finish first), in the background; failures are logged, never raised.
        """
        if ttl <= 0 or lease <= 0 or max_batch < 1 or read_batch < 1:
            raise ValueError("ttl, lease, max_batch and read_batch must be positive")
        if compact_delay < 0:
            raise ValueError("compact_delay must be >= 0")
        if max_ttl is not None and max_ttl < ttl:
            raise ValueError("max_ttl must be at least ttl")
        self.storage = storage
        self.ttl = ttl
        self.max_ttl = max(ttl, _WEEK) if max_ttl is None else max_ttl
        self.lease = lease
        self.flush_interval = storage.flush_interval if flush_interval is None else flush_interval
        self.max_batch = max_batch
        self.max_chunk_bytes = max_chunk_bytes
        self.max_stream_chunks = max_stream_chunks
        self.read_batch = read_batch
        self.poll_fallback = poll_fallback
        self.purge_interval = purge_interval
        self.write_retry_for = lease if write_retry_for is None else write_retry_for
        self.coalesce = coalesce
        self.compact_finished = compact_finished
        self.compact_delay = compact_delay
        self._cannot_compact = False  # the storage said so: compact_finished stays quiet
        self.clock = clock
        self._tail_size = tail_size
        self._writers: dict[str, StreamWriter] = {}
        self._interrupting = False  # shutting down: stop following others' streams
        self._listeners: dict[str, _Listener] = {}
        self._unsubscribed: anyio.Event | None = None  # set on exit once all have left
        self._tg: TaskGroup | None = None
        self._users = 0

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        # Entered once per user (several handlers may share one manager, as Genkit's
        # expressHandler(flow, {streamManager}) pattern does); the last exit stops it.
        self._users += 1
        if self._users > 1:
            return self
        await self.storage.start()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._renew_loop)
        self._tg.start_soon(self._purge_loop)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._users -= 1
        if self._users > 0:
            return
        # Commit what open writers still buffer: a graceful stop loses nothing.
        for writer in list(self._writers.values()):
            if writer.failure is not None:
                continue  # it gave up; what it buffers is dropped
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.write_retry_for):
                try:
                    await writer.flush()
                except Exception:
                    logger.exception("could not flush stream %s on exit", writer.stream_id)
        tg, self._tg = self._tg, None
        for listener in self._listeners.values():
            listener.notify()  # subscribers see the manager stopped and stop following
        if self._listeners:
            # Let them finish the storage call they may be in before it closes.
            self._unsubscribed = anyio.Event()
            with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                await self._unsubscribed.wait()
        try:
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            await self.storage.close()

    def interrupt_followers(self) -> None:
        """Stop following streams this process does not write (the server is stopping).

        A subscriber that has caught up with a stream without an open writer in this
        process raises `StreamInterruptedError` instead of waiting: the stream may
        still finish elsewhere, so the client should resume there. Subscribers of
        streams written here go on to their terminal event. Idempotent.
        """
        if not self._interrupting:
            self._interrupting = True
            for listener in self._listeners.values():
                listener.notify()

    @property
    def task_group(self) -> TaskGroup:
        """The manager's task group; raises if the manager was not entered."""
        if self._tg is None:
            raise RuntimeError(
                "StreamManager is not started: use `async with manager:` "
                "(a Gateway's lifespan does this for you)"
            )
        return self._tg

    # -- the contract --------------------------------------------------------------

    async def open(
        self,
        stream_id: str | None = None,
        *,
        flow: str = "",
        owner: str | None = None,
        extra: Mapping[str, Any] | None = None,
        ttl: float | None = None,
    ) -> StreamWriter:
        """Create a stream and return its writer. A taken id raises `StreamExistsError`.

        ``ttl``: seconds this stream stays readable after it ends (default: the
        manager's ``ttl``); above ``max_ttl``, or not positive, `InvalidArgumentError`.

        ``owner`` is stored as given (the gateway passes a hash of the principal).
        ``extra`` (JSON-able) is stored in the record with the stream's creation, in
        the same atomic step, so whoever finds the id taken also finds it.
        """
        self.task_group  # noqa: B018 - fail early if not started
        ttl = self.check_ttl(ttl)
        stream_id = new_stream_id() if stream_id is None else validate_stream_id(stream_id)
        now = self.clock()
        record = StreamRecord(
            stream_id=stream_id,
            flow=flow,
            created_at=now,
            updated_at=now,
            expires_at=now + self.lease + ttl,
            owner=owner,
            lease_until=now + self.lease,
            extra=dict(extra or {}),
        )
        with _telemetry.span("stream.storage.create", stream_id=stream_id):
            await self._retrying(lambda: self.storage.create(record))
        writer = StreamWriter(self, stream_id, flow=flow, owner=owner, ttl=ttl)
        writer.lease_until = now + self.lease
        self._writers[stream_id] = writer
        for observer in _telemetry.observers:
            observer.stream_opened(flow)
        logger.info("stream %s opened (flow %r, owner %s)", stream_id, flow, owner_tag(owner))
        return writer

    async def attach(self, stream_id: str) -> StreamWriter:
        """A writer for the open stream of a durable execution, at its committed length.

        A worker attaches one per run and ends the run with `StreamWriter.detach` (or
        a terminal entry). Unknown or expired id: `StreamNotFoundError`; a finished
        stream or one that is not a durable execution's: `StreamClosedError`. One
        process at a time: the execution's lease says which.
        """
        self.task_group  # noqa: B018 - fail early if not started
        record = await self._retrying(lambda: self.storage.load(validate_stream_id(stream_id)))
        if record is None or record.expires_at <= self.clock():
            raise StreamNotFoundError("stream not found")
        if record.status != "open" or DURABLE not in record.extra:
            raise StreamClosedError("only the open stream of a durable execution can be attached")
        writer = StreamWriter(self, stream_id, flow=record.flow)
        writer._length = record.length
        old = self._writers.get(stream_id)
        if old is not None and not old.closed:
            old._closed = True  # a run of this process that lost its lease: it stops here
        self._writers[stream_id] = writer
        return writer

    def check_ttl(self, ttl: float | None) -> float:
        """The TTL a stream gets: ``ttl`` if allowed, else the manager's default for
        ``None``; `InvalidArgumentError` when not positive or above ``max_ttl``."""
        if ttl is None:
            return self.ttl
        if not (isinstance(ttl, int | float) and math.isfinite(ttl) and ttl > 0):
            raise InvalidArgumentError("a stream's ttl must be a positive number of seconds")
        if ttl > self.max_ttl:
            raise InvalidArgumentError(
                f"a stream's ttl of {ttl:g}s is above this server's maximum of"
                f" {self.max_ttl:g}s (StreamManager max_ttl)",
                details={"ttl": ttl, "max_ttl": self.max_ttl},
            )
        return float(ttl)

    async def info(self, stream_id: str) -> StreamRecord:
        """The stream's record without its chunks. Unknown or expired: `StreamNotFoundError`."""
        validate_stream_id(stream_id)
        record = await self.storage.load(stream_id)
        if record is None or record.expires_at <= self.clock():
            raise StreamNotFoundError("stream not found")
        return record

    async def cancel(self, stream_id: str) -> bool:
        """Ask the stream's writer, in any process, to stop its flow.

        Returns False when the stream has already finished. Unknown id:
        `StreamNotFoundError`. The writer in this process hears at once, one in
        another process at its next lease renewal (within a third of ``lease``).
        """
        record = await self.info(stream_id)
        requested = await self.storage.request_cancel(stream_id)
        if requested:
            logger.info(
                "stream %s (flow %r, owner %s): cancellation requested",
                stream_id, record.flow, owner_tag(record.owner),
            )  # fmt: skip
        writer = self._writers.get(stream_id)
        if writer is not None:
            writer._request_cancel()
        return requested

    async def stop(self, stream_id: str) -> bool:
        """Ask the stream's flow to finish now with what it has (see `StreamWriter.stop_requested`).

        Returns False when the stream has already finished. Unknown id:
        `StreamNotFoundError`. The writer in this process hears at once, one in
        another process at its next lease renewal (within a third of ``lease``); a
        store without `StreamStorage.request_stop` raises `FailedPreconditionError`
        for a stream written by another process.
        """
        record = await self.info(stream_id)
        if record.status != "open":
            return False
        writer = self._writers.get(stream_id)
        if writer is None:
            try:
                requested = await self._retrying(lambda: self.storage.request_stop(stream_id))
            except NotImplementedError:
                raise FailedPreconditionError(
                    "the stream is written by another process, and this stream store"
                    " cannot carry a stop there (cancel reaches every process)"
                ) from None
            if requested:
                logger.info(
                    "stream %s (flow %r, owner %s): stop requested",
                    stream_id, record.flow, owner_tag(record.owner),
                )  # fmt: skip
            return requested
        if writer.closed:
            return False
        logger.info(
            "stream %s (flow %r, owner %s): stop requested",
            stream_id, record.flow, owner_tag(record.owner),
        )  # fmt: skip
        writer._request_stop()
        return True

    async def list_streams(
        self,
        *,
        status: StreamStatus | None = None,
        flow: str | None = None,
        owner: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> StreamPage:
        """Streams newest first, optionally only those of one status, flow or owner.

        At most ``limit`` (1-1000) records a page; pass the page's ``next_cursor`` as
        ``cursor`` for the next one. Expired streams are left out (a page may then be
        shorter than ``limit`` and still have a next one). Records carry no chunks.
        A bad limit, status or cursor raises `InvalidArgumentError`; a storage that
        cannot list raises `FailedPreconditionError`.
        """
        selection = StreamFilter.of(
            status=status, flow=flow, owner=owner, limit=limit, cursor=cursor
        )
        try:
            page = await self._retrying(lambda: self.storage.list_streams(selection))
        except NotImplementedError as exc:
            raise FailedPreconditionError(str(exc)) from None
        now = self.clock()
        live = [r for r in page.records if r.expires_at > now]
        return page if len(live) == len(page.records) else StreamPage(live, page.next_cursor)

    async def purge(self) -> int:
        """Delete expired streams now (the manager also does this periodically)."""
        return await self.storage.purge(self.clock())

    async def compact(
        self, stream_id: str, *, coalesce: Coalesce | None = None
    ) -> CompactionReport:
        """Coalesce a finished stream's chunks into far fewer stored entries.

        Reads the stream's live view (chunks retracted by resets left out), joins
        consecutive chunks with ``coalesce`` (default: the manager's, `join_deltas`)
        and has the storage replace the stored chunks with the entries, atomically.
        A full replay then yields the same logical content and result; a reader
        resuming inside a joined range gets `StreamCompactedError` (replay from 0).

        An open stream raises `FailedPreconditionError`; unknown or expired,
        `StreamNotFoundError`; a store that cannot compact, `FailedPreconditionError`.
        A stream already compacted, or one compaction would not shrink (leave fewer
        stored entries than it has chunks), is left as it is: the report says so.
        """
        record = await self.info(stream_id)
        if record.status == "open":
            raise FailedPreconditionError(
                f"stream {stream_id} is still open: only a finished stream can be compacted"
            )
        if record.compacted is not None:
            return _unchanged(record, "already compacted", record.compacted, None)
        if record.extra.get(KEEP_AS_WRITTEN):
            return _unchanged(record, "its writer keeps it as written", None, None)
        stored: list[bytes] = []
        while len(stored) < record.length:
            limit = min(self.read_batch, record.length - len(stored))
            chunks = await self._retrying(
                functools.partial(self.storage.read, stream_id, len(stored), limit)
            )
            if not chunks or any(parse_compacted(raw) is not None for raw in chunks):
                return _unchanged(record, "changed meanwhile (compacted or purged)", None, None)
            stored += chunks
        size = sum(map(len, stored))
        entries = plan_entries(stored, coalesce or self.coalesce)
        if not entries:
            return _unchanged(record, "no live chunk to keep", len(stored), size)
        after = sum(map(len, entries))
        if len(entries) >= len(stored):
            return _unchanged(record, "compaction would not shrink it", len(stored), size)
        try:
            done = await self._retrying(
                lambda: self.storage.compact(stream_id, record.length, entries)
            )
        except NotImplementedError as exc:
            raise _CannotCompactError(str(exc)) from None
        if not done:
            latest = await self.storage.load(stream_id)
            reason = "already compacted" if latest and latest.compacted else "changed meanwhile"
            return _unchanged(record, reason, len(stored), size)
        logger.info(
            "stream %s (flow %r) compacted: %d chunks (%d bytes) -> %d entries (%d bytes)",
            stream_id, record.flow, len(stored), size, len(entries), after,
        )  # fmt: skip
        return CompactionReport(
            stream_id, True, record.length, len(stored), len(entries), size, after
        )

    async def check_resume(self, record: StreamRecord, offset: int) -> None:
        """Raise `StreamCompactedError` when ``offset`` lies inside a compacted range
        of ``record``'s stream; for an HTTP endpoint, before its response starts.

        On a compacted stream a reader may start at 0, at the stream's length, or at
        the start of an entry (where a reader that got the entry before resumes).
        """
        check_offset(record, offset)
        if record.compacted is None or offset in (0, record.length):
            return
        if offset not in await entry_starts(self, record):
            raise StreamCompactedError.at(record.stream_id, offset)

    def _ended(self, stream_id: str) -> None:
        """A writer of this manager recorded its stream's end: compact it by policy."""
        if self.compact_finished and self._tg is not None:
            self._tg.start_soon(self._compact_quietly, stream_id)

    async def _compact_quietly(self, stream_id: str) -> None:
        """`compact`, off the writer's path: failures are logged, never raised."""
        if self.compact_delay:
            await anyio.sleep(self.compact_delay)
        if self._cannot_compact:
            return  # said once (below)
        try:
            report = await _failed_if_foreign(self.compact(stream_id))
        except StreamNotFoundError:
            return  # expired or purged meanwhile: nothing to do
        except _CannotCompactError as exc:
            self._cannot_compact = True
            logger.warning(
                "compaction after a stream's end failed: %s; compact_finished does"
                " nothing on this store",
                exc.message,
            )
            return
        except Exception:
            logger.exception("stream %s: compaction after its end failed", stream_id)
            return
        if not report.compacted:
            logger.debug("stream %s left uncompacted: %s", stream_id, report.reason)

    def is_abandoned(self, record: StreamRecord) -> bool:
        """True when the record is open and its writer's lease has lapsed (never for
        the stream of a durable execution: another worker takes it over)."""
        return (
            record.status == "open"
            and DURABLE not in record.extra
            and record.lease_until is not None
            and record.lease_until < self.clock()
        )

    async def end_of(self, stream_id: str) -> ResultEvent | ErrorEvent:
        """The stream's terminal event, once it has one (waits while it is open).

        For callers that need the outcome, not the chunks: it follows the stream from
        its length, so a compaction meanwhile (`compact`) does not concern it.
        Unknown or expired id: `StreamNotFoundError`; this manager stopping:
        `StreamInterruptedError`.
        """
        for _ in range(3):  # a stream is compacted once: the second try reads its end
            record = await self.info(stream_id)
            try:
                async with aclosing(self.subscribe(stream_id, record.length)) as events:
                    async for event in events:
                        if isinstance(event, ResultEvent | ErrorEvent):
                            return event
            except StreamCompactedError:
                continue  # compacted under us: its length is final now
            break
        raise StreamInterruptedError(f"stream {stream_id} ended without a terminal entry")

    async def subscribe(
        self, stream_id: str, from_offset: int = 0
    ) -> AsyncGenerator[StreamEvent, None]:
        """Every chunk from ``from_offset`` on, then live ones, then the terminal event.

        The stream of a durable execution may hold reset entries. What was committed
        before the subscription comes as its live view: retracted chunks and the
        resets that retract them are left out (if the retraction reaches before
        ``from_offset``, one `ResetEvent` comes first, so a client resuming drops what
        it showed from there). Resets written later come as `ResetEvent` in place.

        Unknown or expired id: `StreamNotFoundError` on the first step.
        """
        async with aclosing(self.subscribe_batches(stream_id, from_offset)) as batches:
            async for batch in batches:
                for event in batch:
                    yield event

    async def subscribe_batches(
        self, stream_id: str, from_offset: int = 0
    ) -> AsyncGenerator[list[StreamEvent], None]:
        """Like `subscribe`, but yields every event that is ready at once as one list.

        An offset past the stream's committed length raises `InvalidArgumentError`.

        The gateway uses it to send waiting frames in one write.
        """
        known = await self.info(stream_id)
        check_offset(known, from_offset)
        durable = DURABLE in known.extra
        # The committed history's retractions, (void_from, at): what a reader gets up
        # to ``history`` is the live view; past it, resets come as they are written.
        voids: list[tuple[int, int]] = []
        history = from_offset
        if durable and from_offset < known.length and known.compacted is None:
            history = known.length
            voids, complete = await self._resets(stream_id, from_offset, history)
            if not complete:  # cut short: compacted (or purged) meanwhile?
                known = await self.info(stream_id)
        if known.compacted is not None:
            async with aclosing(self._compacted(known, from_offset)) as entries:
                async for batch in entries:
                    yield batch
            return
        listener = self._acquire(stream_id)
        for observer in _telemetry.observers:
            observer.subscriber_added()
        try:
            cursor = from_offset
            before = [v for v in voids if v[0] < from_offset]
            if before:
                at = max(a for _, a in before)
                yield [ResetEvent(at, min(v for v, _ in before))]
                cursor = at + 1
            missing = 0
            sent = False  # whether a chunk was yielded (a compaction seen before may restart)
            # The recorded length of a finished stream: nothing past it is read (a
            # stalled writer may still have appended there after its end was recorded).
            end = None if known.terminal is None else known.length
            lease_until = known.lease_until
            while True:
                if self._tg is None:
                    raise StreamInterruptedError("stream manager stopped")
                seen = listener.version
                writer = self._writers.get(stream_id)
                if (
                    end is None
                    and writer is None
                    and lease_until is not None
                    and lease_until < self.clock()
                ):
                    # The writer's lease lapsed: read on only up to its recorded end,
                    # never what a stalled writer may append after it. Record it first.
                    latest = await self._retrying(lambda: self.storage.load(stream_id))
                    if latest is not None:
                        lease_until = latest.lease_until
                        if latest.terminal is not None:
                            end = latest.length
                        elif self.is_abandoned(latest):
                            if await self._record_abandoned(stream_id, latest):
                                continue
                limit = self.read_batch if end is None else min(self.read_batch, end - cursor)
                chunks = listener.recall(cursor, limit) if limit > 0 else []
                # A writer in this process knows its committed length: past it there
                # is nothing to read (and a backend that is down need not be asked).
                if not chunks and limit > 0 and (writer is None or cursor < writer.committed):
                    with _telemetry.span("stream.storage.read", stream_id=stream_id):
                        chunks = await self._retrying(
                            functools.partial(self.storage.read, stream_id, cursor, limit)
                        )
                    cut = _first_entry(chunks)
                    if cut is not None:
                        # Compacted under us: what precedes the first entry are the
                        # original chunks; the record then says how to go on.
                        chunks = chunks[:cut]
                    if chunks:
                        listener.remember(cursor, chunks)
                if chunks:
                    missing = 0
                    sent = True
                    if _telemetry.observers:
                        self._report_read(listener, writer, cursor + len(chunks), len(chunks))
                    if durable:
                        events = _durable_events(cursor, chunks, history, voids)
                        cursor += len(chunks)
                        if events:
                            yield events
                        continue
                    yield [ChunkEvent(cursor + i, raw) for i, raw in enumerate(chunks)]
                    cursor += len(chunks)
                    continue
                failure = None if writer is None else writer.failure
                if isinstance(failure, StreamClosedError):
                    pass  # its end was recorded elsewhere (abandoned): the store tells
                elif failure is not None and cursor >= writer.committed:  # type: ignore[union-attr]
                    # This process's writer gave up: the stream can only end in error.
                    yield [ErrorEvent(failure.status, failure.message, failure.details)]
                    return
                if writer is not None and failure is None:
                    # Written here and healthy: the writer notifies on every commit, on
                    # failure and when it has ended (it then leaves `_writers`), so no
                    # timer. Renewals that keep failing past the lease wake us too
                    # (`_renew_loop`), and send us to the store's verdict below.
                    if writer.lease_until > self.clock():
                        await listener.wait(seen, None)
                        continue
                # The watch yields once when in place, so a change that lands while
                # it starts wakes us; the re-read below then sees it.
                self._watch_remote(stream_id, listener)
                record = await self._retrying(lambda: self.storage.load(stream_id))
                if record is None or record.expires_at <= self.clock():
                    yield [ErrorEvent("NOT_FOUND", "stream not found")]
                    return
                if record.compacted is not None:
                    # Compacted while we read: go on in its entries if we stand at a
                    # boundary of them, else `StreamCompactedError` (replay from 0).
                    async with aclosing(
                        self._compacted(record, cursor if sent else from_offset)
                    ) as entries:
                        async for batch in entries:
                            yield batch
                    return
                lease_until = record.lease_until
                if record.terminal is not None:
                    end = record.length
                if record.length > cursor and (end is None or end > cursor):
                    # The record promises chunks the read did not return. Usually a
                    # commit landed between our read and our load: read again at once.
                    # If reads keep coming back empty, data was lost under a live
                    # record: back off, then say so rather than spin or end short.
                    missing += 1
                    if missing > 4:
                        logger.error("stream %s: chunks from %d are missing", stream_id, cursor)
                        yield [ErrorEvent("INTERNAL", "stream data is missing")]
                        return
                    await anyio.sleep(0.05 * (missing - 1))
                    continue
                missing = 0
                if record.terminal is not None:
                    yield [terminal_event(record.terminal)]
                    return
                if self.is_abandoned(record):
                    if await self._record_abandoned(stream_id, record):
                        continue  # recorded (here or by another reader): read the end
                    if not listener.abandon_logged:
                        listener.abandon_logged = True
                        logger.info(
                            "stream %s (flow %r, owner %s) abandoned: its writer's lease lapsed",
                            stream_id, record.flow, owner_tag(record.owner),
                        )  # fmt: skip
                    yield [ErrorEvent("UNAVAILABLE", "stream abandoned")]
                    return
                if self._interrupting and stream_id not in self._writers:
                    raise StreamInterruptedError("server shutting down")
                lease_until = None if durable else record.lease_until
                lease_left = (lease_until or math.inf) - self.clock()
                await listener.wait(seen, max(0.01, min(self.poll_fallback, lease_left + 0.01)))
        finally:
            self._release(stream_id, listener)
            for observer in _telemetry.observers:
                observer.subscriber_removed()

    def _report_read(
        self, listener: _Listener, writer: StreamWriter | None, cursor: int, count: int
    ) -> None:
        """Tell observers of a read, and how far behind the newest chunk this process
        knows of (its own writer's, or the last one read here) the reader is."""
        head = max(listener.known_end, writer.committed if writer is not None else 0)
        for observer in _telemetry.observers:
            observer.chunks_read(count, max(0, head - cursor))

    async def _compacted(
        self, record: StreamRecord, from_offset: int
    ) -> AsyncGenerator[list[StreamEvent], None]:
        """`read_compacted`, counted as a subscriber by the observers."""
        for observer in _telemetry.observers:
            observer.subscriber_added()
        try:
            async with aclosing(read_compacted(self, record, from_offset)) as batches:
                async for batch in batches:
                    if _telemetry.observers:
                        count = sum(isinstance(e, ChunkEvent) for e in batch)
                        for observer in _telemetry.observers:
                            observer.chunks_read(count, 0)
                    yield batch
        finally:
            for observer in _telemetry.observers:
                observer.subscriber_removed()

    async def _resets(
        self, stream_id: str, start: int, end: int
    ) -> tuple[list[tuple[int, int]], bool]:
        """The reset entries in ``[start, end)`` as ``(void_from, offset)`` pairs, and
        whether all were read (False: a read came back short or met a compacted
        entry; the caller looks at the record, else takes what was found)."""
        found: list[tuple[int, int]] = []
        offset = start
        while offset < end:
            limit = min(self.read_batch, end - offset)
            chunks = await self._retrying(
                functools.partial(self.storage.read, stream_id, offset, limit)
            )
            if not chunks or _first_entry(chunks) is not None:
                return found, False
            for i, raw in enumerate(chunks):
                void_from = parse_reset(raw)
                if void_from is not None:
                    found.append((void_from, offset + i))
            offset += len(chunks)
        return found, True

    async def _record_abandoned(self, stream_id: str, record: StreamRecord) -> bool:
        """Record the end of a stream whose writer's lease lapsed, so that every reader,
        now or later, sees the same end. False when the backend cannot record it (the
        caller then gives its own subscribers the verdict, unrecorded)."""
        now = self.clock()
        terminal = error_terminal(UnavailableError("stream abandoned"))
        try:
            recorded = await self._retrying(
                lambda: self.storage.abandon(
                    stream_id, terminal, now=now, expires_at=now + self.ttl
                )
            )
        except NotImplementedError:
            return False
        if recorded:
            logger.info(
                "stream %s (flow %r, owner %s) abandoned: its writer's lease lapsed;"
                " end recorded",
                stream_id, record.flow, owner_tag(record.owner),
            )  # fmt: skip
            for observer in _telemetry.observers:
                observer.lease_expired("stream")
        return True

    # -- called by writers -------------------------------------------------------------

    def _committed(self, stream_id: str, offset: int, chunks: list[bytes]) -> None:
        listener = self._listeners.get(stream_id)
        if listener is not None:
            listener.remember(offset, chunks)
            listener.notify()

    def _notify(self, stream_id: str) -> None:
        listener = self._listeners.get(stream_id)
        if listener is not None:
            listener.notify()

    def _finished(self, stream_id: str) -> None:
        self._writers.pop(stream_id, None)
        self._notify(stream_id)

    async def _retrying(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a backend call, retrying with backoff while it raises `UnavailableError`.

        Only idempotent calls come here (writes are keyed by offset). Once
        ``write_retry_for`` seconds have passed since the first attempt, the last
        error is raised; an attempt still running then is cut off and counts as
        unavailable, so no call waits much longer than that on a backend that hangs.
        """
        deadline = anyio.current_time() + self.write_retry_for
        delay = 0.05
        while True:
            with anyio.move_on_after(max(deadline - anyio.current_time(), 0.5)) as attempt:
                try:
                    return await operation()
                except UnavailableError as exc:
                    error = exc
            if attempt.cancelled_caught:
                error = UnavailableError(
                    f"the backend did not answer within {self.write_retry_for:g}s"
                )
            if anyio.current_time() + delay > deadline:
                raise error
            logger.warning("backend unavailable, retrying in %.2fs: %s", delay, error)
            await anyio.sleep(delay)
            delay = min(delay * 2, 2.0)

    # -- listeners ----------------------------------------------------------------------

    def _acquire(self, stream_id: str) -> _Listener:
        listener = self._listeners.get(stream_id)
        if listener is None:
            listener = self._listeners[stream_id] = _Listener(self._tail_size)
        listener.users += 1
        return listener

    def _watch_remote(self, stream_id: str, listener: _Listener) -> None:
        """Start the stream's one backend watch, unless running or not needed.

        Only for shared backends, and only once a subscriber waits on a stream this
        process does not write: our own writes notify without the backend.
        """
        if self.storage.shared and listener.watch_scope is None:
            listener.watch_scope = anyio.CancelScope()
            self.task_group.start_soon(self._watch, stream_id, listener)

    def _release(self, stream_id: str, listener: _Listener) -> None:
        listener.users -= 1
        if listener.users == 0:
            if self._listeners.get(stream_id) is listener:
                del self._listeners[stream_id]
            if listener.watch_scope is not None:
                listener.watch_scope.cancel()
            if not self._listeners and self._unsubscribed is not None:
                self._unsubscribed.set()

    async def _watch(self, stream_id: str, listener: _Listener) -> None:
        """Relay another process's changes to this process's subscribers."""
        assert listener.watch_scope is not None
        delay = 0.1
        with listener.watch_scope:
            while True:
                try:
                    watch: AsyncIterator[None] = self.storage.watch(stream_id)
                    async for _ in watch:
                        listener.notify()
                        delay = 0.1
                except GatewayError as exc:
                    logger.warning("listener for %s failed, restarting: %s", stream_id, exc)
                except Exception:
                    logger.exception("listener for %s failed, restarting", stream_id)
                except anyio.get_cancelled_exc_class():
                    if not await foreign_cancellation():
                        raise  # the listener stops (its scope), or the manager closes
                    logger.warning("listener for %s: the store's client gave up", stream_id)
                # The watch ended or failed: wake subscribers to re-read, then resume.
                listener.notify()
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- background loops -----------------------------------------------------------------

    async def _renew_loop(self) -> None:
        while True:
            await anyio.sleep(self.lease / 3)
            open_ids = [sid for sid, w in self._writers.items() if not w.closed]
            if not open_ids:
                continue
            now = self.clock()
            # One renewal per TTL in use: each stream's expiry moves by its own TTL.
            by_ttl: dict[float, list[str]] = {}
            for sid in open_ids:
                by_ttl.setdefault(self._writers[sid].ttl, []).append(sid)
            try:
                cancelled: set[str] = set()
                for ttl, ids in by_ttl.items():
                    cancelled |= await _failed_if_foreign(
                        self.storage.renew(ids, now + self.lease, now + self.lease + ttl)
                    )
            except Exception as exc:
                if isinstance(exc, GatewayError):
                    logger.warning("lease renewal failed for %d streams: %s", len(open_ids), exc)
                else:
                    logger.exception("lease renewal failed for %d streams", len(open_ids))
                # Local subscribers of writers whose lease has now lapsed stop
                # trusting them and look at the store, as other processes do.
                now = self.clock()
                for sid in open_ids:
                    writer = self._writers.get(sid)
                    if writer is not None and writer.lease_until < now:
                        self._notify(sid)
                continue
            for sid in open_ids:
                writer = self._writers.get(sid)
                if writer is not None:
                    writer.lease_until = now + self.lease
            for sid in cancelled:
                writer = self._writers.get(sid)
                if writer is not None:
                    await self._flagged(writer)

    async def _flagged(self, writer: StreamWriter) -> None:
        """A renewal reported the writer's stream: stop or cancel its flow."""
        try:
            record = await _failed_if_foreign(self.storage.load(writer.stream_id))
        except Exception as exc:
            logger.warning(
                "could not load stream %s (next renewal retries): %r", writer.stream_id, exc
            )
            return
        if record is not None and record.status == "open" and not record.cancel_requested:
            if record.stop_requested:
                writer._request_stop()
                return
        writer._request_cancel()

    async def _purge_loop(self) -> None:
        while True:
            await anyio.sleep(self.purge_interval)
            try:
                removed = await _failed_if_foreign(self.purge())
            except Exception:
                logger.exception("purge of expired streams failed")
                continue
            if removed:
                logger.info("purged %d expired streams", removed)


async def _failed_if_foreign(call: Awaitable[T]) -> T:
    """Await a storage call made by a background loop; a CancelledError its client
    raised of its own (`foreign_cancellation`) becomes `UnavailableError`, a failed
    call the loop logs and retries, instead of ending the loop's task and with it the
    manager's task group (every stream of this process)."""
    try:
        return await call
    except anyio.get_cancelled_exc_class():
        if not await foreign_cancellation():
            raise
        raise UnavailableError("the store's client gave the call up") from None


class _CannotCompactError(FailedPreconditionError):
    """The storage does not implement `StreamStorage.compact`."""


def _unchanged(
    record: StreamRecord, reason: str, stored: int | None, size: int | None
) -> CompactionReport:
    """The report of a compaction that changed nothing (``None``: not measured)."""
    return CompactionReport(
        record.stream_id, False, record.length, stored, stored, size, size, reason
    )


def _first_entry(chunks: list[bytes]) -> int | None:
    """The index of the first compacted entry among ``chunks`` read as chunks: the
    stream was compacted under the reader."""
    for i, raw in enumerate(chunks):
        if raw[:3] == b"#c ":
            return i
    return None


_LINE_CONTROL = b"\n" + CONTROL_PREFIX


def _durable_events(
    offset: int, chunks: list[bytes], history: int, voids: list[tuple[int, int]]
) -> list[StreamEvent]:
    """The events of chunks read at ``offset`` of a durable execution's stream.

    Before ``history`` (committed before the subscription): only what no reset
    retracted. From there on: every chunk, and each reset as a `ResetEvent`.
    """
    if (offset >= history or not voids) and _LINE_CONTROL not in b"\n".join((b"", *chunks)):
        # The usual case, as lean as a plain stream's: no reset entry among the chunks
        # and none retracting them (one scan in C: a control entry starts with its
        # prefix, and chunks hold no raw newline; a false alarm only takes the loop).
        return [ChunkEvent(offset + i, raw) for i, raw in enumerate(chunks)]
    events: list[StreamEvent] = []
    for i, raw in enumerate(chunks):
        at = offset + i
        void_from = parse_reset(raw)
        if at < history:
            if void_from is None and not any(v <= at < end for v, end in voids):
                events.append(ChunkEvent(at, raw))
        elif void_from is not None:
            events.append(ResetEvent(at, void_from))
        else:
            events.append(ChunkEvent(at, raw))
    return events
