"""Ending an agent run early when its stream's stop is requested."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from ..flow import StopRequest

__all__ = ["unless_stopped"]

T = TypeVar("T")


async def unless_stopped(
    stop: StopRequest, run: Callable[[], Awaitable[T]]
) -> tuple[T | None, bool]:
    """Await ``run()``, cancelled if ``stop`` is requested first.

    Returns its result and ``False``, or ``None`` and ``True`` once stopped (the run
    was cancelled: the caller returns its partial answer). An error of ``run()`` is
    raised as it is (not in an exception group); a cancellation from outside goes on
    as usual.
    """
    result: T | None = None
    error: Exception | None = None
    with anyio.CancelScope() as stopping:
        async with anyio.create_task_group() as watch:

            async def cancel_on_stop() -> None:
                await stop.wait()
                stopping.cancel()

            watch.start_soon(cancel_on_stop)
            try:
                result = await run()
            except Exception as exc:
                error = exc  # raised below, outside the task group
            finally:
                watch.cancel_scope.cancel()
    if error is not None:
        raise error
    return result, stopping.cancelled_caught
