"""Fault injection: a wrapper that makes a real storage fail on demand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import anyio

from stream_gateway import UnavailableError
from stream_gateway.streams import StreamRecord, StreamStorage, Terminal


class FlakyStorage(StreamStorage):
    """A storage whose every call fails while ``down`` is set; counts the appends."""

    shared = True

    def __init__(self, inner: StreamStorage) -> None:
        self.inner = inner
        self.flush_interval = inner.flush_interval
        self.down = False
        self.renewals_down = False  # only lease renewals fail
        self.appends_while_down = 0
        self.appending = 0
        self.most_appending = 0  # appends in flight at once, ever

    def _check(self) -> None:
        if self.down:
            raise UnavailableError("backend down (test)")

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def create(self, record: StreamRecord) -> None:
        self._check()
        await self.inner.create(record)

    async def append(self, stream_id: str, offset: int, chunks: Sequence[bytes]) -> None:
        self.appending += 1
        self.most_appending = max(self.most_appending, self.appending)
        try:
            if self.down:
                self.appends_while_down += 1
            await anyio.sleep(0.002)  # a round trip, so overlapping appends would show
            self._check()
            await self.inner.append(stream_id, offset, chunks)
        finally:
            self.appending -= 1

    async def finish(
        self, stream_id: str, length: int, terminal: Terminal, *, now: float, expires_at: float
    ) -> None:
        self._check()
        await self.inner.finish(stream_id, length, terminal, now=now, expires_at=expires_at)

    async def abandon(
        self, stream_id: str, terminal: Terminal, *, now: float, expires_at: float
    ) -> bool:
        self._check()
        return await self.inner.abandon(stream_id, terminal, now=now, expires_at=expires_at)

    async def load(self, stream_id: str) -> StreamRecord | None:
        self._check()
        return await self.inner.load(stream_id)

    async def read(self, stream_id: str, offset: int, limit: int) -> list[bytes]:
        self._check()
        return await self.inner.read(stream_id, offset, limit)

    async def renew(
        self, stream_ids: Sequence[str], lease_until: float, expires_at: float
    ) -> set[str]:
        self._check()
        if self.renewals_down:
            raise UnavailableError("renewals failing (test)")
        return await self.inner.renew(stream_ids, lease_until, expires_at)

    async def request_cancel(self, stream_id: str) -> bool:
        self._check()
        return await self.inner.request_cancel(stream_id)

    async def purge(self, now: float) -> int:
        self._check()
        return await self.inner.purge(now)

    def watch(self, stream_id: str) -> AsyncIterator[None]:
        return self.inner.watch(stream_id)
