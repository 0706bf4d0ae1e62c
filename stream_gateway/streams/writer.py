"""`StreamWriter`: the producer's end of a stream."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import anyio

from .._errors import (
    CancelledError,
    GatewayError,
    InternalError,
    StreamClosedError,
)
from .._json import dumps, error_json
from .._limits import check_chunk
from .base import Terminal

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
    """

    def __init__(self, manager: StreamManager, stream_id: str) -> None:
        self.stream_id = stream_id
        self._manager = manager
        self._buffer: list[bytes] = []
        self._length = 0  # committed chunks
        # fast_acquire: no event-loop round trip per chunk when nobody else holds it.
        self._lock = anyio.Lock(fast_acquire=True)
        self._closed = False
        self._flush_pending = False
        self._cancel_event = anyio.Event()
        self._cancel_callbacks: list[Callable[[], object]] = []
        self._failure: GatewayError | None = None  # a background flush that gave up

    @property
    def closed(self) -> bool:
        """True once a terminal entry was requested."""
        return self._closed

    @property
    def length(self) -> int:
        """Chunks accepted so far, committed or still buffered."""
        return self._length + len(self._buffer)

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
        elif not self._flush_pending:
            # flush_interval 0 still coalesces: the timer fires at the next turn of
            # the event loop, so chunks written in one turn go out as one batch.
            self._flush_pending = True
            manager.task_group.start_soon(self._flush_later)

    async def flush(self) -> None:
        """Commit the buffered chunks now, as one batch."""
        async with self._lock:
            if not self._buffer:
                return
            batch, offset = self._buffer, self._length
            self._buffer = []
            try:
                await self._manager._retrying(
                    lambda: self._manager.storage.append(self.stream_id, offset, batch)
                )
            except BaseException:
                self._buffer[:0] = batch  # keep order; a later flush tries again
                raise
            self._length = offset + len(batch)
        self._manager._committed(self.stream_id, offset, batch)

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
                if terminal.kind == "done":
                    terminal = error_terminal(exc)
            async with self._lock:
                now = manager.clock()
                await manager._retrying(
                    lambda: manager.storage.finish(
                        self.stream_id,
                        self._length,
                        terminal,
                        now=now,
                        expires_at=now + manager.ttl,
                    )
                )
        finally:
            manager._finished(self.stream_id)

    async def _flush_later(self) -> None:
        await anyio.sleep(self._manager.flush_interval)
        self._flush_pending = False
        if self._closed:
            return  # _finish flushes
        try:
            await self.flush()
        except GatewayError as exc:
            # Runs in the manager's task group: report to the producer's next call.
            self._failure = exc
        except Exception:
            logger.exception("background flush of stream %s failed", self.stream_id)
            self._failure = InternalError("Internal Error")


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
