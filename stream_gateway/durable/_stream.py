"""The stream of a streaming durable execution, as one run writes it (`RunStream`).

The stream is the logical output of the execution. A run attaches a writer at the
stream's length; the journal says how much of it is committed (``stream_at`` of the
latest entry: before each journal write the run flushes the stream and records its
length in the entry). Anything after that was written by a run that did not get to
record it (its worker died): the run retracts it with a reset entry before it writes.

On replay, code between steps runs again: its chunks were committed already when a
later journal entry exists, so the run counts them off (``replayed``) instead of
writing them again. A step that completed never runs again, so its chunks are never
repeated. What a failed or timed-out attempt streamed is retracted (reset to where
the attempt started). Inside `join`/`race` branches, which run concurrently, a step's
chunks are held until the step completes and written with its journal entry.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from .._errors import StreamClosedError, StreamNotFoundError
from ..streams.base import parse_reset
from .errors import DurableUsageError
from .records import History, JournalEntry

if TYPE_CHECKING:
    from ..streams.writer import StreamWriter
    from .definition import DurableFlow

__all__ = ["RunStream"]

logger = logging.getLogger("stream_gateway.durable")


class RunStream:
    """One run's writer on its execution's stream (a no-op without one)."""

    def __init__(self, writer: StreamWriter | None = None, committed: int = 0) -> None:
        self.writer = writer
        #: The stream length the journal vouches for when the run started.
        self.committed = committed
        #: The stream length the latest journal write vouches for.
        self._vouched = committed
        #: Where replayed code stands in the committed stream (see `passed`).
        self.replayed = 0
        #: Set once the run wrote something new to the journal: all chunks are new.
        self.live = False
        self._lock = anyio.Lock()
        self._concurrent: set[str] = set()
        self._held: dict[str, list[bytes]] = {}

    @classmethod
    async def attach(
        cls, engine: Any, execution_id: str, flow: DurableFlow[Any, Any], history: History
    ) -> RunStream:
        """Attach to the execution's stream, retracting what a lost run left uncommitted.

        No stream manager, a flow that does not stream, or a stream that is gone or
        finished (its end was written just before the worker died): a run that streams
        nothing (chunks are validated, then dropped)."""
        manager = engine.streams
        if manager is None or not flow.streaming:
            return cls()
        try:
            writer = await manager.attach(execution_id)
        except (StreamNotFoundError, StreamClosedError):
            return cls()
        marks = [e.stream_at for e in history.entries if e.stream_at is not None]
        committed = max(marks, default=0)
        if writer.length > committed:
            last = await manager.storage.read(execution_id, writer.length - 1, 1)
            if not last or parse_reset(last[0]) != committed:
                logger.info(
                    "flow %s: retracting stream entries %d..%d of a lost run",
                    execution_id, committed, writer.length - 1,
                )  # fmt: skip
                await writer.reset(committed)
        return cls(writer, committed)

    # -- what the context calls ------------------------------------------------------

    def passed(self, entry: JournalEntry | None) -> None:
        """A durable call found its journal entry: replayed code stands after it."""
        if entry is not None and entry.stream_at is not None:
            self.replayed = max(self.replayed, entry.stream_at)

    def unvouched(self) -> bool:
        """Whether chunks were sent that no journal entry vouches for yet (the flow's
        own code sent them after its latest durable write)."""
        return self.writer is not None and self.writer.length > self._vouched

    def stop_flagged(self) -> bool:
        """Whether a stop of the execution reached this run's stream writer."""
        return self.writer is not None and self.writer.stop_requested

    def concurrent(self, branch: str) -> None:
        """``branch`` runs next to others (a `join`/`race` branch)."""
        self._concurrent.add(branch)

    def _in_concurrent(self, branch: str) -> bool:
        while branch:
            if branch in self._concurrent:
                return True
            branch = branch.rpartition("/")[0]
        return False

    async def send(self, branch: str, step: str | None, raw: bytes) -> None:
        """Send one encoded chunk from ``branch`` (inside the body of ``step``, if any)."""
        if self.writer is None:
            return
        if self._concurrent and self._in_concurrent(branch):
            if step is None:
                raise DurableUsageError(
                    "ctx.send_chunk() in a ctx.join/ctx.race branch must be called from "
                    "inside a step (an async ctx.run body): concurrent branches stream "
                    "each step's chunks when the step completes"
                )
            self._held.setdefault(step, []).append(raw)
            return
        if step is None and not self.live and self.replayed < self.committed:
            self.replayed += 1  # sent by an earlier run and committed: not again
            return
        self.live = True
        await self.writer.write_raw(raw)

    def mark(self, branch: str, step: str) -> int:
        """Where an attempt of ``step`` starts (see `retract`)."""
        self.live = True  # a step that runs is past the journal: what follows is new
        self._held.pop(step, None)
        if self.writer is None or self._in_concurrent(branch):
            return -1
        return self.writer.length

    async def retract(self, step: str, mark: int) -> None:
        """Void what the failed attempt of ``step`` that started at ``mark`` sent:
        drop its held chunks, or write a reset to ``mark``."""
        self._held.pop(step, None)
        if self.writer is not None and 0 <= mark < self.writer.length:
            await self.writer.reset(mark)

    @asynccontextmanager
    async def committing(
        self, entry: JournalEntry, *, preceding: Sequence[JournalEntry] = ()
    ) -> AsyncIterator[None]:
        """Around a journal write of ``preceding`` (ephemeral steps' entries) then
        ``entry``: send their steps' held chunks in that order, commit the stream and
        record its length in each; no other write in between."""
        if self.writer is None:
            yield
            return
        async with self._lock:
            self.live = True
            for written in (*preceding, entry):
                for raw in self._held.pop(written.path, ()):
                    await self.writer.write_raw(raw)
            await self.writer.flush()
            for written in (*preceding, entry):
                written.stream_at = self.writer.committed
            self._vouched = self.writer.committed
            yield

    # -- how the run ends ----------------------------------------------------------------

    async def done(self, raw: str) -> None:
        """End the stream with the flow's result (before the journal says completed)."""
        if self.writer is not None:
            writer, self.writer = self.writer, None
            await _ending(writer, writer.done_raw(raw.encode()))

    async def error(self, exc: BaseException) -> None:
        """End the stream with the flow's (public) error."""
        if self.writer is not None:
            writer, self.writer = self.writer, None
            await _ending(writer, writer.error(exc))

    async def detach(self) -> None:
        """The run parks or stops: commit what was sent and let go of the stream."""
        if self.writer is not None:
            writer, self.writer = self.writer, None
            try:
                with anyio.CancelScope(shield=True):
                    await writer.detach()
            except Exception as exc:
                logger.warning("stream %s: detach failed: %r", writer.stream_id, exc)


async def _ending(writer: StreamWriter, end: Awaitable[None]) -> None:
    # The execution's end does not wait on its stream: a stream backend down past
    # the writer's retries leaves the stream without its end (logged by the writer).
    try:
        await end
    except Exception as exc:
        logger.warning("stream %s: its end could not be written: %r", writer.stream_id, exc)
