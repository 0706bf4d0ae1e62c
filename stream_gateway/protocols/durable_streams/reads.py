"""Reading a stream the protocol's way: pages for catch-up, and following it live.

Two kinds of stream are read alike. A stream created through the protocol holds
bytes or JSON messages and is closed by its writer. A flow's stream is read-only JSON:
its chunks become ``{"message": <chunk>}`` messages and its end one more message,
``{"result": <output>}`` or ``{"error": {status, message, details?}}``, after which it
is closed (so its tail is one past its last chunk).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from ..._json import error_json
from ...streams.base import (
    ChunkEvent,
    ErrorEvent,
    ResetEvent,
    ResultEvent,
    StreamRecord,
    Terminal,
    parse_compacted,
)
from ...streams.manager import StreamManager
from .payload import decode_bytes, json_array
from .wire import is_json

__all__ = ["Page", "StreamView"]

_ABANDONED = b'{"error":{"status":"UNAVAILABLE","message":"stream abandoned"}}'


@dataclass(frozen=True, slots=True)
class Page:
    """What one read returns: the body, where to read next, and the stream's state."""

    body: bytes
    start: int
    next_offset: int
    up_to_date: bool
    closed: bool
    empty: bool


@dataclass(frozen=True, slots=True)
class Tail:
    """A stream's end as last seen: its tail offset and whether it is closed."""

    offset: int
    closed: bool


@dataclass(frozen=True, slots=True)
class StreamView:
    """How to read one stream's chunks through the protocol."""

    manager: StreamManager
    stream_id: str
    content_type: str
    flow: bool = False
    max_read_bytes: int = 1024 * 1024

    @property
    def json(self) -> bool:
        """JSON mode: a read answers a JSON array of messages."""
        return is_json(self.content_type)

    async def tail(self) -> Tail:
        """The tail offset and closure, from the stream's record."""
        return self._tail(await self.manager.info(self.stream_id))

    def _tail(self, record: StreamRecord) -> Tail:
        finished = record.terminal is not None or self.manager.is_abandoned(record)
        return Tail(record.length + (1 if self.flow and finished else 0), finished)

    def _end_message(self, terminal: Terminal | None) -> bytes:
        if terminal is None:
            return _ABANDONED
        if terminal.kind == "done":
            return b'{"result":' + terminal.payload + b"}"
        return b'{"error":' + terminal.payload + b"}"

    def _body(self, chunks: list[bytes], end: bytes | None) -> bytes:
        if self.json:
            messages = [b'{"message":' + c + b"}" for c in chunks] if self.flow else chunks
            if end is not None:
                messages.append(end)
            return json_array(messages)
        return decode_bytes(chunks)

    async def check_resume(self, offset: int) -> None:
        """Raise `StreamCompactedError` (410) when ``offset`` lies inside a compacted
        range of a flow's stream (see `StreamManager.compact`)."""
        record = await self.manager.info(self.stream_id)
        if record.compacted is not None and offset <= record.length:
            await self.manager.check_resume(record, offset)

    async def read(self, offset: int) -> Page:
        """Catch-up: what is committed from ``offset`` on, up to ``max_read_bytes``."""
        record = await self.manager.info(self.stream_id)
        tail = self._tail(record)
        if record.compacted is not None:
            return await self._read_compacted(record, offset)
        chunks: list[bytes] = []
        size = 0
        position = offset
        while position < record.length and size < self.max_read_bytes:
            batch = await self.manager.storage.read(
                self.stream_id, position, min(self.manager.read_batch, record.length - position)
            )
            if not batch or any(parse_compacted(raw) is not None for raw in batch):
                # Short, or entries where chunks were: compacted under this read?
                # Then what it gathered is void: the compacted stream answers.
                latest = await self.manager.info(self.stream_id)
                if latest.compacted is not None:
                    return await self._read_compacted(latest, offset)
                if not batch:
                    break
            chunks += batch
            size += sum(map(len, batch))
            position += len(batch)
        end = None
        if self.flow and tail.closed and position == record.length and offset <= position:
            end = self._end_message(record.terminal)
            position += 1
        up_to_date = position >= tail.offset
        return Page(
            self._body(chunks, end),
            offset,
            position,
            up_to_date,
            tail.closed and up_to_date,
            not chunks and end is None,
        )

    async def _read_compacted(self, record: StreamRecord, offset: int) -> Page:
        """Catch-up on a compacted flow stream: its entries, each standing for the
        offsets up to the next one, then its end message."""
        tail = self._tail(record)
        chunks: list[bytes] = []
        end = None
        position = offset
        if offset <= record.length:
            size = 0
            async with aclosing(self.manager.subscribe_batches(self.stream_id, offset)) as batches:
                async for events in batches:
                    for event in events:
                        if isinstance(event, ChunkEvent):
                            if size >= self.max_read_bytes:
                                break
                            chunks.append(event.raw)
                            size += len(event.raw)
                            position = event.offset + event.span
                        elif not isinstance(event, ResetEvent):
                            end = _end_event(event)
                            position = record.length + 1
                    else:
                        continue
                    break
        up_to_date = position >= tail.offset
        return Page(
            self._body(chunks, end),
            offset,
            position,
            up_to_date,
            up_to_date,
            not chunks and end is None,
        )

    async def follow(self, offset: int) -> AsyncGenerator[Page, None]:
        """Pages from ``offset`` on as they are committed; the last one is closed.

        Ends without a closed page if the stream vanishes or the manager stops (the
        client should come back later from the last offset it saw).
        """
        tail = await self.tail()
        if offset >= tail.offset and tail.closed:
            yield Page(self._body([], None), offset, tail.offset, True, True, True)
            return
        position = offset
        async with aclosing(self.manager.subscribe_batches(self.stream_id, offset)) as batches:
            async for events in batches:
                chunk_events = [e for e in events if isinstance(e, ChunkEvent)]
                chunks = [e.raw for e in chunk_events]
                last = events[-1]
                start, position = position, position + len(chunks)
                if any(e.span != 1 for e in chunk_events):  # a compacted stream's entries
                    position = chunk_events[-1].offset + chunk_events[-1].span
                if isinstance(last, ChunkEvent):
                    # A batch shorter than a full read is everything committed when it
                    # was read: up to date then, without asking the storage again.
                    up_to_date = len(chunks) < self.manager.read_batch
                    body = self._body(chunks, None)
                    yield Page(body, start, position, up_to_date, False, not chunks)
                    continue
                if isinstance(last, ErrorEvent) and last.status in ("NOT_FOUND", "UNAVAILABLE"):
                    if last.message != "stream abandoned":
                        if chunks:
                            body = self._body(chunks, None)
                            yield Page(body, start, position, False, False, False)
                        return
                end = None
                if isinstance(last, ResetEvent):
                    continue  # only durable executions' streams hold resets
                if self.flow:
                    end = _end_event(last)
                    position += 1
                yield Page(self._body(chunks, end), start, position, True, True, False)
                return


def _end_event(event: ResultEvent | ErrorEvent) -> bytes:
    if isinstance(event, ResultEvent):
        return b'{"result":' + event.raw + b"}"
    return b'{"error":' + error_json(event.status, event.message, event.details) + b"}"
