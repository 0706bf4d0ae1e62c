"""The Durable Streams an app created: their names, settings and writer state.

A stream's chunks live in the `StreamManager` (under a fresh stream id); what the
protocol adds on top (its path, content type, TTL, producers, forks) lives here, in
the process that created it. That process is the stream's one writer, as the
manager's contract asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import anyio

from ..._errors import ResourceExhaustedError
from ...streams.manager import StreamManager
from ...streams.writer import StreamWriter
from .wire import (
    PRODUCER_EPOCH,
    PRODUCER_EXPECTED_SEQ,
    PRODUCER_RECEIVED_SEQ,
    ProtocolError,
    base_type,
)

__all__ = ["Catalog", "DsStream", "Producer", "Settings"]


@dataclass(frozen=True, slots=True)
class Settings:
    """What a PUT fixes for the life of a stream (compared on a repeated PUT)."""

    content_type: str
    ttl: int | None = None
    expires_at_text: str | None = None
    expires_at: float | None = None
    fork_of: str | None = None
    fork_offset: int | None = None
    fork_sub_offset: int = 0

    def matches(self, other: Settings) -> bool:
        """Same media type (case and parameters aside), TTL, expiry and fork origin."""
        return (
            base_type(self.content_type) == base_type(other.content_type)
            and self.ttl == other.ttl
            and self.expires_at == other.expires_at
            and self.fork_of == other.fork_of
            and (other.fork_offset is None or self.fork_offset == other.fork_offset)
            and self.fork_sub_offset == other.fork_sub_offset
        )


@dataclass(slots=True)
class Producer:
    """An idempotent producer's last accepted epoch and sequence on one stream."""

    epoch: int
    seq: int


@dataclass(eq=False)
class DsStream:
    """One stream created through the protocol."""

    path: str
    writer: StreamWriter
    settings: Settings
    owner: str | None
    last_access: float
    closed: bool = False
    #: The (producer id, epoch, seq) whose append closed the stream, if any.
    closed_by: tuple[str, int, int] | None = None
    producers: dict[str, Producer] = field(default_factory=dict)
    last_seq: str | None = None
    #: Appends that span several chunks: first offset -> offset past the last. (A
    #: fork's sub-offset counts within one append; most appends are one chunk.)
    appends: dict[int, int] = field(default_factory=dict)
    source: DsStream | None = None
    forks: int = 0
    soft_deleted: bool = False
    lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def stream_id(self) -> str:
        """The id of the stream's chunks in the `StreamManager`."""
        return self.writer.stream_id

    @property
    def length(self) -> int:
        """Chunks appended so far: the tail offset."""
        return self.writer.length

    async def append_chunks(self, manager: StreamManager, chunks: list[bytes]) -> None:
        """Append ``chunks`` as one append and commit them; all or none, since the
        limits are checked first (``413`` past them)."""
        start = self.length
        if start + len(chunks) > manager.max_stream_chunks:
            raise ProtocolError(413, "the stream is full")
        if any(len(c) > manager.max_chunk_bytes for c in chunks):
            raise ProtocolError(413, f"a message exceeds {manager.max_chunk_bytes} bytes")
        try:
            for chunk in chunks:
                await self.writer.write_raw(chunk)
            await self.writer.flush()
        except ResourceExhaustedError as exc:
            raise ProtocolError(413, exc.message) from None
        if len(chunks) > 1:
            self.appends[start] = start + len(chunks)

    def append_end(self, offset: int) -> int:
        """The offset past the append that starts at ``offset``."""
        return self.appends.get(offset, offset + 1)

    def expired(self, now: float) -> bool:
        """Past its absolute expiry, or idle for longer than its TTL."""
        if self.settings.expires_at is not None and now >= self.settings.expires_at:
            return True
        return self.settings.ttl is not None and now >= self.last_access + self.settings.ttl

    def check_producer(self, producer_id: str, epoch: int, seq: int) -> Literal["new", "dup"]:
        """Kafka-style idempotence: ``"new"`` to append, ``"dup"`` for a retry that
        already landed; a `ProtocolError` for a stale epoch (403) or a gap (409)."""
        state = self.producers.get(producer_id)
        if state is None or epoch > state.epoch:
            if seq != 0:
                if state is None:
                    raise _gap(0, seq)
                raise ProtocolError(400, "a new producer epoch must start at sequence 0")
            return "new"
        if epoch < state.epoch:
            raise ProtocolError(403, "stale producer epoch", {PRODUCER_EPOCH: str(state.epoch)})
        if seq <= state.seq:
            return "dup"
        if seq != state.seq + 1:
            raise _gap(state.seq + 1, seq)
        return "new"


def _gap(expected: int, received: int) -> ProtocolError:
    return ProtocolError(
        409,
        "producer sequence gap",
        {PRODUCER_EXPECTED_SEQ: str(expected), PRODUCER_RECEIVED_SEQ: str(received)},
    )


class Catalog:
    """Path -> stream, with expiry applied on every lookup."""

    def __init__(self) -> None:
        self._streams: dict[str, DsStream] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def peek(self, path: str) -> DsStream | None:
        """The stream at ``path``, expired or not."""
        return self._streams.get(path)

    def add(self, stream: DsStream) -> None:
        """Register a new stream (the path must be free)."""
        assert stream.path not in self._streams
        self._streams[stream.path] = stream
        if stream.source is not None:
            stream.source.forks += 1

    def expired(self, now: float) -> list[DsStream]:
        """Streams past their expiry that are still registered."""
        return [s for s in self._streams.values() if not s.soft_deleted and s.expired(now)]

    def remove(self, stream: DsStream) -> list[DsStream]:
        """Unregister ``stream``, or soft-delete it while forks still read from it.

        Returns every stream that is gone for good (the stream, then any
        soft-deleted sources its removal released), so their chunks can be ended.
        """
        if self._streams.get(stream.path) is not stream:
            return []  # removed already (say, by a request racing this one)
        if stream.forks > 0:
            stream.soft_deleted = True
            return []
        gone: list[DsStream] = []
        current: DsStream | None = stream
        while current is not None:
            if self._streams.get(current.path) is current:
                del self._streams[current.path]
            gone.append(current)
            source, current = current.source, None
            if source is not None:
                source.forks -= 1
                if source.soft_deleted and source.forks == 0:
                    current = source
        return gone
