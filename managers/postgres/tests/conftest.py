"""Fixtures: the shared server (``POSTGRES_DSN`` or one started here), a schema per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from stream_gateway_postgres import PostgresStreamStorage
from stream_gateway_postgres.testing import PostgresServer, drop_schema, new_schema, shared_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def server() -> PostgresServer:
    return shared_server()


@pytest.fixture
async def schema(server: PostgresServer) -> AsyncIterator[str]:
    name = new_schema()
    yield name
    await drop_schema(server.dsn, name)


@pytest.fixture
def make_storage(server: PostgresServer, schema: str) -> Callable[..., PostgresStreamStorage]:
    """A fresh storage on the test's schema, as another process would have."""

    def make(**options: Any) -> PostgresStreamStorage:
        return PostgresStreamStorage(server.dsn, schema=schema, **options)

    return make
