"""Backends the contract suites run against, by name.

Each entry makes a `BackendHarness`: a factory of fresh storages that all see the same
data (as two processes would), and a way to wipe it. A backend whose server is
missing fails its tests loudly; nothing here skips.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from stream_gateway.streams import InMemoryStreamStorage, StreamStorage


@dataclass
class BackendHarness:
    """``new_storage()`` returns a storage on the same data as every other one made here.

    ``location`` tells another process where that data is (``--db`` of the test flows
    app): a SQLite path, a Firestore project, an RTDB URL, a Redis URL with its key
    prefix after ``#``, a Postgres DSN; empty for memory.
    """

    name: str
    new_storage: Callable[[], StreamStorage]
    location: str = ""


@asynccontextmanager
async def memory_backend() -> AsyncIterator[BackendHarness]:
    shared = InMemoryStreamStorage()
    yield BackendHarness("memory", lambda: shared)


@asynccontextmanager
async def sqlite_backend() -> AsyncIterator[BackendHarness]:
    from stream_gateway.streams.sqlite import SqliteStreamStorage

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "streams.db"
        yield BackendHarness("sqlite", lambda: SqliteStreamStorage(path), str(path))


@asynccontextmanager
async def firestore_backend() -> AsyncIterator[BackendHarness]:
    """The Firestore emulator: the one at ``FIRESTORE_EMULATOR_HOST``, else one started
    once per test process (a missing emulator fails loudly). Wiped around each test."""
    from stream_gateway_firestore import FirestoreStreamStorage
    from stream_gateway_firestore.testing import shared_emulator

    emulator = shared_emulator()
    await emulator.awipe()
    try:
        yield BackendHarness(
            "firestore", lambda: FirestoreStreamStorage(project=emulator.project), emulator.project
        )
    finally:
        await emulator.awipe()


@asynccontextmanager
async def rtdb_backend() -> AsyncIterator[BackendHarness]:
    """The RTDB stand-in: the one at ``RTDB_STANDIN_URL``, else one started once per test
    process. Each test gets a namespace of its own, deleted around the test."""
    import secrets

    from stream_gateway_rtdb import RtdbStreamStorage
    from stream_gateway_rtdb.testing import shared_standin

    standin = shared_standin()
    namespace = f"sg-test-{os.getpid()}-{secrets.token_hex(4)}"
    await standin.wipe(namespace)
    try:
        url = standin.database_url(namespace)
        yield BackendHarness("rtdb", lambda: RtdbStreamStorage(url), url)
    finally:
        await standin.wipe(namespace)


@asynccontextmanager
async def redis_backend() -> AsyncIterator[BackendHarness]:
    """The redis-server at ``REDIS_URL``, else one started once per test process (a
    missing redis-server fails loudly). Each test gets a key prefix of its own, wiped
    around the test; ``location`` is ``<url>#<prefix>``."""
    import secrets

    from stream_gateway_redis import RedisStreamStorage
    from stream_gateway_redis.testing import shared_server, wipe

    server = shared_server()
    prefix = f"sg-test-{os.getpid()}-{secrets.token_hex(4)}"
    await wipe(server.url, prefix)
    try:
        yield BackendHarness(
            "redis",
            lambda: RedisStreamStorage(server.url, prefix=prefix),
            f"{server.url}#{prefix}",
        )
    finally:
        await wipe(server.url, prefix)


@asynccontextmanager
async def postgres_backend() -> AsyncIterator[BackendHarness]:
    """The PostgreSQL at ``POSTGRES_DSN``, else one started once per test process (a
    missing server fails loudly). Each test gets a schema of its own, dropped after.
    ``location`` is the DSN with ``#schema=<name>`` appended."""
    from stream_gateway_postgres import PostgresStreamStorage
    from stream_gateway_postgres.testing import drop_schema, new_schema, shared_server

    server = shared_server()
    schema = new_schema()
    try:
        yield BackendHarness(
            "postgres",
            lambda: PostgresStreamStorage(server.dsn, schema=schema, max_connections=4),
            f"{server.dsn}#schema={schema}",
        )
    finally:
        await drop_schema(server.dsn, schema)


BACKENDS: dict[str, Callable[[], object]] = {
    "memory": memory_backend,
    "sqlite": sqlite_backend,
    "firestore": firestore_backend,
    "rtdb": rtdb_backend,
    "redis": redis_backend,
    "postgres": postgres_backend,
}


def selected_backends() -> list[str]:
    """All backends, or those named in ``STREAM_BACKENDS`` (comma-separated)."""
    wanted = os.environ.get("STREAM_BACKENDS")
    if not wanted:
        return list(BACKENDS)
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = set(names) - set(BACKENDS)
    if unknown:
        raise RuntimeError(f"STREAM_BACKENDS names unknown backends: {sorted(unknown)}")
    return names
