"""How durable executions map onto Firestore documents (the README draws the tree).

``{prefix}_executions/{id}`` holds an execution's record; its journal entries,
signals and waiters are documents of their own under it (``journal``, ``signals``,
``waiters``), so no document grows with the length of a flow. ``{prefix}_audit``
holds the audit timeline, ``{prefix}_schedules`` the recurring schedules and
``{prefix}_meta`` the two sequence counters (creation order, audit order).

Stored errors and audit data are JSON text, so they read back exactly as written.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from stream_gateway.durable import AuditEntry, ExecutionRecord, JournalEntry, Schedule

__all__ = [
    "JOURNAL",
    "SIGNALS",
    "WAITERS",
    "audit_fields",
    "audit_from_fields",
    "dump_error",
    "entry_fields",
    "entry_from_fields",
    "journal_id",
    "record_fields",
    "record_from_fields",
    "schedule_fields",
    "schedule_from_fields",
    "signal_id",
]

JOURNAL = "journal"
SIGNALS = "signals"
WAITERS = "waiters"


def dump_error(error: dict[str, Any] | None) -> str | None:
    """A stored error (or audit data) as the JSON text kept in a document."""
    return json.dumps(error) if error is not None else None


def _load(text: Any) -> Any:
    return json.loads(text) if text is not None else None


def record_fields(record: ExecutionRecord) -> dict[str, Any]:
    """The execution document's fields (``signal_next`` is the store's own counter)."""
    return {
        "flow": record.flow,
        "status": record.status,
        "input": record.input,
        "owner": record.owner,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "due_at": record.due_at,
        "lease_owner": record.lease_owner,
        "lease_token": record.lease_token,
        "blocked_on": record.blocked_on,
        "result": record.result,
        "error": dump_error(record.error),
        "seq": record.seq,
        "parent": record.parent,
        "evict_requested": record.evict_requested,
    }


def record_from_fields(execution_id: str, fields: dict[str, Any]) -> ExecutionRecord:
    return ExecutionRecord(
        id=execution_id,
        flow=fields["flow"],
        status=fields["status"],
        input=fields["input"],
        owner=fields.get("owner"),
        created_at=fields["created_at"],
        updated_at=fields["updated_at"],
        due_at=fields.get("due_at"),
        lease_owner=fields.get("lease_owner"),
        lease_token=fields.get("lease_token", 0),
        blocked_on=fields.get("blocked_on"),
        result=fields.get("result"),
        error=_load(fields.get("error")),
        seq=fields["seq"],
        parent=fields.get("parent"),
        evict_requested=bool(fields.get("evict_requested", False)),
    )


def journal_id(branch: str, key: str) -> str:
    """A journal entry's document id: a digest of its address, since branches and
    step names may hold characters a document id cannot (``/``)."""
    return hashlib.sha256(f"{branch}\x1f{key}".encode()).hexdigest()[:40]


def entry_fields(entry: JournalEntry, order: int) -> dict[str, Any]:
    """A journal document: the entry plus ``ord``, the order it was first written."""
    return {
        "ord": order,
        "branch": entry.branch,
        "seq": entry.seq,
        "kind": entry.kind,
        "key": entry.key,
        "status": entry.status,
        "result": entry.result,
        "error": dump_error(entry.error),
        "attempts": entry.attempts,
        "started_at": entry.started_at,
        "finished_at": entry.finished_at,
        "wake_at": entry.wake_at,
        "stream_at": entry.stream_at,
    }


def entry_from_fields(fields: dict[str, Any]) -> JournalEntry:
    return JournalEntry(
        seq=fields["seq"],
        kind=fields["kind"],
        key=fields["key"],
        status=fields["status"],
        result=fields.get("result"),
        error=_load(fields.get("error")),
        attempts=fields["attempts"],
        started_at=fields["started_at"],
        finished_at=fields.get("finished_at"),
        wake_at=fields.get("wake_at"),
        branch=fields["branch"],
        stream_at=fields.get("stream_at"),
    )


def signal_id(number: int) -> str:
    """A signal's document id: its number, zero-padded so ids sort as numbers do."""
    return f"{number:012d}"


def audit_fields(entry: AuditEntry, seq: int | None, order: str) -> dict[str, Any]:
    """An audit document: ``seq`` is ``None`` until the line is numbered; ``order``
    sorts lines not numbered yet."""
    return {
        "seq": seq,
        "order": order,
        "execution_id": entry.execution_id,
        "kind": entry.kind,
        "at": entry.at,
        "step": entry.step,
        "data": json.dumps(entry.data),
    }


def audit_from_fields(fields: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        fields["execution_id"],
        fields["kind"],
        fields["at"],
        fields.get("step"),
        json.loads(fields["data"]),
        fields["seq"],
    )


_SCHEDULE_FIELDS = (
    "flow",
    "input",
    "owner",
    "cron",
    "interval",
    "timezone",
    "overlap",
    "paused",
    "next_at",
    "last_tick",
    "last_execution",
    "created_at",
    "updated_at",
)


def schedule_fields(schedule: Schedule) -> dict[str, Any]:
    """Every field of the schedule, ``id`` included (list pages order by it)."""
    fields = {name: getattr(schedule, name) for name in _SCHEDULE_FIELDS}
    fields["id"] = schedule.id
    return fields


def schedule_from_fields(fields: dict[str, Any]) -> Schedule:
    values: dict[str, Any] = {name: fields.get(name) for name in _SCHEDULE_FIELDS}
    return Schedule(id=fields["id"], **values)
