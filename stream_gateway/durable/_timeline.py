"""The audit timeline: an execution's detail view and the feed of audit entries.

Audit lines are written by the store in the same transaction as what they describe
(a step's journal entry, a suspension, the end) or, for the engine's own operations
(a signal sent, a cancellation), right after the operation. `follow` reads the
store's feed, so it sees lines written by workers in any process.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from .._json import loads
from .records import AuditEntry, JournalEntry, Operation, _iso, _redact

if TYPE_CHECKING:
    from .engine import DurableEngine

__all__ = ["ExecutionDetail", "audit_line", "follow", "step_to_json"]


def audit_line(execution_id: str, kind: str, step: str | None = None, **data: Any) -> AuditEntry:
    """An audit entry stamped now."""
    return AuditEntry(execution_id, kind, time.time(), step, data)


def step_to_json(entry: JournalEntry, *, operator: bool = True) -> dict[str, Any]:
    """A journal entry as JSON: ``{path, kind, status, attempts, startedAt,
    finishedAt, wakeAt, result?, error?}``."""
    body: dict[str, Any] = {
        "path": entry.path,
        "kind": entry.kind,
        "status": entry.status,
        "attempts": entry.attempts,
        "startedAt": _iso(entry.started_at),
        "finishedAt": _iso(entry.finished_at),
        "wakeAt": _iso(entry.wake_at),
    }
    if entry.result is not None:
        body["result"] = loads(entry.result)
    if entry.error is not None:
        body["error"] = entry.error if operator else _redact(entry.error)
    return body


@dataclass(frozen=True, slots=True)
class ExecutionDetail:
    """What `DurableEngine.detail` returns: the operation, its journal entries (in the
    order first written) and its audit timeline (oldest first)."""

    operation: Operation
    steps: list[JournalEntry]
    timeline: list[AuditEntry]

    def to_json(self, *, operator: bool = True) -> dict[str, Any]:
        """``{operation, steps, timeline}``; ``operator=False`` hides the original
        type and message of errors that are not user errors (owner-facing views)."""
        return {
            "operation": self.operation.to_json(),
            "steps": [step_to_json(e, operator=operator) for e in self.steps],
            "timeline": [a.to_json(operator=operator) for a in self.timeline],
        }


async def follow(
    engine: DurableEngine,
    *,
    execution_id: str | None,
    after: int,
    poll_interval: float,
) -> AsyncIterator[AuditEntry]:
    """Audit entries with ``seq > after`` as they are stored, forever (the caller
    breaks out). Local writes wake it at once; other processes' within
    ``poll_interval``."""
    cursor = after
    while True:
        event = engine.notifier.audit_event()
        batch = await engine.store.audit(execution_id=execution_id, after=cursor, limit=500)
        for entry in batch:
            cursor = entry.seq
            yield entry
        if len(batch) < 500:
            with anyio.move_on_after(poll_interval):
                await event.wait()
