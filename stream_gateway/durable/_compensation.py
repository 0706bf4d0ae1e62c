"""Compensation: rollback handlers registered by steps, run in reverse on a rollback.

A replay registers the handlers again as it passes the steps (`register`), so the
ledger is rebuilt from the journal on every wake-up. `rollback_checkpoint` starts
the compensable region (handlers registered before it are dropped). A rollback runs
each handler as a durable step of its own in the branch ``$rollback`` (key
``undo:<step path>``): a handler that completed is never run again; one in flight
at a crash runs again; failures are retried with the step's policy, and a retry
backoff parks the execution as ``rolling_back``.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._replay import Abandon, Cursor, Run, Suspend
from ._steps import attempt, call_body
from .definition import RetryPolicy
from .errors import (
    DurableStoreError,
    LeaseLostError,
    RollbackCheckpointError,
    RollbackError,
    RollbackFailedError,
    StepExhaustedError,
)
from .records import AuditEntry, ExecutionStatus, JournalEntry

__all__ = ["BRANCH", "Ledger", "checkpoint", "fail_with_rollback", "ledger", "manual", "register"]

#: The branch the handlers' journal entries live in.
BRANCH = "$rollback"


@dataclass(slots=True)
class _Handler:
    order: tuple[float, int]
    path: str
    undo: Callable[[Any], Any]
    value: Any
    retry: RetryPolicy | None


@dataclass(slots=True)
class Ledger:
    """One run's rollback handlers since the last checkpoint."""

    armed: bool = False
    handlers: list[_Handler] = field(default_factory=list)
    registered: int = 0


_LEDGERS: weakref.WeakKeyDictionary[Run, Ledger] = weakref.WeakKeyDictionary()


def ledger(run: Run) -> Ledger:
    found = _LEDGERS.get(run)
    if found is None:
        found = _LEDGERS[run] = Ledger()
    return found


def register(
    cursor: Cursor,
    key: str,
    undo: Callable[[Any], Any],
    value: Any,
    retry: RetryPolicy | None,
) -> None:
    """Remember ``undo(value)`` for the completed step ``key`` of ``cursor``'s branch."""
    run = cursor.run
    book = ledger(run)
    entry = run.entries.get((cursor.branch, key))
    finished = entry.finished_at if entry is not None and entry.finished_at else time.time()
    book.registered += 1
    book.handlers.append(
        _Handler((finished, book.registered), cursor.path(key), undo, value, retry)
    )


def checkpoint(run: Run) -> None:
    """Start the compensable region here: earlier handlers are dropped."""
    book = ledger(run)
    book.armed = True
    book.handlers.clear()


async def _mark(run: Run, status: ExecutionStatus, **data: Any) -> None:
    """Switch the leased execution to ``status`` (fenced), with its audit line."""
    if run.lease is None or run.record.status == status:
        return
    line = AuditEntry(run.record.id, "status", time.time(), None, {"status": status, **data})
    audit, run.audit = [*run.audit, line], []
    try:
        await run.store.set_status(run.lease, status, time.time(), audit=audit)
    except LeaseLostError:
        raise run.abandon("its lease was lost") from None
    except DurableStoreError as exc:
        raise run.abandon(f"the store failed ({exc.message})") from None
    run.record.status = status


async def _run_handlers(run: Run, reason: RollbackError | None) -> None:
    """Run the ledger's handlers, newest first, each once; raises `Suspend`
    (status ``rolling_back``) during a retry backoff, `RollbackFailedError` when a
    handler exhausted its retries."""
    book = ledger(run)
    await _mark(run, "rolling_back")
    cursor = Cursor(run, BRANCH, None)
    for position, handler in enumerate(sorted(book.handlers, key=lambda h: h.order, reverse=True)):
        key = "undo:" + handler.path.replace("/", "|")

        async def body(h: _Handler = handler) -> None:
            await call_body(lambda: h.undo(h.value))

        try:
            if run.evicted:  # parks between handlers (one running now finishes)
                raise run.eviction()
            await attempt(
                cursor, position, "rollback", key, body, lambda _: "null", handler.retry, None
            )
        except Suspend as suspend:
            raise Suspend("rolling_back", suspend.blocked_on, suspend.wake_at) from None
        except StepExhaustedError as exc:
            raise RollbackFailedError(
                f"rollback handler of step {handler.path!r} failed: the rollback stopped",
                details={
                    "reason": reason.to_json() if reason is not None else None,
                    "handler": exc.to_json(),
                },
            ) from exc
    book.handlers.clear()


async def fail_with_rollback(
    run: Run, reason: RollbackError
) -> tuple[BaseException | None, Suspend | None]:
    """Compensate after a step raised `RollbackError`: ``(error to fail with, None)``
    once done, or ``(None, suspension)`` to wait for a handler's retry."""
    if not ledger(run).armed:
        return (
            RollbackCheckpointError(
                f"a step raised RollbackError ({reason.message}) but the flow reached no "
                "ctx.rollback_checkpoint(...) before it: add one where the compensable "
                "work starts",
                details={"reason": reason.to_json()},
            ),
            None,
        )
    try:
        await _run_handlers(run, reason)
    except Suspend as suspend:
        return None, suspend
    except RollbackFailedError as exc:
        return exc, None
    except Abandon:
        raise
    return reason, None


async def manual(cursor: Cursor, pos: int, key: str) -> None:
    """`DurableContext.rollback`: compensate now, record it, and carry on running."""
    run = cursor.run
    entry = run.entries.get((cursor.branch, key))
    if entry is not None and entry.final:
        ledger(run).handlers.clear()
        return
    if not ledger(run).armed:
        error = RollbackCheckpointError(
            "ctx.rollback() needs a ctx.rollback_checkpoint(...) before it: add one where "
            "the compensable work starts"
        )
        run.fatal = run.fatal or error
        raise error
    try:
        await _run_handlers(run, None)
    except RollbackFailedError as exc:
        run.fatal = run.fatal or exc
        raise
    now = time.time()
    await run.write(
        JournalEntry(
            pos,
            "rollback",
            key,
            "completed",
            "null",
            started_at=now,
            finished_at=now,
            branch=cursor.branch,
        )
    )
    await _mark(run, "running", rolled_back=True)
