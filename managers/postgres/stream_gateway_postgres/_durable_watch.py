"""`watch`: wake a worker when work may be due, from LISTEN and from the next due time.

A NOTIFY carries the time something becomes due (``repr`` of POSIX seconds): due
already, the worker is woken at once; due later (a timer), the watch wakes it then.
Besides, the watch reads the earliest future ``due_at`` and schedule tick from the
tables (after LISTEN, and each time that moment comes), so timers set before it
started and leases that lapse (a worker died) wake a worker without a poll either.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import asyncpg

from stream_gateway.durable import DurableStoreError

from ._durable_conn import store_errors

__all__ = ["watch"]


class _Watch:
    """What the LISTEN connection's callbacks tell the loop (run on the event loop)."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.due_now = False
        self.soonest: float | None = None
        self.gone = False

    def notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        try:
            at = float(str(payload))
        except ValueError:
            at = 0.0
        if at <= time.time():
            self.due_now = True
        elif self.soonest is None or at < self.soonest:
            self.soonest = at
        self.event.set()

    def lost(self, conn: object) -> None:
        self.gone = True
        self.event.set()


async def watch(
    connect: Callable[[], Awaitable[asyncpg.Connection]],
    channel: str,
    next_due_sql: str,
    wake: Callable[[], None],
) -> None:
    """Call ``wake`` whenever work may be due, until cancelled; `DurableStoreError`
    once the connection is lost. ``next_due_sql`` returns the earliest due time after
    ``$1`` (now), or NULL."""
    state = _Watch()
    with store_errors("listening for due flows"):
        conn = await connect()
    try:

        async def next_due() -> float | None:
            with store_errors("reading the next due time"):
                when: float | None = await conn.fetchval(next_due_sql, time.time())
            return when

        conn.add_termination_listener(state.lost)
        with store_errors("listening for due flows"):
            await conn.add_listener(channel, state.notified)
        wake()  # what became due before the LISTEN
        next_at = await next_due()
        while True:
            delay = None if next_at is None else max(0.0, next_at - time.time())
            with anyio.move_on_after(delay):
                await state.event.wait()
            # No await from here to the next wait: callbacks cannot interleave.
            state.event = anyio.Event()
            if state.gone:
                raise DurableStoreError("the LISTEN connection was lost")
            fire, state.due_now = state.due_now, False
            if state.soonest is not None:
                next_at = state.soonest if next_at is None else min(next_at, state.soonest)
                state.soonest = None
            timer = next_at is not None and next_at <= time.time()
            if fire or timer:
                wake()
            if timer:
                next_at = await next_due()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await conn.close()
            except Exception:  # a connection the server dropped
                conn.terminate()
