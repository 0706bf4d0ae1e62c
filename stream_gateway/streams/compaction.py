"""Compaction of finished streams: their chunks coalesced into far fewer stored entries.

A finished stream of logical length ``L`` is compacted by `StreamManager.compact`: its
live view (resets applied) is folded by a *coalescer* that joins consecutive chunks
(text deltas become one text), and the storage replaces the stored chunks with the
resulting entries (`StreamStorage.compact`). Each entry remembers the logical offset
of the first chunk it joined (`compacted_entry`), so a reader replaying from 0 gets
the entries at those offsets, then the terminal event: the same logical content and
result, in fewer, larger chunks. A reader that asks for an offset strictly inside an
entry gets `StreamCompactedError` (HTTP 410): it must replay from offset 0.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from .._errors import StreamCompactedError
from .._json import dumps, loads
from .base import (
    ChunkEvent,
    ErrorEvent,
    StreamEvent,
    StreamRecord,
    compacted_entry,
    parse_compacted,
    parse_reset,
)

if TYPE_CHECKING:
    from .manager import StreamManager

logger = logging.getLogger("stream_gateway.streams")

__all__ = ["Coalesce", "CompactionReport", "join_deltas", "plan_entries"]

#: Joins two consecutive chunks (decoded JSON) into one, or returns ``None`` when they
#: must stay apart. It must be associative in practice: ``join(join(a, b), c)`` is what
#: a reader gets for ``a, b, c``.
Coalesce = Callable[[Any, Any], Any | None]

#: The string fields a delta object may carry its text in (AI-SDK UI-message parts use
#: ``delta``; many chat chunks use ``text`` or ``content``).
_TEXT_FIELDS = ("delta", "text", "content")


def join_deltas(first: Any, second: Any) -> Any | None:
    """The default coalescer: joins two JSON strings, and two objects that are equal
    except for one string field among ``delta``, ``text`` and ``content`` (that field
    concatenated). Anything else stays apart.

    This covers plain text chunks, ``{"text": ...}``-style chat chunks and the AI-SDK
    UI-message parts the adapters emit (``text-delta`` / ``reasoning-delta`` with the
    same ``id``).
    """
    if isinstance(first, str) and isinstance(second, str):
        return first + second
    if not (isinstance(first, dict) and isinstance(second, dict)):
        return None
    if first.keys() != second.keys():
        return None
    for name in _TEXT_FIELDS:
        a, b = first.get(name), second.get(name)
        if isinstance(a, str) and isinstance(b, str):
            if all(first[k] == second[k] for k in first if k != name):
                return {**first, name: a + b}
            return None
    return None


@dataclass(frozen=True, slots=True)
class CompactionReport:
    """What `StreamManager.compact` did to one stream.

    ``compacted`` is False when it changed nothing; ``reason`` then says why (already
    compacted, would not shrink, nothing left to keep). ``chunks_before`` and
    ``bytes_before`` count what was stored (chunks and control entries);
    ``entries_after`` and ``bytes_after`` what is stored now (equal to the "before"
    figures when nothing changed; ``None`` when not measured, as for a stream
    compacted already, whose entries count is in both).
    """

    stream_id: str
    compacted: bool
    length: int
    chunks_before: int | None
    entries_after: int | None
    bytes_before: int | None
    bytes_after: int | None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The report as JSON (the CLI's ``--json``)."""
        return {
            "streamId": self.stream_id,
            "compacted": self.compacted,
            "length": self.length,
            "chunksBefore": self.chunks_before,
            "entriesAfter": self.entries_after,
            "bytesBefore": self.bytes_before,
            "bytesAfter": self.bytes_after,
            "reason": self.reason,
        }


def live_view(stored: Sequence[bytes]) -> list[tuple[int, bytes]]:
    """``(offset, chunk)`` of the stored chunks no reset retracted; resets left out."""
    voids: list[tuple[int, int]] = []
    for at, raw in enumerate(stored):
        void_from = parse_reset(raw)
        if void_from is not None:
            voids.append((void_from, at))
    if not voids:
        return list(enumerate(stored))
    return [
        (at, raw)
        for at, raw in enumerate(stored)
        if parse_reset(raw) is None and not any(v <= at < end for v, end in voids)
    ]


def plan_entries(stored: Sequence[bytes], coalesce: Coalesce) -> list[bytes]:
    """The entries a stream's stored chunks compact to: the live view, consecutive
    chunks joined by ``coalesce``, each entry at the offset of its first chunk.

    A chunk joined with nothing keeps its exact bytes; a joined one is re-encoded.
    """
    entries: list[bytes] = []
    start = -1
    raw = b""
    value: Any = None
    joined = False

    def close() -> None:
        entries.append(compacted_entry(start, dumps(value) if joined else raw))

    for at, chunk in live_view(stored):
        decoded = loads(chunk)
        if start >= 0:
            merged = coalesce(value, decoded)
            if merged is not None:
                value, joined = merged, True
                continue
            close()
        start, raw, value, joined = at, chunk, decoded, False
    if start >= 0:
        close()
    return entries


async def read_compacted(
    manager: StreamManager, record: StreamRecord, from_offset: int
) -> AsyncGenerator[list[StreamEvent], None]:
    """The events of a compacted stream from ``from_offset``: its entries (each a
    `ChunkEvent` at its logical start, with the span up to the next one), then the
    terminal event.

    ``from_offset`` may be 0, the stream's length, or an entry's start; anything else
    raises `StreamCompactedError`, as does an offset past every entry's start.
    """
    from .manager import terminal_event  # the manager imports this module

    stream_id, length = record.stream_id, record.length
    assert record.compacted is not None and record.terminal is not None
    if from_offset >= length:
        yield [terminal_event(record.terminal)]
        return
    started = from_offset == 0
    pending: tuple[int, bytes] | None = None
    physical = 0
    missing = 0
    while physical < record.compacted:
        limit = min(manager.read_batch, record.compacted - physical)
        stored = await manager._retrying(
            functools.partial(manager.storage.read, stream_id, physical, limit)
        )
        if not stored:
            latest = await manager._retrying(lambda: manager.storage.load(stream_id))
            if latest is None or latest.expires_at <= manager.clock():
                yield [ErrorEvent("NOT_FOUND", "stream not found")]
                return
            missing += 1
            if missing > 4:
                logger.error(
                    "compacted stream %s: entries from %d are missing", stream_id, physical
                )
                yield [ErrorEvent("INTERNAL", "stream data is missing")]
                return
            await anyio.sleep(0.05 * missing)
            continue
        missing = 0
        events: list[StreamEvent] = []
        for raw in stored:
            parsed = parse_compacted(raw)
            if parsed is None:
                logger.error("compacted stream %s: entry %d is not an entry", stream_id, physical)
                yield [ErrorEvent("INTERNAL", "stream data is missing")]
                return
            start, chunk = parsed
            if pending is not None:
                events.append(ChunkEvent(pending[0], pending[1], start - pending[0]))
                pending = None
            if not started:
                if start > from_offset:
                    raise StreamCompactedError.at(stream_id, from_offset)
                if start < from_offset:
                    continue
                started = True
            pending = (start, chunk)
        physical += len(stored)
        if events:
            yield events
    if pending is None:
        raise StreamCompactedError.at(stream_id, from_offset)
    last = ChunkEvent(pending[0], pending[1], length - pending[0])
    yield [last, terminal_event(record.terminal)]


async def entry_starts(manager: StreamManager, record: StreamRecord) -> list[int]:
    """The logical starts of a compacted stream's entries, in order."""
    assert record.compacted is not None
    starts: list[int] = []
    while len(starts) < record.compacted:
        limit = min(manager.read_batch, record.compacted - len(starts))
        stored = await manager._retrying(
            functools.partial(manager.storage.read, record.stream_id, len(starts), limit)
        )
        if not stored:
            break  # purged meanwhile: the caller's reader finds out
        for raw in stored:
            parsed = parse_compacted(raw)
            if parsed is None:
                break
            starts.append(parsed[0])
        else:
            continue
        break
    return starts
