"""The durable store's tables (component ``durable`` of `migrate`) and its channel.

```
<schema>.durable_executions   one row per execution (claims seek the due index)
<schema>.durable_journal      one row per journal entry: (execution_id, branch, key)
<schema>.durable_signals      signals and resume payloads, FIFO by id
<schema>.durable_waits        who waits for whom (target -> waiter)
<schema>.durable_audit        the audit timeline; seq is the store-wide feed cursor,
                              given by readers in commit order (`_sequence`)
<schema>.durable_schedules    recurring schedules
```

Times are the caller's POSIX seconds as ``double precision`` (stored and read back
exactly, as the contract compares them); results, inputs, payloads and errors are
the engine's JSON text, stored verbatim.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg

from stream_gateway.durable import ExecutionRecord, Schedule

from ._migrations import Migration

__all__ = [
    "COLUMNS",
    "DURABLE_MIGRATIONS",
    "FINISHED",
    "LEASED",
    "LIVE",
    "SCHEDULE_COLUMNS",
    "due_channel",
    "schedule_row",
    "split_url",
    "to_json",
    "to_record",
    "to_schedule",
]

DURABLE_MIGRATIONS = [
    Migration(
        1,
        "durable executions, journal, signals, waits, audit, schedules",
        """
        CREATE TABLE {schema}.durable_executions (
            seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
            id text PRIMARY KEY,
            flow text NOT NULL,
            status text NOT NULL CHECK (status IN ('pending', 'running', 'sleeping',
                'waiting', 'rolling_back', 'completed', 'failed', 'cancelled')),
            input text NOT NULL,
            owner text,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            due_at double precision,
            lease_owner text,
            lease_token bigint NOT NULL DEFAULT 0,
            blocked_on text,
            result text,
            error text,
            parent text
        ) WITH (fillfactor = 80);
        CREATE INDEX durable_executions_due ON {schema}.durable_executions (due_at)
            WHERE due_at IS NOT NULL;
        CREATE INDEX durable_executions_parent ON {schema}.durable_executions (parent)
            WHERE parent IS NOT NULL;
        CREATE TABLE {schema}.durable_journal (
            ord bigint GENERATED ALWAYS AS IDENTITY,
            execution_id text NOT NULL,
            branch text NOT NULL,
            key text NOT NULL,
            seq integer NOT NULL,
            kind text NOT NULL,
            status text NOT NULL,
            result text,
            error text,
            attempts integer NOT NULL,
            started_at double precision NOT NULL,
            finished_at double precision,
            wake_at double precision,
            PRIMARY KEY (execution_id, branch, key)
        );
        CREATE TABLE {schema}.durable_signals (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            execution_id text NOT NULL,
            name text NOT NULL,
            payload text NOT NULL,
            consumed boolean NOT NULL DEFAULT false
        );
        CREATE INDEX durable_signals_execution
            ON {schema}.durable_signals (execution_id, consumed, name);
        CREATE TABLE {schema}.durable_waits (
            target text NOT NULL,
            waiter text NOT NULL,
            PRIMARY KEY (target, waiter)
        );
        CREATE TABLE {schema}.durable_audit (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            seq bigint UNIQUE,
            execution_id text NOT NULL,
            kind text NOT NULL,
            at double precision NOT NULL,
            step text,
            data text NOT NULL
        );
        CREATE INDEX durable_audit_execution ON {schema}.durable_audit (execution_id, seq);
        CREATE INDEX durable_audit_unsequenced ON {schema}.durable_audit (id)
            WHERE seq IS NULL;
        CREATE TABLE {schema}.durable_audit_cursor (last bigint NOT NULL);
        INSERT INTO {schema}.durable_audit_cursor VALUES (0);
        CREATE TABLE {schema}.durable_schedules (
            id text PRIMARY KEY,
            flow text NOT NULL,
            input text NOT NULL,
            owner text,
            cron text,
            "interval" double precision,
            timezone text NOT NULL,
            overlap text NOT NULL,
            paused boolean NOT NULL,
            next_at double precision,
            last_tick double precision,
            last_execution text,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL
        );
        CREATE INDEX durable_schedules_due ON {schema}.durable_schedules (next_at)
            WHERE NOT paused;
        """,
    ),
    Migration(
        2,
        "durable eviction requests and journal stream offsets",
        """
        ALTER TABLE {schema}.durable_executions
            ADD COLUMN evict_requested boolean NOT NULL DEFAULT false;
        ALTER TABLE {schema}.durable_journal ADD COLUMN stream_at bigint;
        """,
    ),
]


def due_channel(schema: str) -> str:
    """The schema's "something may be due" channel (one for all its executions): a
    hash, so that two schemas in one database never wake each other's workers."""
    digest = hashlib.blake2b(f"durable\0{schema}".encode(), digest_size=12).hexdigest()
    return f"sg_due_{digest}"


COLUMNS = (
    "id, flow, status, input, owner, created_at, updated_at, due_at, lease_owner, "
    "lease_token, blocked_on, result, error, seq, parent, evict_requested"
)
SCHEDULE_COLUMNS = (
    'id, flow, input, owner, cron, "interval", timezone, overlap, paused, next_at, '
    "last_tick, last_execution, created_at, updated_at"
)
LIVE = "('pending', 'sleeping', 'waiting', 'running', 'rolling_back')"
LEASED = "('running', 'rolling_back')"
FINISHED = ("completed", "failed", "cancelled")


def to_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def to_record(row: asyncpg.Record) -> ExecutionRecord:
    return ExecutionRecord(
        id=row["id"],
        flow=row["flow"],
        status=row["status"],
        input=row["input"],
        owner=row["owner"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        due_at=row["due_at"],
        lease_owner=row["lease_owner"],
        lease_token=row["lease_token"],
        blocked_on=row["blocked_on"],
        result=row["result"],
        error=json.loads(row["error"]) if row["error"] is not None else None,
        seq=row["seq"],
        parent=row["parent"],
        evict_requested=row["evict_requested"],
    )


def to_schedule(row: asyncpg.Record) -> Schedule:
    return Schedule(
        id=row["id"],
        flow=row["flow"],
        input=row["input"],
        owner=row["owner"],
        cron=row["cron"],
        interval=row["interval"],
        timezone=row["timezone"],
        overlap=row["overlap"],
        paused=row["paused"],
        next_at=row["next_at"],
        last_tick=row["last_tick"],
        last_execution=row["last_execution"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def schedule_row(s: Schedule) -> tuple[Any, ...]:
    return (
        s.id, s.flow, s.input, s.owner, s.cron, s.interval, s.timezone, s.overlap, s.paused,
        s.next_at, s.last_tick, s.last_execution, s.created_at, s.updated_at,
    )  # fmt: skip


def split_url(url: str) -> tuple[str, str | None]:
    """``postgresql://...#schema=name`` -> (the DSN, the schema or ``None``)."""
    parts = urlsplit(url)
    schema = parse_qs(parts.fragment).get("schema", [None])[0]
    return urlunsplit(parts._replace(fragment="")), schema
