"""Durable flows: long-running work made of memoized steps that survives restarts.

Execution model: **replay with memoization**. An execution's flow function runs from
the top on every wake-up (start, timer, resume, retry, recovery after a crash). Each
step (`DurableContext.run`, `run_action`, `poll`, `sleep`, `interrupt`, `wait_for`,
`now`/`random`/`uuid`) looks up its entry in the execution's append-only journal:

- a **completed** step is never executed again; its stored result is returned;
- a step **in flight** when its process dies (crash, SIGKILL, a lapsed lease) has no
  entry yet, so it **runs again** on recovery: steps are *at-least-once*. Make their
  side effects idempotent (an idempotency key derived from the flow id and step) or
  tolerant of a repeat;
- code between steps runs on every replay: keep it deterministic and side-effect
  free, and do not reorder, rename or remove steps of live executions (that fails
  them with `HistoryDivergedError`).

Durability: every journal entry is committed (with the SQLite store: fsynced, WAL,
``synchronous=FULL``) before the step returns to the flow. Workers claim executions
with leases renewed while they run, and every write is fenced by the lease, so
several worker processes (or machines, with a shared store) never run one execution
at the same time, and a worker that died is replaced once its lease lapses.

```python
engine = DurableEngine([approval])            # SQLite at .data/durable.sqlite3
async with engine, engine.worker():
    op = await engine.schedule(approval, {"amount": 10})
    ...
    await engine.resume(op.name, "approve", {"approved": True})
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._decisions import Case
from ._timeline import ExecutionDetail
from .context import DEFAULT_RETRY, DurableContext, Loop, Message
from .definition import DurableFlow, RetryPolicy, durable_flow
from .engine import DurableEngine, Notifier
from .errors import (
    CriticalError,
    DurableStoreError,
    DurableUsageError,
    ExecutionNotFoundError,
    HistoryDivergedError,
    JoinError,
    JournalTooLargeError,
    LeaseLostError,
    NoMatchingCaseError,
    NotFinishedError,
    NotWaitingError,
    RaceError,
    RollbackCheckpointError,
    RollbackError,
    RollbackFailedError,
    ScheduleNotFoundError,
    SignalTimeoutError,
    StepExhaustedError,
    StepOutputError,
    StepResultTooLargeError,
)
from .memory import InMemoryDurableStore
from .records import (
    AuditEntry,
    ExecutionRecord,
    ExecutionStatus,
    JournalEntry,
    Lease,
    Operation,
    Page,
    Schedule,
    Signal,
)
from .sqlite import SqliteDurableStore
from .store import DurableStore
from .urls import store_from_url
from .worker import Worker

if TYPE_CHECKING:
    from starlette.routing import Router

    from ..flow import ContextProvider


def durable_routes(
    engine: DurableEngine,
    *,
    context_provider: ContextProvider | None = None,
    max_body_bytes: int = 1024 * 1024,
) -> Router:
    """A Starlette router serving ``engine``'s operations over HTTP (see
    `stream_gateway.asgi.durable`); imported on first use, so this package itself
    needs no web framework."""
    from ..asgi.durable import durable_routes as make

    options: dict[str, Any] = {
        "context_provider": context_provider,
        "max_body_bytes": max_body_bytes,
    }
    return make(engine, **options)


__all__ = [
    "AuditEntry",
    "Case",
    "CriticalError",
    "DEFAULT_RETRY",
    "DurableContext",
    "DurableEngine",
    "DurableFlow",
    "DurableStore",
    "DurableStoreError",
    "DurableUsageError",
    "ExecutionDetail",
    "ExecutionNotFoundError",
    "ExecutionRecord",
    "ExecutionStatus",
    "HistoryDivergedError",
    "InMemoryDurableStore",
    "JoinError",
    "JournalEntry",
    "JournalTooLargeError",
    "Lease",
    "LeaseLostError",
    "Loop",
    "Message",
    "NoMatchingCaseError",
    "NotFinishedError",
    "NotWaitingError",
    "Notifier",
    "Operation",
    "Page",
    "RaceError",
    "RetryPolicy",
    "RollbackCheckpointError",
    "RollbackError",
    "RollbackFailedError",
    "Schedule",
    "ScheduleNotFoundError",
    "Signal",
    "SignalTimeoutError",
    "SqliteDurableStore",
    "StepExhaustedError",
    "StepOutputError",
    "StepResultTooLargeError",
    "Worker",
    "durable_flow",
    "durable_routes",
    "store_from_url",
]


def __getattr__(name: str) -> Any:
    if name == "STORE_URL_SCHEMES":  # deprecated; `urls` warns
        from . import urls

        return getattr(urls, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
