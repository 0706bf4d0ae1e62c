"""In-memory streams: for tests and single-process apps."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .._errors import ResourceExhaustedError, StreamClosedError, StreamExistsError
from .base import StreamFilter, StreamPage, StreamRecord, StreamStorage, Terminal
from .manager import StreamManager

__all__ = ["InMemoryStreamManager", "InMemoryStreamStorage"]


class _Entry:
    __slots__ = ("chunks", "nbytes", "record")

    def __init__(self, record: StreamRecord) -> None:
        self.record = record
        self.chunks: list[bytes] = []
        self.nbytes = 0


class InMemoryStreamStorage(StreamStorage):
    """Streams in a dict, bounded by count and bytes.

    When a bound would be exceeded, the oldest *finished* streams are evicted first;
    if only open streams remain, the write raises `ResourceExhaustedError`.
    Nothing survives the process.
    """

    flush_interval = 0.0
    shared = False

    def __init__(self, *, max_streams: int = 10_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_streams = max_streams
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # oldest first
        self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes of chunk data held."""
        return self._nbytes

    async def create(self, record: StreamRecord) -> None:
        if record.stream_id in self._entries:
            raise StreamExistsError(f"stream {record.stream_id} exists")
        self._make_room(streams=1, nbytes=0)
        self._entries[record.stream_id] = _Entry(replace(record))

    async def append(self, stream_id: str, offset: int, chunks: Sequence[bytes]) -> None:
        entry = self._entries[stream_id]
        if entry.record.status != "open":
            raise StreamClosedError(f"stream {stream_id} is finished")
        if offset > len(entry.chunks):
            raise AssertionError(f"append at {offset} leaves a gap after {len(entry.chunks)}")
        replaced = sum(map(len, entry.chunks[offset:]))  # a retried batch
        size = sum(map(len, chunks)) - replaced
        self._make_room(streams=0, nbytes=size, keep=stream_id)
        entry.chunks[offset:] = chunks
        entry.nbytes += size
        self._nbytes += size
        entry.record.length = len(entry.chunks)

    async def finish(
        self, stream_id: str, length: int, terminal: Terminal, *, now: float, expires_at: float
    ) -> None:
        record = self._entries[stream_id].record
        if record.status != "open":
            return  # its end was recorded already (abandoned): the first end stands
        record.status = terminal.kind
        record.terminal = terminal
        record.length = length
        record.expires_at = expires_at
        record.updated_at = now
        record.lease_until = None

    async def abandon(
        self, stream_id: str, terminal: Terminal, *, now: float, expires_at: float
    ) -> bool:
        entry = self._entries.get(stream_id)
        if entry is None:
            return False
        record = entry.record
        if record.status != "open" or record.lease_until is None or record.lease_until >= now:
            return False
        await self.finish(stream_id, len(entry.chunks), terminal, now=now, expires_at=expires_at)
        return True

    async def compact(self, stream_id: str, length: int, entries: Sequence[bytes]) -> bool:
        entry = self._entries.get(stream_id)
        if entry is None:
            return False
        record = entry.record
        if record.status == "open" or record.length != length or record.compacted is not None:
            return False
        if not 1 <= len(entries) <= length:
            raise ValueError("a compacted stream holds between 1 and `length` entries")
        size = sum(map(len, entries))
        self._nbytes += size - entry.nbytes
        entry.nbytes = size
        entry.chunks = list(entries)
        record.compacted = len(entries)
        return True

    async def load(self, stream_id: str) -> StreamRecord | None:
        entry = self._entries.get(stream_id)
        return None if entry is None else replace(entry.record)

    async def read(self, stream_id: str, offset: int, limit: int) -> list[bytes]:
        entry = self._entries.get(stream_id)
        return [] if entry is None else entry.chunks[offset : offset + limit]

    async def renew(
        self, stream_ids: Sequence[str], lease_until: float, expires_at: float
    ) -> set[str]:
        cancelled = set()
        for sid in stream_ids:
            entry = self._entries.get(sid)
            if entry is None or entry.record.status != "open":
                cancelled.add(sid)  # finished elsewhere (or gone): its writer stops
                continue
            entry.record.lease_until = lease_until
            entry.record.expires_at = expires_at
            if entry.record.cancel_requested or entry.record.stop_requested:
                cancelled.add(sid)
        return cancelled

    async def request_cancel(self, stream_id: str) -> bool:
        entry = self._entries.get(stream_id)
        if entry is None or entry.record.status != "open":
            return False
        entry.record.cancel_requested = True
        return True

    async def request_stop(self, stream_id: str) -> bool:
        entry = self._entries.get(stream_id)
        if entry is None or entry.record.status != "open":
            return False
        entry.record.stop_requested = True
        return True

    async def list_streams(self, selection: StreamFilter) -> StreamPage:
        """A scan of every stream held (bounded by ``max_streams``), sorted."""
        found = [replace(e.record) for e in self._entries.values()]
        found.sort(key=lambda r: (r.created_at, r.stream_id), reverse=True)
        return selection.page(found, more=False)

    async def purge(self, now: float) -> int:
        expired = [sid for sid, e in self._entries.items() if e.record.expires_at <= now]
        for sid in expired:
            self._drop(sid)
        return len(expired)

    def _drop(self, stream_id: str) -> None:
        entry = self._entries.pop(stream_id)
        self._nbytes -= entry.nbytes

    def _make_room(self, *, streams: int, nbytes: int, keep: str | None = None) -> None:
        def over() -> bool:
            return (
                len(self._entries) + streams > self.max_streams
                or self._nbytes + nbytes > self.max_bytes
            )

        if not over():
            return
        for sid in [s for s, e in self._entries.items() if e.record.status != "open"]:
            if sid != keep:
                self._drop(sid)
                if not over():
                    return
        raise ResourceExhaustedError(
            "in-memory stream store is full of open streams",
            details={"max_streams": self.max_streams, "max_bytes": self.max_bytes},
        )


class InMemoryStreamManager(StreamManager):
    """A `StreamManager` on `InMemoryStreamStorage`; for tests and single-process apps."""

    def __init__(
        self, *, max_streams: int = 10_000, max_bytes: int = 256 * 1024 * 1024, **options: Any
    ) -> None:
        """Bounds as in `InMemoryStreamStorage`; other options as in `StreamManager`."""
        super().__init__(
            InMemoryStreamStorage(max_streams=max_streams, max_bytes=max_bytes), **options
        )
