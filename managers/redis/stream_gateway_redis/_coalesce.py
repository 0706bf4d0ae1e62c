"""`Coalescer`: one backend call serves every caller that asked while it was pending.

When a stream is followed by hundreds of subscribers in one process, they all wake on
the same change and all ask for the stream's record at once. Rather than hundreds of
identical round trips (and as many pooled connections), callers share one call per
*round*. Each caller gets the result of a call that was sent after it arrived, never an
older one, so sharing never hands out an answer older than one of its own would be.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar, cast

import anyio

__all__ = ["Coalescer"]

T = TypeVar("T")


class _Round(Generic[T]):
    """One call and the callers that share it; ``ok`` once it returned."""

    def __init__(self) -> None:
        self.started = False
        self.ok = False
        self.done = anyio.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class Coalescer(Generic[T]):
    """Per key, at most one call in flight and one round gathering callers behind it."""

    def __init__(self) -> None:
        self._gathering: dict[str, _Round[T]] = {}
        self._running: dict[str, _Round[T]] = {}

    async def run(self, key: str, call: Callable[[], Awaitable[T]]) -> T:
        while True:
            gathering = self._gathering.get(key)
            if gathering is None:
                return await self._lead(key, call)
            await gathering.done.wait()  # a round that is sent after we arrived
            if gathering.ok:
                return cast(T, gathering.result)
            if gathering.error is not None:
                raise gathering.error
            # Its leader was cancelled before it got an answer: ask again ourselves.

    async def _lead(self, key: str, call: Callable[[], Awaitable[T]]) -> T:
        mine: _Round[T] = _Round()
        self._gathering[key] = mine
        try:
            running = self._running.get(key)
            if running is not None:  # one call at a time; later callers join `mine`
                await running.done.wait()
            del self._gathering[key]  # from now on, newcomers gather for the next round
            mine.started = True
            self._running[key] = mine
            try:
                mine.result = await call()
                mine.ok = True
                return mine.result
            except Exception as exc:
                mine.error = exc
                raise
        finally:
            if self._gathering.get(key) is mine:
                del self._gathering[key]
            if self._running.get(key) is mine:
                del self._running[key]
            mine.done.set()
