"""Running asyncio-only frameworks under AnyIO cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import anyio

__all__ = ["in_own_task"]

T = TypeVar("T")

# How long a cancelled framework run may take to clean up before the flow lets go.
_CLEANUP_GRACE = 10.0


async def in_own_task(run: Coroutine[Any, Any, T]) -> T:
    """Await ``run`` in an asyncio task of its own, which a cancellation cancels once.

    AnyIO cancels level-triggered: every await in a cancelled scope is cancelled
    again. Frameworks written for asyncio clean up after their first
    `asyncio.CancelledError` by awaiting their own tasks (LangGraph's running nodes,
    the Agents SDK's streaming task); under a cancelled AnyIO scope those awaits are cut
    short and the tasks (a tool call, a model request) run on, unowned. Here the
    framework sees one cancellation, as under plain asyncio, and the caller waits up
    to ten seconds for its cleanup, shielded, before the cancellation goes on.
    """
    task = asyncio.ensure_future(run)
    try:
        return await asyncio.shield(task)
    except BaseException:
        task.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLEANUP_GRACE):
            await asyncio.wait([task])
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: whatever it was, the cancellation wins
        raise
