"""`StreamWriter`: the producer's end of a stream."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import anyio

from .. import _telemetry
from .._cancel import foreign_cancellation
from .._errors import (
    CancelledError,
    GatewayError,
    InternalError,
    StreamClosedError,
)
from .._json import dumps, error_json, loads
from .._limits import check_chunk
from .._logs import owner_tag
from .base import Terminal, reset_entry

if TYPE_CHECKING:
    from .manager import StreamManager

__all__ = ["StreamWriter"]

logger = logging.getLogger("stream_gateway.streams")


class StreamWriter:
    """Appends chunks to one stream, then ends it with exactly one terminal entry.

    Chunks are buffered and committed in batches: when ``max_batch`` chunks wait, or
    ``flush_interval`` seconds after the first waiting chunk (0: at the next turn of
    the event loop), whichever comes first.
    `done`, `error` and `cancelled` commit everything first. Writes after the
    terminal entry raise `StreamClosedError`. Not safe for use by two tasks at once.

    One background flusher per writer commits the buffer; it never queues a second
    flush behind a slow one. A flush that still fails after the manager's
    ``write_retry_for`` seconds *fails the writer*: `failure` is set, every later
    write raises it at once, local subscribers are told, and the stream can only
    end in an error. The terminal entry is then tried for one more retry window at
    most, so a stream gets its end (or, the backend still down, is left for its
    lease to lapse: readers see it abandoned) within about twice ``write_retry_for``.
    """

    def __init__(
        self,
        manager: StreamManager,
        stream_id: str,
        *,
        flow: str = "",
        owner: str | None = None,
        ttl: float | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.flow = flow
        self.owner = owner
        #: Seconds the stream stays readable after it ends.
        self.ttl = manager.ttl if ttl is None else ttl
        #: When this process last knew the lease to run out (set by the manager).
        self.lease_until = manager.clock() + manager.lease
        self._manager = manager
        self._buffer: list[bytes] = []
        self._length = 0  # committed chunks
        # fast_acquire: no event-loop round trip per chunk when nobody else holds it.
        self._lock = anyio.Lock(fast_acquire=True)
        self._closed = False
        self._flusher_running = False  # at most one background flusher per writer
        self._cancel_event = anyio.Event()
        self._cancel_callbacks: list[Callable[[], object]] = []
        self._stop_event = anyio.Event()
        self._stop_callbacks: list[Callable[[], object]] = []
        self._failure: GatewayError | None = None  # set once a flush gave up
        self._failure_callbacks: list[Callable[[], object]] = []

    @property
    def closed(self) -> bool:
        """True once a terminal entry was requested."""
        return self._closed

    @property
    def length(self) -> int:
        """Chunks accepted so far, committed or still buffered."""
        return self._length + len(self._buffer)

    @property
    def committed(self) -> int:
        """Chunks committed to the backend so far."""
        return self._length

    @property
    def failure(self) -> GatewayError | None:
        """The error that made this writer give up (a backend down for longer than
        ``write_retry_for``), or ``None``. Once set it stays set."""
        return self._failure

    def on_failure(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (synchronously) when the writer gives up; at once if it
        already has. The gateway uses it to stop a flow whose stream cannot be written."""
        if self._failure is not None:
            callback()
        else:
            self._failure_callbacks.append(callback)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is not None:
            return
        self._failure = exc if isinstance(exc, GatewayError) else InternalError("Internal Error")
        logger.warning(
            "stream %s (flow %r): writes failed (retried for up to %.1fs), giving up: %r",
            self.stream_id, self.flow, self._manager.write_retry_for, exc,
        )  # fmt: skip
        self._manager._notify(self.stream_id)
        for callback in self._failure_callbacks:
            callback()

    @property
    def cancel_requested(self) -> bool:
        """True once someone asked (via `StreamManager.cancel`) to stop this stream."""
        return self._cancel_event.is_set()

    async def wait_cancel_requested(self) -> None:
        """Return when cancellation of this stream has been requested."""
        await self._cancel_event.wait()

    def on_cancel_requested(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (synchronously) when cancellation is requested; at once if
        it already was."""
        if self._cancel_event.is_set():
            callback()
        else:
            self._cancel_callbacks.append(callback)

    def _request_cancel(self) -> None:
        if not self._cancel_event.is_set():
            self._cancel_event.set()
            for callback in self._cancel_callbacks:
                callback()

    @property
    def stop_requested(self) -> bool:
        """True once someone asked (via `StreamManager.stop`) that the flow finish now,
        with what it has: unlike a cancel, the stream still ends with its result."""
        return self._stop_event.is_set()

    def on_stop_requested(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (synchronously) when a stop is requested; at once if it
        already was."""
        if self._stop_event.is_set():
            callback()
        else:
            self._stop_callbacks.append(callback)

    def _request_stop(self) -> None:
        if not self._stop_event.is_set():
            self._stop_event.set()
            for callback in self._stop_callbacks:
                callback()

    async def write(self, chunk: Any) -> None:
        """Append one JSON-serializable chunk.

        Raises `StreamClosedError` after the terminal entry, `ResourceExhaustedError`
        when the chunk exceeds ``max_chunk_bytes`` or the stream ``max_stream_chunks``.
        """
        await self.write_raw(dumps(chunk))

    async def write_raw(self, raw: bytes) -> None:
        """Append one chunk given as compact JSON bytes (see `write`)."""
        manager = self._manager
        if self._closed:
            raise StreamClosedError("stream is finished; no more chunks are accepted")
        if self._failure is not None:
            raise self._failure
        check_chunk(raw, self.length, manager.max_chunk_bytes, manager.max_stream_chunks)
        self._buffer.append(raw)
        if len(self._buffer) >= manager.max_batch:
            await self.flush()
        elif not self._flusher_running:
            # flush_interval 0 still coalesces: the timer fires at the next turn of
            # the event loop, so chunks written in one turn go out as one batch.
            self._flusher_running = True
            manager.task_group.start_soon(self._flusher)

    async def flush(self) -> None:
        """Commit the buffered chunks now, as one batch.

        Retried for ``write_retry_for`` seconds while the backend is unavailable;
        if it still fails, the writer fails (see `failure`) and the error is raised.
        A writer that failed already raises its failure at once.
        """
        manager = self._manager
        async with self._lock:
            if self._failure is not None:
                raise self._failure
            if not self._buffer:
                return
            batch, offset = self._buffer, self._length
            self._buffer = []
            try:
                with _telemetry.span("stream.storage.append", stream_id=self.stream_id):
                    await manager._retrying(
                        lambda: manager.storage.append(self.stream_id, offset, batch)
                    )
            except BaseException as exc:
                self._buffer[:0] = batch  # keep order; a later flush tries again
                if isinstance(exc, Exception):
                    self._fail(exc)
                raise
            self._length = offset + len(batch)
            for observer in _telemetry.observers:
                observer.chunks_written(self.flow, len(batch))
        manager._committed(self.stream_id, offset, batch)

    async def reset(self, void_from: int) -> None:
        """Append a reset entry: readers drop every chunk from ``void_from`` on.

        For the stream of a durable execution (see `StreamManager.attach`): offsets
        stay dense, so new chunks continue after the reset entry.
        """
        if not 0 <= void_from <= self.length:
            raise ValueError(f"cannot reset to {void_from}: the stream has {self.length} entries")
        await self.write_raw(reset_entry(void_from))

    async def detach(self) -> None:
        """Commit what is buffered and let go of the stream without ending it.

        For the stream of a durable execution whose run parks or stops: a later run
        (any process) attaches a new writer. Writes afterwards raise `StreamClosedError`.
        """
        if self._closed:
            return
        try:
            await self.flush()
        finally:
            self._closed = True
            if self._manager._writers.get(self.stream_id) is self:
                self._manager._finished(self.stream_id)

    async def done(self, result: Any) -> None:
        """Commit what is buffered, then the result."""
        await self.done_raw(dumps(result))

    async def done_raw(self, raw: bytes) -> None:
        """Commit what is buffered, then the result given as compact JSON bytes."""
        await self._finish(Terminal("done", raw))

    async def error(self, exc: BaseException) -> None:
        """Commit what is buffered, then an error entry.

        A `GatewayError` is stored as is; anything else as ``INTERNAL`` /
        "Internal Error" (log it yourself; its text never reaches a client).
        """
        await self._finish(error_terminal(exc))

    async def cancelled(self, message: str = "flow cancelled") -> None:
        """Commit what is buffered, then the cancelled entry (status ``CANCELLED``)."""
        await self.error(CancelledError(message))

    async def _finish(self, terminal: Terminal) -> None:
        if self._closed:
            raise StreamClosedError("stream is finished; it has a terminal entry already")
        self._closed = True
        manager = self._manager
        try:
            if self._failure is not None and self._buffer:
                # The writer gave up: what its subscribers saw is final. Committing
                # the rest now would give later readers chunks the others never got.
                logger.error(
                    "stream %s: %d buffered chunks dropped after the writer failed",
                    self.stream_id, len(self._buffer),
                )  # fmt: skip
                self._buffer.clear()
            try:
                await self.flush()
            except Exception as exc:
                # The buffered chunks cannot be committed (a full store, a backend
                # down past the retries). The stream still gets its terminal entry, at
                # the committed length; a result would now be a silently short stream,
                # so it becomes the error instead.
                logger.error(
                    "stream %s: %d buffered chunks could not be committed: %r",
                    self.stream_id, len(self._buffer), exc,
                )  # fmt: skip
                self._buffer.clear()
            if self._failure is not None and terminal.kind == "done":
                terminal = error_terminal(self._failure)
            async with self._lock:
                now = manager.clock()
                try:
                    with _telemetry.span("stream.storage.finish", stream_id=self.stream_id):
                        await manager._retrying(
                            lambda: manager.storage.finish(
                                self.stream_id,
                                self._length,
                                terminal,
                                now=now,
                                expires_at=now + self.ttl,
                            )
                        )
                except Exception as exc:
                    self._fail(exc)
                    logger.error(
                        "stream %s (flow %r): its end could not be recorded: %r; readers"
                        " will see it abandoned once its lease lapses",
                        self.stream_id, self.flow, exc,
                    )  # fmt: skip
                    raise
            logger.info(
                "stream %s (flow %r, owner %s) ended: %s after %d chunks",
                self.stream_id, self.flow, owner_tag(self.owner), _describe(terminal),
                self._length,
            )  # fmt: skip
            manager._ended(self.stream_id)
        finally:
            manager._finished(self.stream_id)
            for observer in _telemetry.observers:
                observer.stream_finished(self.flow, terminal.kind)

    async def _flusher(self) -> None:
        """Commit the buffer every ``flush_interval`` while chunks come in."""
        try:
            while not self._closed and self._failure is None:
                await anyio.sleep(self._manager.flush_interval)
                if self._closed or not self._buffer:
                    return  # nothing to do, or _finish flushes
                try:
                    await self.flush()
                except Exception:
                    return  # flush() failed the writer: the producer's next call hears
                except anyio.get_cancelled_exc_class():
                    if not await foreign_cancellation():
                        raise
                    return  # the next flush (the producer's, or the end's) retries
        finally:
            self._flusher_running = False


def _describe(terminal: Terminal) -> str:
    if terminal.kind == "done":
        return "done"
    body = loads(terminal.payload)
    return f"{body['status']} {body['message']!r}"


def error_terminal(exc: BaseException) -> Terminal:
    """The terminal entry for an error; never fails.

    A `GatewayError` is kept; anything else becomes ``INTERNAL`` / "Internal Error".
    Details that JSON cannot carry are dropped rather than leave the stream without
    its end.
    """
    err = exc if isinstance(exc, GatewayError) else InternalError("Internal Error")
    kind: Literal["error", "cancelled"] = (
        "cancelled" if isinstance(err, CancelledError) else "error"
    )
    return Terminal(kind, error_json(err.status, err.message, err.details))
