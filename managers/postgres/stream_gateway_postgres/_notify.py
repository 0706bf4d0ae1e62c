"""One LISTEN connection per storage, shared by every stream this process watches.

asyncpg reads a connection's socket whenever data arrives, so notifications reach
`_dispatch` while the connection is idle, and channels can be added and dropped on
the same connection at any time (one statement at a time, under a lock). A channel is
LISTENed while at least one watch wants it; channels nobody wants any more are
UNLISTENed by the next watch that starts (never from a generator's cleanup, which may
run outside any task).

When the connection is lost every watch wakes, reconnects (the first one does, the
others find it done), LISTENs again and yields: notifications sent meanwhile are lost,
so the manager re-reads each stream. A reconnect that fails raises `UnavailableError`
and the manager restarts the watch with backoff.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import asyncpg

from stream_gateway import UnavailableError

from ._errors import translated

__all__ = ["Notifier"]

logger = logging.getLogger("stream_gateway_postgres")


class _Waiter:
    """One watch's wake-up flag."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = anyio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class Notifier:
    """Relays NOTIFYs on per-stream channels to the watches of this process."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]]) -> None:
        self._connect = connect
        self._conn: asyncpg.Connection | None = None
        self._lock = anyio.Lock()
        self._waiters: dict[str, set[_Waiter]] = {}
        self._listening: set[str] = set()  # channels LISTENed on `_conn`
        self._closed = False
        self.connections = 0  # how many LISTEN connections were opened (for tests)

    @property
    def channels(self) -> frozenset[str]:
        """The channels watched now."""
        return frozenset(self._waiters)

    async def watch(self, channel: str) -> AsyncIterator[None]:
        """Yield once ``channel`` is listened to, then after each notification on it
        (and after each reconnect)."""
        waiter = _Waiter()
        self._waiters.setdefault(channel, set()).add(waiter)
        try:
            while True:
                # Cleared before LISTEN: a notification that comes in between wakes
                # the next wait at once (spurious wake-ups are fine, losses are not).
                waiter.clear()
                await self._listen(channel)
                yield
                await waiter.wait()
        finally:
            waiters = self._waiters.get(channel)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[channel]

    async def _listen(self, channel: str) -> None:
        async with self._lock:
            if self._closed:
                raise UnavailableError("the PostgreSQL stream storage is closed")
            conn = self._conn
            if conn is None or conn.is_closed():
                self._listening.clear()
                with translated("opening the LISTEN connection"):
                    conn = await self._connect()
                self.connections += 1
                conn.add_termination_listener(self._lost)
                self._conn = conn
            with translated("listening for changes"):
                for stale in self._listening - self._waiters.keys():
                    await conn.remove_listener(stale, self._dispatch)
                    self._listening.discard(stale)
                if channel not in self._listening:
                    await conn.add_listener(channel, self._dispatch)
                    self._listening.add(channel)

    def _dispatch(
        self, conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, pid: int, channel: str,
        payload: object,
    ) -> None:  # fmt: skip
        for waiter in self._waiters.get(channel, ()):
            waiter.set()

    def _lost(self, conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> None:
        if conn is self._conn:
            self._conn = None
            if not self._closed:
                logger.warning("the LISTEN connection was lost; reconnecting")
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.set()

    async def close(self) -> None:
        """Close the connection, even in a cancelled task; later watches raise
        `UnavailableError`."""
        self._closed = True
        with anyio.CancelScope(shield=True):
            # After a connect in flight, if any (bounded by its own timeout).
            async with self._lock:
                conn, self._conn = self._conn, None
            if conn is None or conn.is_closed():
                return
            with anyio.move_on_after(5):
                try:
                    await conn.close()
                except Exception as exc:  # closing a broken connection
                    logger.debug("closing the LISTEN connection: %r", exc)
            if not conn.is_closed():
                conn.terminate()
