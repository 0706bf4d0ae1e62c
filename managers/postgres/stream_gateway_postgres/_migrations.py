"""Versioned schema migrations, applied on start, shared by every part of the package.

Each part (``streams`` here; a durable store can add its own) owns a list of
`Migration` s, numbered from 1. `migrate` applies the ones a database lacks, in order,
in one transaction under an advisory lock, and records each in
``<schema>.schema_migrations`` (component, version, name, applied_at). Processes that
start together wait for each other; the first applies, the others find it done.

A database that has versions this code does not know (a newer release migrated it)
is used as it is: migrations only add, so an older release keeps working during a
rolling deploy.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from asyncpg.pool import PoolConnectionProxy

__all__ = ["Connection", "Migration", "migrate", "quote_schema"]

#: A connection of its own or one borrowed from a pool: both run statements alike.
Connection = asyncpg.Connection | PoolConnectionProxy

logger = logging.getLogger("stream_gateway_postgres")
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of a component's schema: ``sql`` may hold ``{schema}`` (quoted)."""

    version: int
    name: str
    sql: str


def quote_schema(schema: str) -> str:
    """The schema name, checked (lower-case identifier) and double-quoted."""
    if not _SCHEMA.fullmatch(schema):
        raise ValueError(
            "schema must be 1-63 characters of a-z, 0-9 and '_', not starting with a digit"
        )
    return f'"{schema}"'


async def migrate(
    conn: Connection, schema: str, component: str, migrations: Sequence[Migration]
) -> list[int]:
    """Bring ``component`` in ``schema`` up to its last migration; return the versions
    applied now (empty when the database was up to date)."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(migrations) + 1)):
        raise ValueError(f"{component} migrations must be numbered 1, 2, ... in order")
    quoted = quote_schema(schema)
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"stream_gateway_postgres:{schema}",
        )
        # Only create what is missing: a role that uses an existing schema may lack
        # the privilege to create (even with IF NOT EXISTS).
        if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            await conn.execute(f"CREATE SCHEMA {quoted}")
        if await conn.fetchval("SELECT to_regclass($1)", f"{quoted}.schema_migrations") is None:
            await conn.execute(
                f"""CREATE TABLE {quoted}.schema_migrations (
                    component text NOT NULL,
                    version integer NOT NULL,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (component, version))"""
            )
        rows = await conn.fetch(
            f"SELECT version FROM {quoted}.schema_migrations WHERE component = $1", component
        )
        done = {row["version"] for row in rows}
        for migration in migrations:
            if migration.version in done:
                continue
            await conn.execute(migration.sql.format(schema=quoted))
            await conn.execute(
                f"INSERT INTO {quoted}.schema_migrations (component, version, name) "
                "VALUES ($1, $2, $3)",
                component,
                migration.version,
                migration.name,
            )
            applied_now.append(migration.version)
        unknown = sorted(v for v in done if v > len(migrations))
        if unknown:
            logger.warning(
                "%s.%s has migrations %s that this release does not know; using it as it is",
                schema, component, unknown,
            )  # fmt: skip
    if applied_now:
        logger.info("%s.%s: applied migrations %s", schema, component, applied_now)
    return applied_now
