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

from .context import DurableContext
from .definition import DurableFlow, RetryPolicy, durable_flow
from .engine import DurableEngine
from .errors import (
    CriticalError,
    DurableStoreError,
    ExecutionNotFoundError,
    HistoryDivergedError,
    LeaseLostError,
    NotFinishedError,
    NotWaitingError,
    StepExhaustedError,
    StepResultTooLargeError,
)
from .http import durable_routes
from .memory import InMemoryDurableStore
from .records import ExecutionRecord, ExecutionStatus, JournalEntry, Lease, Operation, Page
from .sqlite import SqliteDurableStore
from .store import DurableStore
from .worker import Worker

__all__ = [
    "CriticalError",
    "DurableContext",
    "DurableEngine",
    "DurableFlow",
    "DurableStore",
    "DurableStoreError",
    "ExecutionNotFoundError",
    "ExecutionRecord",
    "ExecutionStatus",
    "HistoryDivergedError",
    "InMemoryDurableStore",
    "JournalEntry",
    "Lease",
    "LeaseLostError",
    "NotFinishedError",
    "NotWaitingError",
    "Operation",
    "Page",
    "RetryPolicy",
    "SqliteDurableStore",
    "StepExhaustedError",
    "StepResultTooLargeError",
    "Worker",
    "durable_flow",
    "durable_routes",
]
