"""The streams' tables, their migrations and the statements run on them.

```
<schema>.streams          one row per stream: the record (no chunks)
<schema>.stream_batches   one row per flush: (stream_id, first_offset) -> count, chunks
<schema>.schema_migrations
```

``chunks`` holds a batch's compact JSON chunks joined by ``\\n`` (compact JSON never has
a raw newline); a compacted stream has one batch, at offset 0, holding its entries.
Every statement is one round trip; those that change a stream also ``pg_notify`` its
channel in the same statement, so the notification goes out exactly when (and only if)
the change commits.
"""

from __future__ import annotations

import hashlib

from ._migrations import Migration

__all__ = ["STREAMS_MIGRATIONS", "Statements", "channel"]

STREAMS_MIGRATIONS = [
    Migration(
        1,
        "streams and chunk batches",
        """
        CREATE TABLE {schema}.streams (
            stream_id text PRIMARY KEY,
            flow text NOT NULL,
            owner text,
            status text NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'done', 'error', 'cancelled')),
            length bigint NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            lease_until timestamptz,
            cancel_requested boolean NOT NULL DEFAULT false,
            terminal_payload bytea,
            extra jsonb NOT NULL DEFAULT '{{}}',
            create_token uuid
        ) WITH (fillfactor = 80);
        CREATE INDEX streams_expires_at ON {schema}.streams (expires_at);
        CREATE TABLE {schema}.stream_batches (
            stream_id text NOT NULL
                REFERENCES {schema}.streams (stream_id) ON DELETE CASCADE,
            first_offset bigint NOT NULL,
            count integer NOT NULL CHECK (count > 0),
            chunks bytea NOT NULL,
            PRIMARY KEY (stream_id, first_offset)
        );
        """,
    ),
    # A stop (finish now, with the partial result) carried to the writer's process
    # like a cancel. A cancel outranks it: requesting one clears the stop.
    Migration(
        2,
        "stop requests",
        """
        ALTER TABLE {schema}.streams
            ADD COLUMN stop_requested boolean NOT NULL DEFAULT false;
        """,
    ),
    # Listing newest first (`list_streams`) walks this index from the cursor on.
    Migration(
        3,
        "streams by creation",
        """
        CREATE INDEX streams_created ON {schema}.streams (created_at DESC, stream_id DESC);
        """,
    ),
    # A compacted stream (`compact`) keeps its entries as one batch at offset 0; this
    # counts them (NULL: never compacted).
    Migration(
        4,
        "compacted streams",
        """
        ALTER TABLE {schema}.streams ADD COLUMN compacted integer;
        """,
    ),
]

RECORD_COLUMNS = (
    "stream_id, flow, owner, status, length, created_at, updated_at, expires_at, "
    "lease_until, cancel_requested, stop_requested, terminal_payload, extra, compacted"
)


def channel(schema: str, stream_id: str) -> str:
    """The stream's LISTEN/NOTIFY channel: a hash, as ids can outgrow the 63-byte limit
    on identifiers; the schema is in it, so two schemas never wake each other."""
    digest = hashlib.blake2b(f"{schema}\0{stream_id}".encode(), digest_size=16).hexdigest()
    return f"sg_{digest}"


class Statements:
    """The SQL of every storage call, for tables in one (quoted) schema."""

    def __init__(self, quoted_schema: str) -> None:
        s = quoted_schema
        self.create = f"""INSERT INTO {s}.streams
            (stream_id, flow, owner, status, length, created_at, updated_at, expires_at,
             lease_until, cancel_requested, extra, create_token)
            VALUES ($1, $2, $3, 'open', 0, $4, $5, $6, $7, false, $8::jsonb, $9)
            ON CONFLICT (stream_id) DO NOTHING RETURNING true"""
        self.create_token = f"SELECT create_token FROM {s}.streams WHERE stream_id = $1"
        # The record's length moves with its batch, in the same statement: `load` is
        # exact without reading batches. A retried batch replaces the one at its offset.
        # Only an open stream takes chunks: a finished one (abandoned while its writer
        # stalled) keeps what readers saw; `exists` then tells closed from unknown.
        self.append = f"""WITH record AS (
                UPDATE {s}.streams SET length = greatest(length, $2::bigint + $3::integer)
                WHERE stream_id = $1 AND status = 'open' RETURNING stream_id),
            batch AS (
                INSERT INTO {s}.stream_batches (stream_id, first_offset, count, chunks)
                SELECT stream_id, $2::bigint, $3::integer, $4::bytea FROM record
                ON CONFLICT (stream_id, first_offset)
                DO UPDATE SET count = excluded.count, chunks = excluded.chunks)
            SELECT true FROM record, pg_notify($5, '')"""
        # Only an open stream: an end recorded already (by `abandon`) stands.
        self.finish = f"""WITH record AS (
                UPDATE {s}.streams SET status = $2, terminal_payload = $3, length = $4,
                    updated_at = $5, expires_at = $6, lease_until = NULL
                WHERE stream_id = $1 AND status = 'open' RETURNING stream_id)
            SELECT true FROM record, pg_notify($7, '')"""
        # A conditional finish at the committed length (each flush moves `length` in
        # its own statement, and this waits on the row lock a flush in flight holds).
        self.abandon = f"""WITH record AS (
                UPDATE {s}.streams SET status = $2, terminal_payload = $3,
                    updated_at = $4, expires_at = $5, lease_until = NULL
                WHERE stream_id = $1 AND status = 'open' AND lease_until < $4
                RETURNING stream_id)
            SELECT true FROM record, pg_notify($6, '')"""
        self.exists = f"SELECT true FROM {s}.streams WHERE stream_id = $1"
        self.load = f"SELECT {RECORD_COLUMNS} FROM {s}.streams WHERE stream_id = $1"
        # The batch holding `offset` (the last one starting at or before it) and those
        # after it up to `end`: two seeks on the primary key, however long the stream.
        self.read = f"""SELECT first_offset, count, chunks FROM {s}.stream_batches
            WHERE stream_id = $1 AND first_offset < $3 AND first_offset >= coalesce(
                (SELECT first_offset FROM {s}.stream_batches
                 WHERE stream_id = $1 AND first_offset <= $2
                 ORDER BY first_offset DESC LIMIT 1), 0)
            ORDER BY first_offset"""
        self.renew = f"""UPDATE {s}.streams SET lease_until = $2, expires_at = $3
            WHERE stream_id = ANY($1::text[]) AND status = 'open'
            RETURNING stream_id, cancel_requested, stop_requested"""
        # A cancel outranks a stop: it clears one, and a stop never overrides it.
        self.request_cancel = f"""UPDATE {s}.streams
            SET cancel_requested = true, stop_requested = false
            WHERE stream_id = $1 AND status = 'open' RETURNING true"""
        self.request_stop = f"""WITH flagged AS (
                UPDATE {s}.streams SET stop_requested = true
                WHERE stream_id = $1 AND status = 'open' AND NOT cancel_requested
                RETURNING true)
            SELECT EXISTS (SELECT 1 FROM flagged) OR EXISTS (
                SELECT 1 FROM {s}.streams WHERE stream_id = $1 AND status = 'open')"""
        self.list_from = f"SELECT {RECORD_COLUMNS} FROM {s}.streams"
        # `compact`'s three statements, run in one transaction: the conditional mark
        # (its row lock holds off a second compaction until this one commits), the
        # deletion of every batch, the entries as one batch at offset 0.
        self.compact_mark = f"""UPDATE {s}.streams SET compacted = $3
            WHERE stream_id = $1 AND status <> 'open' AND length = $2 AND compacted IS NULL
            RETURNING true"""
        self.compact_delete = f"DELETE FROM {s}.stream_batches WHERE stream_id = $1"
        self.compact_insert = f"""INSERT INTO {s}.stream_batches
            (stream_id, first_offset, count, chunks) VALUES ($1, 0, $2, $3)"""
        # A bounded round per statement, skipping rows another transaction holds (a
        # stream being written is not expired anyway); batches go by the cascade.
        self.purge = f"""WITH doomed AS (
                SELECT stream_id FROM {s}.streams WHERE expires_at <= $1
                ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED),
            gone AS (
                DELETE FROM {s}.streams USING doomed
                WHERE streams.stream_id = doomed.stream_id RETURNING 1)
            SELECT count(*) FROM gone"""
