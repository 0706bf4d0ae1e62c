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
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg

from stream_gateway.durable import AuditEntry, ExecutionRecord, JournalEntry, Schedule

from ._migrations import Migration

__all__ = [
    "COLUMNS",
    "DURABLE_MIGRATIONS",
    "FINISHED",
    "LEASED",
    "LEASE_LOST",
    "LIVE",
    "REFUSED",
    "SCHEDULE_COLUMNS",
    "audit_args",
    "due_channel",
    "journal_args",
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
    Migration(
        3,
        "durable writes as functions: one round trip each",
        """
        CREATE FUNCTION {schema}.durable_add_audit(a_execution text[], a_kind text[],
            a_at double precision[], a_step text[], a_data text[]) RETURNS void
        LANGUAGE sql AS $$
            INSERT INTO {schema}.durable_audit (execution_id, kind, at, step, data)
            SELECT e, k, a, s, d FROM unnest(a_execution, a_kind, a_at, a_step, a_data)
                WITH ORDINALITY AS u(e, k, a, s, d, n)
            ORDER BY n
        $$;

        CREATE FUNCTION {schema}.durable_fence(p_id text, p_worker text, p_token bigint)
            RETURNS void
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM 1 FROM {schema}.durable_executions WHERE id = p_id
                AND status IN ('running', 'rolling_back') AND lease_owner = p_worker
                AND lease_token = p_token FOR NO KEY UPDATE;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'lease on flow % was lost', p_id USING ERRCODE = 'SGL01';
            END IF;
        END $$;

        CREATE FUNCTION {schema}.durable_create(p_id text, p_flow text, p_status text,
            p_input text, p_owner text, p_created_at double precision,
            p_updated_at double precision, p_due_at double precision, p_parent text,
            p_channel text, a_execution text[], a_kind text[], a_at double precision[],
            a_step text[], a_data text[],
            OUT created boolean, OUT execution {schema}.durable_executions)
        LANGUAGE plpgsql AS $$
        BEGIN
            LOOP
                INSERT INTO {schema}.durable_executions (id, flow, status, input, owner,
                    created_at, updated_at, due_at, parent)
                VALUES (p_id, p_flow, p_status, p_input, p_owner, p_created_at,
                    p_updated_at, p_due_at, p_parent)
                ON CONFLICT (id) DO NOTHING
                RETURNING * INTO execution;
                created := FOUND;
                EXIT WHEN created;
                SELECT * INTO execution FROM {schema}.durable_executions WHERE id = p_id;
                IF FOUND THEN
                    RETURN;
                END IF;
                -- deleted between the two: insert it after all
            END LOOP;
            IF p_due_at IS NOT NULL THEN
                PERFORM pg_notify(p_channel, p_due_at::text);
            END IF;
            PERFORM {schema}.durable_add_audit(a_execution, a_kind, a_at, a_step, a_data);
        END $$;

        CREATE FUNCTION {schema}.durable_append(p_id text, p_worker text, p_token bigint,
            p_consume bigint[], j_branch text[], j_key text[], j_seq integer[],
            j_kind text[], j_status text[], j_result text[], j_error text[],
            j_attempts integer[], j_started_at double precision[],
            j_finished_at double precision[], j_wake_at double precision[],
            j_stream_at bigint[], a_execution text[], a_kind text[],
            a_at double precision[], a_step text[], a_data text[]) RETURNS void
        LANGUAGE plpgsql AS $$
        DECLARE
            missing bigint[];
        BEGIN
            PERFORM {schema}.durable_fence(p_id, p_worker, p_token);
            IF cardinality(p_consume) <> (SELECT count(DISTINCT c) FROM unnest(p_consume) c)
            THEN
                RAISE EXCEPTION 'signals % are consumed twice in one write', p_consume
                    USING ERRCODE = 'SGR01';
            END IF;
            IF cardinality(p_consume) > 0 THEN
                SELECT array_agg(c ORDER BY c) INTO missing FROM unnest(p_consume) AS c
                WHERE NOT EXISTS (SELECT 1 FROM {schema}.durable_signals AS s
                    WHERE s.id = c AND s.execution_id = p_id AND NOT s.consumed);
                IF missing IS NOT NULL THEN
                    RAISE EXCEPTION 'signal % is not waiting to be consumed', missing
                        USING ERRCODE = 'SGR01';
                END IF;
                UPDATE {schema}.durable_signals SET consumed = true
                WHERE id = ANY(p_consume) AND execution_id = p_id;
            END IF;
            FOR i IN 1 .. coalesce(cardinality(j_key), 0) LOOP
                INSERT INTO {schema}.durable_journal AS j (execution_id, branch, key, seq,
                    kind, status, result, error, attempts, started_at, finished_at,
                    wake_at, stream_at)
                VALUES (p_id, j_branch[i], j_key[i], j_seq[i], j_kind[i], j_status[i],
                    j_result[i], j_error[i], j_attempts[i], j_started_at[i],
                    j_finished_at[i], j_wake_at[i], j_stream_at[i])
                ON CONFLICT (execution_id, branch, key) DO UPDATE SET
                    status = excluded.status, result = excluded.result,
                    error = excluded.error, attempts = excluded.attempts,
                    finished_at = excluded.finished_at, wake_at = excluded.wake_at,
                    stream_at = excluded.stream_at
                WHERE j.status NOT IN ('completed', 'failed');
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'journal entry ''%'' is final',
                        concat_ws('/', nullif(j_branch[i], ''), j_key[i])
                        USING ERRCODE = 'SGR01';
                END IF;
            END LOOP;
            PERFORM {schema}.durable_add_audit(a_execution, a_kind, a_at, a_step, a_data);
        END $$;

        CREATE FUNCTION {schema}.durable_end(p_id text, p_status text, p_result text,
            p_error text, p_now double precision, p_channel text) RETURNS void
        LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE {schema}.durable_executions SET status = p_status, result = p_result,
                error = p_error, due_at = NULL, lease_owner = NULL, blocked_on = NULL,
                evict_requested = false, updated_at = p_now
            WHERE id = p_id;
            UPDATE {schema}.durable_executions SET due_at = p_now
            WHERE status = 'waiting' AND id IN
                (SELECT waiter FROM {schema}.durable_waits WHERE target = p_id);
            IF FOUND THEN
                PERFORM pg_notify(p_channel, p_now::text);
            END IF;
            DELETE FROM {schema}.durable_waits WHERE target = p_id;
        END $$;

        CREATE FUNCTION {schema}.durable_finish(p_id text, p_worker text, p_token bigint,
            p_status text, p_result text, p_error text, p_now double precision,
            p_channel text, a_execution text[], a_kind text[], a_at double precision[],
            a_step text[], a_data text[]) RETURNS void
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM {schema}.durable_fence(p_id, p_worker, p_token);
            PERFORM {schema}.durable_end(p_id, p_status, p_result, p_error, p_now,
                p_channel);
            PERFORM {schema}.durable_add_audit(a_execution, a_kind, a_at, a_step, a_data);
        END $$;
        """,
    ),
]

#: The SQLSTATEs the durable functions raise: a lease that no longer holds
#: (`LeaseLostError`), and a write the contract refuses (``ValueError``).
LEASE_LOST = "SGL01"
REFUSED = "SGR01"


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


def audit_args(entries: Sequence[AuditEntry]) -> tuple[list[Any], ...]:
    """Audit lines as the durable functions take them: one array per column."""
    return (
        [a.execution_id for a in entries],
        [a.kind for a in entries],
        [a.at for a in entries],
        [a.step for a in entries],
        [json.dumps(a.data) for a in entries],
    )


def journal_args(entries: Sequence[JournalEntry]) -> tuple[list[Any], ...]:
    """Journal entries as ``durable_append`` takes them: one array per column."""
    return (
        [e.branch for e in entries],
        [e.key for e in entries],
        [e.seq for e in entries],
        [e.kind for e in entries],
        [e.status for e in entries],
        [e.result for e in entries],
        [to_json(e.error) for e in entries],
        [e.attempts for e in entries],
        [e.started_at for e in entries],
        [e.finished_at for e in entries],
        [e.wake_at for e in entries],
        [e.stream_at for e in entries],
    )


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
