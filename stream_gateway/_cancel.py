"""Telling a cancel scope's cancellation from a CancelledError a library raised itself.

Client libraries raise `asyncio.CancelledError` of their own when they give a call up
(gRPC's asyncio channel, behind the Firestore client, does under load). Such an
exception, let out of a background task, ends that task, and anyio then cancels the
task's whole group: one failed store call would stop every stream or every durable
run of a process. Background loops catch it and treat it as a failed call.
"""

from __future__ import annotations

import asyncio

from anyio.lowlevel import checkpoint

__all__ = ["foreign_cancellation"]


async def foreign_cancellation() -> bool:
    """Call in an ``except CancelledError`` block: True when no one cancelled this task.

    A cancel scope around the task that was cancelled delivers its cancellation again
    at a checkpoint: it is raised here, and reaches the scope that sent it. A plain
    ``Task.cancel()`` (an event loop shutting down) leaves the task's ``cancelling()``
    count up: False, so that the caller lets the exception through. Otherwise the
    CancelledError came from a library's own cancelled call: True.
    """
    await checkpoint()
    task = asyncio.current_task()
    return task is None or not task.cancelling()
