"""The change poller behind `SqliteStreamStorage.watch`: one per storage, however many
streams are watched.

SQLite has no cross-process notification, but ``PRAGMA data_version`` on a connection
changes whenever *another* connection (of any process) commits. The poller is a daemon
thread, started with the first watcher and stopped with the last, that reads it on its
own connection every ``interval``. Only when it changed does the poller read the state
of every watched stream (one query per 500 of them) and wake the watchers whose stream
changed. An idle database costs one pragma per tick, whatever the number of watchers.

Why no change is missed: a watcher yields once as soon as it is registered (covering
anything committed before), and afterwards compares each state read after a version
change with the last state it was woken for. A stream's state (length, status,
existence) only moves forward, so any commit since that read shows as a difference.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Collection, Hashable, Mapping

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.lowlevel import EventLoopToken

__all__ = ["ChangePoller"]

logger = logging.getLogger("stream_gateway.streams")

#: Reads the current state of the given streams: a mapping with a value for every id
#: given (anything comparable; ``None`` for a stream that is gone).
ReadStates = Callable[[sqlite3.Connection, Collection[str]], Mapping[str, Hashable]]

_UNSEEN = object()


class _Watcher:
    __slots__ = ("error", "event", "state", "stream_id")

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.state: object = _UNSEEN  # the state last woken for
        self.error: Exception | None = None
        self.event = anyio.Event()

    async def wait(self) -> None:
        await self.event.wait()
        self.event = anyio.Event()
        if self.error is not None:
            error, self.error = self.error, None
            raise error


class ChangePoller:
    """Wakes the watchers of streams that another connection changed.

    ``connect`` opens the poller's own connection (in the poller thread);
    ``read_states`` reads the watched streams' states; ``translate`` turns a
    `sqlite3.Error` into the exception watchers raise (the manager restarts them).
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        read_states: ReadStates,
        translate: Callable[[sqlite3.Error], Exception],
        interval: float,
    ) -> None:
        self._connect = connect
        self._read_states = read_states
        self._translate = translate
        self._interval = interval
        self._watchers: set[_Watcher] = set()
        # Mutations happen on the event loop; the lock guards the poll thread's snapshot.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def running(self) -> bool:
        """True while a poll thread is (meant to be) running."""
        return bool(self._threads) and not self._stop.is_set()

    async def watch(self, stream_id: str) -> AsyncIterator[None]:
        """Yield at once, then whenever ``stream_id`` may have changed."""
        watcher = _Watcher(stream_id)
        self._add(watcher)
        try:
            while True:
                yield
                await watcher.wait()
        finally:
            self._remove(watcher)

    async def close(self) -> None:
        """Stop polling and wait for the poll threads to end."""
        self._stop.set()
        threads, self._threads = self._threads, []
        for thread in threads:
            # Joined off the loop: the thread may be handing a result to the loop.
            await anyio.to_thread.run_sync(thread.join)

    def _add(self, watcher: _Watcher) -> None:
        with self._lock:
            self._watchers.add(watcher)
        if not self.running:
            self._stop = threading.Event()
            self._threads = [t for t in self._threads if t.is_alive()]
            thread = threading.Thread(
                target=self._poll,
                args=(anyio.lowlevel.current_token(), self._stop),
                name="stream-gateway-sqlite-poller",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def _remove(self, watcher: _Watcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)
            idle = not self._watchers
        if idle:
            self._stop.set()  # the thread ends at its next tick

    def _poll(self, token: EventLoopToken, stop: threading.Event) -> None:
        """The poll thread: runs until ``stop`` is set or the event loop is gone."""
        conn: sqlite3.Connection | None = None
        seen_version: int | None = None
        try:
            while not stop.wait(self._interval):
                states: Mapping[str, Hashable] = {}
                error: sqlite3.Error | None = None
                try:
                    if conn is None:
                        conn = self._connect()
                    (version,) = conn.execute("PRAGMA data_version").fetchone()
                    if version == seen_version:
                        continue
                    with self._lock:
                        ids = {w.stream_id for w in self._watchers}
                    states = self._read_states(conn, ids)
                    seen_version = version
                except sqlite3.Error as exc:
                    error = exc
                    seen_version = None  # read everything again once it works
                if stop.is_set():
                    return
                anyio.from_thread.run_sync(self._deliver, states, error, token=token)
        except Exception:  # the event loop closed under us: nobody is left to wake
            logger.debug("sqlite change poller stopped", exc_info=True)
        finally:
            if conn is not None:
                conn.close()

    def _deliver(self, states: Mapping[str, Hashable], error: sqlite3.Error | None) -> None:
        """On the event loop: wake the watchers whose stream changed (all, on error)."""
        for watcher in self._watchers:
            if error is not None:
                watcher.error = self._translate(error)
                watcher.state = _UNSEEN
                watcher.event.set()
            elif watcher.stream_id in states:
                state = states[watcher.stream_id]
                if state != watcher.state:
                    watcher.state = state
                    watcher.event.set()
