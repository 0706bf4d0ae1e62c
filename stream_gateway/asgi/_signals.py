"""Start a gateway's drain on the server's shutdown signal.

uvicorn (and gunicorn's uvicorn workers) run the ASGI lifespan shutdown only after
every open connection has closed, and a streaming response stays open until its
flow ends. Waiting for the lifespan would start the drain last; the signal is the
first thing the process learns, so the gateway listens for it too.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["on_shutdown_signal"]

logger = logging.getLogger("stream_gateway.runner")

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def on_shutdown_signal(callback: Callable[[], None]) -> Iterator[bool]:
    """While inside, SIGINT and SIGTERM also schedule ``callback`` on this event loop.

    The handler installed before (the server's, which starts its graceful shutdown)
    still runs, after ours has scheduled the callback. Nothing is installed where a
    signal has no Python handler (its default action ends the process at once
    anyway), off the main thread, or outside an asyncio loop; the context then
    yields False. On exit our handler is removed if it is still the current one.
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # another async library: no signal hook, lifespan drain only
        yield False
        return
    installed: dict[signal.Signals, tuple[Any, Any]] = {}
    calls: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    def call_in_task() -> None:
        # Inside a task of its own: the callback starts AnyIO tasks, and AnyIO (4.16
        # on) finds the running backend only from inside a task, not a loop callback.
        async def call() -> None:
            callback()

        task = loop.create_task(call())
        calls.add(task)
        task.add_done_callback(calls.discard)

    for sig in SHUTDOWN_SIGNALS:
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            try:
                loop.call_soon_threadsafe(call_in_task)  # safe from a signal handler
            except RuntimeError:
                pass  # the loop is closed: nothing left to drain
            previous(signum, frame)

        signal.signal(sig, handler)
        installed[sig] = (handler, previous)
    try:
        yield bool(installed)
    finally:
        for sig, (handler, previous) in installed.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous)
