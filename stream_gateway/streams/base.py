"""The stream model and the backend contract every storage implements.

A stream is an append-only log of chunks at dense offsets ``0, 1, 2, ...`` followed by
exactly one terminal entry (done, error or cancelled). Chunks travel and rest as
compact JSON bytes; they are encoded once, above the backends.

`StreamStorage` is the small contract a backend implements (memory, SQLite, Firestore,
RTDB). Everything else (buffering, leases, fan-out, limits, abandonment) lives once in
`stream_gateway.streams.StreamManager`, which is built on a storage.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .._errors import InvalidArgumentError
from .._json import loads

__all__ = [
    "ChunkEvent",
    "ErrorEvent",
    "ResetEvent",
    "ResultEvent",
    "StreamEvent",
    "StreamFilter",
    "StreamPage",
    "StreamRecord",
    "StreamStatus",
    "StreamStorage",
    "Terminal",
    "compacted_entry",
    "parse_compacted",
    "parse_reset",
    "reset_entry",
    "scanned_page",
]

#: How a control entry starts: no compact JSON value starts with ``#``, so a backend
#: stores it as it stores any chunk, and nothing a flow sends can be taken for one.
CONTROL_PREFIX = b"#"
_RESET = b"#reset "
_COMPACTED = b"#c "

StreamStatus = Literal["open", "done", "error", "cancelled"]


@dataclass(frozen=True, slots=True)
class Terminal:
    """The last entry of a stream.

    ``kind`` is ``"done"`` (``payload`` is the result's JSON) or ``"error"`` /
    ``"cancelled"`` (``payload`` is ``{"status", "message", "details"?}`` as JSON).
    """

    kind: Literal["done", "error", "cancelled"]
    payload: bytes


@dataclass(slots=True)
class StreamRecord:
    """A stream's metadata: everything but its chunks.

    ``length`` counts the committed chunks. ``lease_until`` is when the writer's lease
    lapses (``None`` once finished). Times are Unix seconds.
    """

    stream_id: str
    flow: str
    created_at: float
    updated_at: float
    expires_at: float
    owner: str | None = None
    status: StreamStatus = "open"
    length: int = 0
    lease_until: float | None = None
    cancel_requested: bool = False
    terminal: Terminal | None = None
    #: A stop was requested (`StreamStorage.request_stop`): finish now, with a result.
    stop_requested: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    #: The number of stored entries once compacted (`StreamStorage.compact`); None before.
    compacted: int | None = None


# Not frozen: one is made per chunk per reader, and a frozen dataclass costs twice as
# much to build. Treat it as immutable all the same.
@dataclass(slots=True)
class ChunkEvent:
    """A chunk at ``offset``; ``raw`` is its compact JSON.

    ``span`` is how many offsets it stands for: 1, except for an entry of a compacted
    stream, which stands for the chunks it joined (the next one starts at
    ``offset + span``, and a reader resumes there).
    """

    offset: int
    raw: bytes
    span: int = 1

    @property
    def data(self) -> Any:
        """The chunk decoded from JSON."""
        return loads(self.raw)


@dataclass(frozen=True, slots=True)
class ResultEvent:
    """The stream finished with a result; ``raw`` is its compact JSON."""

    raw: bytes

    @property
    def result(self) -> Any:
        """The result decoded from JSON."""
        return loads(self.raw)


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """The stream ended in an error (``CANCELLED`` when cancelled, ``UNAVAILABLE`` when
    abandoned)."""

    status: str
    message: str
    details: Any = None


@dataclass(frozen=True, slots=True)
class ResetEvent:
    """The entry at ``offset`` retracts every chunk from ``void_from`` on (up to it).

    Streaming durable flows write one when a step attempt that already streamed
    failed, timed out or was lost with its worker: whatever a reader shows from
    ``void_from`` on must go; the chunks that follow continue at ``offset + 1``.
    """

    offset: int
    void_from: int


StreamEvent = ChunkEvent | ResultEvent | ErrorEvent | ResetEvent


def reset_entry(void_from: int) -> bytes:
    """The stored form of a reset control entry retracting chunks from ``void_from`` on."""
    if void_from < 0:
        raise ValueError("void_from must be >= 0")
    return _RESET + str(void_from).encode()


def parse_reset(raw: bytes) -> int | None:
    """The ``void_from`` of a stored reset entry; ``None`` for an ordinary chunk."""
    if raw[:1] != CONTROL_PREFIX or not raw.startswith(_RESET):
        return None
    return int(raw[len(_RESET) :])


def compacted_entry(start: int, raw: bytes) -> bytes:
    """The stored form of an entry of a compacted stream: ``raw`` (a chunk's compact
    JSON) standing for the chunks from logical offset ``start`` on."""
    if start < 0:
        raise ValueError("start must be >= 0")
    return _COMPACTED + str(start).encode() + b" " + raw


def parse_compacted(raw: bytes) -> tuple[int, bytes] | None:
    """``(start, chunk)`` of a stored compacted entry; ``None`` for anything else."""
    if raw[:1] != CONTROL_PREFIX or not raw.startswith(_COMPACTED):
        return None
    start, sep, chunk = raw[len(_COMPACTED) :].partition(b" ")
    if not sep or not start.isdigit():
        return None
    return int(start), chunk


@dataclass(frozen=True, slots=True)
class StreamPage:
    """One page of `StreamStorage.list_streams`: records newest first.

    ``next_cursor`` continues the listing after the last record (pass it back as
    ``cursor``); ``None`` when there is nothing more. A page may hold fewer records
    than asked for and still have a next one (expired records are left out).
    """

    records: list[StreamRecord]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """What `StreamStorage.list_streams` selects, and where a listing resumes.

    Order is newest first: by ``created_at`` descending, then by stream id descending
    (so records created at the same instant still have one order). ``after`` is the
    position ``(created_at, stream_id)`` of the last record already listed, decoded
    from a cursor; only records strictly after it (older, in the order) are selected.
    """

    status: StreamStatus | None = None
    flow: str | None = None
    owner: str | None = None
    limit: int = 50
    after: tuple[float, str] | None = None

    @classmethod
    def of(
        cls,
        *,
        status: StreamStatus | None = None,
        flow: str | None = None,
        owner: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> StreamFilter:
        """Check the arguments of a listing; a bad limit or cursor is `InvalidArgumentError`."""
        if status is not None and status not in ("open", "done", "error", "cancelled"):
            raise InvalidArgumentError(
                f"unknown stream status {status!r}: use open, done, error or cancelled"
            )
        if not 1 <= limit <= 1000:
            raise InvalidArgumentError("limit must be between 1 and 1000")
        return cls(status, flow, owner, limit, None if cursor is None else decode_cursor(cursor))

    def matches(self, record: StreamRecord) -> bool:
        """Whether ``record`` passes the status, flow and owner conditions."""
        return (
            (self.status is None or record.status == self.status)
            and (self.flow is None or record.flow == self.flow)
            and (self.owner is None or record.owner == self.owner)
        )

    def follows(self, record: StreamRecord) -> bool:
        """Whether ``record`` comes after the cursor (always, without one)."""
        return self.after is None or (record.created_at, record.stream_id) < self.after

    def page(self, newest_first: list[StreamRecord], *, more: bool) -> StreamPage:
        """The page made of ``newest_first`` (records in listing order, at least those
        that follow the cursor and match): the first ``limit`` selected, and a cursor
        when more exist (``more``: the source had records beyond those given)."""
        selected = [r for r in newest_first if self.follows(r) and self.matches(r)]
        records = selected[: self.limit]
        if len(selected) > self.limit or (more and records):
            return StreamPage(records, encode_cursor(records[-1]))
        return StreamPage(records, None)


def scanned_page(
    selection: StreamFilter, scanned: list[StreamRecord], *, exhausted: bool
) -> StreamPage:
    """The page of a backend that reads records in listing order and checks the
    conditions itself: ``scanned`` is every record it read from the cursor on (in
    order), ``exhausted`` whether it reached the end. A page not filled when the scan
    stopped short continues after the last record scanned."""
    page = selection.page(scanned, more=not exhausted)
    if len(page.records) < selection.limit and not exhausted and scanned:
        return StreamPage(page.records, encode_cursor(scanned[-1]))
    return page


def encode_cursor(record: StreamRecord) -> str:
    """The cursor that continues a listing after ``record``."""
    return f"{record.created_at!r}:{record.stream_id}"


def decode_cursor(cursor: str) -> tuple[float, str]:
    """``(created_at, stream_id)`` from a cursor; a malformed one is `InvalidArgumentError`."""
    created, sep, stream_id = cursor.partition(":")
    try:
        when = float(created)
    except ValueError:
        when = float("nan")
    if not sep or not stream_id or when != when or len(cursor) > 300:
        raise InvalidArgumentError(f"malformed listing cursor {cursor[:40]!r}")
    return when, stream_id


class StreamStorage(abc.ABC):
    """What a backend stores and how it tells of changes. One writer per stream.

    Implementations must be safe to call concurrently from one event loop; the
    manager never writes to one stream from two tasks at once. Times passed in are
    Unix seconds chosen by the manager, so every backend expires alike.
    """

    #: Default pause between a write and its flush (seconds). Chunks written within
    #: this window go to the backend as one batch; a crash can lose at most this window.
    flush_interval: float = 0.0
    #: Whether another process can see this storage (and so needs `watch`).
    shared: bool = False

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections; called once before any other method."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called once at the end."""

    @abc.abstractmethod
    async def create(self, record: StreamRecord) -> None:
        """Store a new stream atomically.

        Raises `StreamExistsError` when the id is taken (even by an expired stream
        not yet purged); an existing stream is never overwritten.
        """

    @abc.abstractmethod
    async def append(self, stream_id: str, offset: int, chunks: Sequence[bytes]) -> None:
        """Commit ``chunks`` at offsets ``offset, offset + 1, ...`` as one batch.

        ``offset`` is the stream's length as the writer knows it. A call that failed
        (or seemed to) may be retried at the same offset with the same chunks,
        possibly followed by newer ones: replace what is there, so that the length
        becomes ``offset + len(chunks)``; never duplicate or reject it. Each chunk is
        compact JSON without a raw newline. When this returns, the chunks are durable
        (as far as the backend is) and visible to `read`; the record's ``length`` may
        be updated lazily but never ahead of the chunks.
        """

    @abc.abstractmethod
    async def finish(
        self, stream_id: str, length: int, terminal: Terminal, *, now: float, expires_at: float
    ) -> None:
        """Record the terminal entry after ``length`` chunks, atomically.

        Sets status, ``length``, ``updated_at = now``, ``expires_at``; clears the
        lease. Called once, after every append of the stream has returned.

        A stream that is no longer open (its end was recorded by `abandon` while its
        writer stalled) is left as it is: the first end recorded stands, so every
        reader, now or later, sees the same one. A retried call is harmless.
        """

    async def abandon(
        self, stream_id: str, terminal: Terminal, *, now: float, expires_at: float
    ) -> bool:
        """Record ``terminal`` as the end of a stream whose writer's lease lapsed.

        A conditional `finish`, atomic against the writer's renewals, appends and
        finish: only if the stream is open and its ``lease_until`` is before ``now``.
        The recorded ``length`` is the exact committed length (as `load` counts it);
        ``updated_at = now``, ``expires_at`` as given, the lease cleared. Returns True
        when this call recorded the end; False when the stream is unknown, finished,
        or its lease still runs (renewed meanwhile).

        Afterwards the stalled writer must not change what readers see: a backend
        either refuses its appends (`StreamClosedError`) or keeps them past the
        recorded ``length``, where the manager never reads on a finished stream; its
        `renew` reports the stream (see there) and its `finish` changes nothing.

        Every backend implements it; the default raises `NotImplementedError`, and the
        manager then only tells its own subscribers (the verdict is not recorded).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot record abandonment")

    @abc.abstractmethod
    async def load(self, stream_id: str) -> StreamRecord | None:
        """The stream's record, or ``None`` if unknown. ``length`` is exact: it counts
        every chunk committed so far (read from the chunk batches if need be)."""

    @abc.abstractmethod
    async def read(self, stream_id: str, offset: int, limit: int) -> list[bytes]:
        """Up to ``limit`` committed chunks from ``offset`` on, in order, with no gap.

        Reads only the batches overlapping ``[offset, offset + limit)``. Returns
        ``[]`` at the end.
        """

    @abc.abstractmethod
    async def renew(
        self, stream_ids: Sequence[str], lease_until: float, expires_at: float
    ) -> set[str]:
        """Extend the writer lease of open streams; return the ids whose cancellation
        was requested (by any process), those whose stop was requested (see
        `request_stop`), and those no longer open (their end was recorded elsewhere,
        e.g. by `abandon`): the manager loads these records and stops or cancels
        their writers."""

    @abc.abstractmethod
    async def request_cancel(self, stream_id: str) -> bool:
        """Flag an open stream for cancellation. False if unknown or already finished."""

    async def request_stop(self, stream_id: str) -> bool:
        """Flag an open stream's flow to stop (finish now with its partial result).

        False if unknown or already finished. The flag shows in `load`
        (``stop_requested``), and `renew` reports a flagged stream as it reports a
        cancelled one (the manager then loads the record to tell the two apart).
        The default raises `NotImplementedError`: a stop then reaches only a writer in
        the process that receives it.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot carry a stop to another process")

    async def list_streams(self, selection: StreamFilter) -> StreamPage:
        """Records selected by ``selection``, newest first, one page at a time.

        Records are ordered by ``created_at`` descending, then stream id descending;
        a page holds at most ``selection.limit`` records and a cursor when more may
        follow. Records expired but not yet purged may be included (the manager leaves
        them out). ``length`` is exact for every record, as `load` makes it. A backend
        should seek to the cursor through an index rather than scan every stream; each
        says in its docs what it does. The default raises `NotImplementedError`.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list streams")

    async def compact(self, stream_id: str, length: int, entries: Sequence[bytes]) -> bool:
        """Replace a finished stream's stored chunks with ``entries`` (physical offsets
        ``0..len(entries)-1``) and record ``compacted = len(entries)``.

        Conditional and atomic as far as the backend allows: only if the stream exists,
        is not open, its recorded ``length`` equals ``length`` and it is not compacted
        yet; returns True when this call compacted it, False otherwise (unknown, open,
        already compacted, length changed). ``length``, status, terminal, owner, flow,
        created_at, updated_at and expires_at are left as they are.

        Readers may read while it runs: `read` returns original chunks, entries (they
        start with ``#c``), or fewer chunks than asked (even ``[]``); never anything
        else. Chunks at physical offsets ``len(entries)..length-1`` are deleted before
        this returns (or, on a backend that cannot do it in the same transaction, just
        after the record is marked; a crash in between leaves them to `purge`, which
        deletes a compacted stream entirely when it expires). ``len(entries)`` is at
        least 1 and at most ``length``.

        The default raises `NotImplementedError` (the manager then reports that this
        store cannot compact).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot compact streams")

    @abc.abstractmethod
    async def purge(self, now: float) -> int:
        """Delete streams whose ``expires_at`` is at or before ``now``; return how many."""

    def watch(self, stream_id: str) -> AsyncIterator[None]:
        """Yield whenever the stream may have changed in *another* process.

        Only called when `shared` is true; the manager notifies its own subscribers
        of its own writes. Must yield once as soon as the watch is in place (a change
        made while it was being set up would otherwise go unannounced). Spurious
        wake-ups are fine; a missed change is not (the manager re-reads on every
        yield, and also on the writer's lease deadline).
        """
        raise NotImplementedError(f"{type(self).__name__} is shared but has no watch()")
