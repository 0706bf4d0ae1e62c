"""Fixtures: the shared redis-server with a key prefix per test, and private servers.

Tests that only read and write use the shared server (``REDIS_URL`` when set, as under
``make test``, else one started for the session), each under a key prefix of its own.
Tests that stop, kill or reconfigure a server get a private one in their own directory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from stream_gateway_redis.testing import RedisServer, shared_server, wipe

from redis_support import Site, new_prefix


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    """The shared server, a fresh key prefix (wiped afterwards)."""
    server = shared_server()
    prefix = new_prefix()
    yield Site(server.url, prefix)
    await wipe(server.url, prefix)


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (AOF ``everysec``), its data in ``tmp_path``."""
    server = RedisServer(directory=tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    yield server
    server.cleanup()
