"""One listener per stream: two event streams, and the batches they bring.

A stream changes in two places, so its listener holds two connections:

1. ``meta/<id>``: small; changes on create, each lease renewal, cancel and finish.
2. ``batches/<id>`` as a query, ``orderBy="$key"&startAt=<key of the current length>``:
   it carries only the batches written after the listener started, never the old ones.

The batches connection opens once the meta's first event has told the current length.
Every ``put``/``patch`` on either wakes the manager; the batches that arrive go into a
`BatchCache` first, so the manager's next `read` finds them without a request.

A dropped connection, a clean end or ``auth_revoked`` (after dropping the token) reopens
both connections at once, as long as the last ones had worked; a failure to open them
raises `UnavailableError`, and the manager restarts the watch with backoff. ``cancel``
(the rules no longer allow the read) raises `PermissionDeniedError`. Changes made while
disconnected are not lost: each new connection's first event wakes the manager, which
re-reads the stream.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from stream_gateway import PermissionDeniedError, UnavailableError

from ._client import RestClient
from ._layout import batch_key, decode_batch, is_entries

__all__ = ["BatchCache", "watch_stream"]

Wake = Callable[[], None]
_QUICK_ROUND = 1.0  # seconds; a round shorter than this pauses before the next


class BatchCache:
    """The most recent batches a listener received, bounded by chunk count."""

    def __init__(self, max_chunks: int = 4096) -> None:
        self.max_chunks = max_chunks
        self._batches: OrderedDict[int, list[bytes]] = OrderedDict()  # by first offset
        self._chunks = 0

    @property
    def end(self) -> int:
        """The offset just past the last batch held (0 when empty)."""
        return max((o + len(c) for o, c in self._batches.items()), default=0)

    def add(self, offset: int, chunks: list[bytes]) -> None:
        old = self._batches.pop(offset, None)
        self._chunks += len(chunks) - (len(old) if old else 0)
        self._batches[offset] = chunks
        while self._chunks > self.max_chunks and len(self._batches) > 1:
            oldest = min(self._batches)
            self._chunks -= len(self._batches.pop(oldest))

    def clear(self) -> None:
        """Drop every batch held (the stream was compacted)."""
        self._batches.clear()
        self._chunks = 0

    def read(self, offset: int, limit: int) -> list[bytes]:
        """Chunks from ``offset`` on from contiguous batches held; ``[]`` if not held."""
        found: list[bytes] = []
        for first in sorted(self._batches):
            chunks = self._batches[first]
            position = offset + len(found)
            if first <= position < first + len(chunks):
                found.extend(chunks[position - first : position - first + limit - len(found)])
                if len(found) >= limit:
                    break
            elif found:
                break  # a gap: stop at what is contiguous
        return found

    def add_event(self, path: str, data: Any) -> None:
        """Take the batches out of a put/patch event on the batches query."""
        keys = [part for part in path.split("/") if part]
        if not keys and isinstance(data, dict):
            entries = list(data.items())
        elif len(keys) == 1:
            entries = [(keys[0], data)]
        else:
            return  # a deeper change: nothing a whole batch can be made of
        for key, value in entries:
            if value is None and key.isdigit():  # deleted (by a compaction)
                self._chunks -= len(self._batches.pop(int(key), []))
            elif is_entries(value):
                self.clear()
            elif (batch := decode_batch(value)) is not None:
                self.add(*batch)


def _compacted(event: Any) -> bool:
    """Whether a meta event carries the ``compacted`` mark (put or patch, any path)."""
    if not isinstance(event, dict):
        return False
    path, data = str(event.get("path", "")), event.get("data")
    if path.rstrip("/").endswith("/compacted"):
        return data is not None
    return isinstance(data, dict) and data.get("compacted") is not None


def _length_in(meta: Any) -> int:
    length = meta.get("length") if isinstance(meta, dict) else None
    return length if isinstance(length, int) and length >= 0 else 0


class _Round:
    """One round of the two connections; ``healthy`` once both had their first event."""

    def __init__(
        self, client: RestClient, paths: tuple[str, str], cache: BatchCache, wake: Wake
    ) -> None:
        self.client = client
        self.meta_path, self.batches_path = paths
        self.cache = cache
        self.wake = wake
        self.opened = 0
        self.revoked = False
        self._start = 0
        self._errors: list[Exception] = []

    @property
    def healthy(self) -> bool:
        return self.opened >= 2

    async def run(self) -> None:
        """Follow both connections until one ends; raise what made it end, if anything."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._guarded, self._follow_meta, tg)
        if self._errors:
            raise self._errors[0]

    async def _guarded(self, follow: Callable[[TaskGroup], Awaitable[None]], tg: TaskGroup) -> None:
        try:
            await follow(tg)
        except Exception as exc:  # reported by run(), outside the task group
            self._errors.append(exc)
        tg.cancel_scope.cancel()  # one connection ended: the round is over

    async def _follow_meta(self, tg: TaskGroup) -> None:
        async with self.client.listen(self.meta_path) as events:
            async for name, data in events:
                if not self._carry_on(name):
                    return
                if name == "put" and self.opened == 0:
                    self.opened += 1
                    meta = data.get("data") if isinstance(data, dict) else None
                    self._start = max(_length_in(meta), self.cache.end)
                    tg.start_soon(self._guarded, self._follow_batches, tg)
                if name in ("put", "patch"):
                    if _compacted(data):
                        self.cache.clear()  # the batches held are being deleted
                    self.wake()

    async def _follow_batches(self, _tg: TaskGroup) -> None:
        params = {"orderBy": "$key", "startAt": batch_key(self._start)}
        async with self.client.listen(self.batches_path, **params) as events:
            first = True
            async for name, data in events:
                if not self._carry_on(name):
                    return
                if name in ("put", "patch") and isinstance(data, dict):
                    if first:
                        first = False
                        self.opened += 1
                    self.cache.add_event(str(data.get("path", "")), data.get("data"))
                    self.wake()

    def _carry_on(self, name: str) -> bool:
        if name == "cancel":
            raise PermissionDeniedError("Realtime Database cancelled the listener: access denied")
        if name == "auth_revoked":
            self.revoked = True
            return False
        return True


async def watch_stream(
    client: RestClient, meta_path: str, batches_path: str, cache: BatchCache
) -> AsyncIterator[None]:
    """Yield whenever the stream may have changed (see the module docstring)."""
    send, receive = anyio.create_memory_object_stream[None](1)
    failure: list[Exception] = []

    async def follow(wake_stream: MemoryObjectSendStream[None], scope: anyio.CancelScope) -> None:
        def wake() -> None:
            try:
                wake_stream.send_nowait(None)
            except anyio.WouldBlock:
                pass  # a wake-up is pending already; they coalesce

        try:
            with wake_stream:
                while True:
                    round_ = _Round(client, (meta_path, batches_path), cache, wake)
                    token = await client.tokens.token()
                    started = anyio.current_time()
                    try:
                        await round_.run()
                    except UnavailableError:
                        if not round_.healthy:
                            raise
                    if round_.revoked:
                        client.tokens.invalidate(token)
                    elif not round_.healthy:
                        raise UnavailableError("Realtime Database listener ended at once")
                    if anyio.current_time() - started < _QUICK_ROUND:
                        await anyio.sleep(_QUICK_ROUND / 5)  # no busy loop on a flapping server
        except Exception as exc:
            failure.append(exc)
            scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow, send, tg.cancel_scope)
        async with receive:
            async for _ in receive:
                yield
    if failure:
        raise failure[0]
