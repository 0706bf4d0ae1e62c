"""Fixtures: stand-in servers, a namespace per test, managers and a request log.

Tests that only read and write use the shared stand-in (``RTDB_STANDIN_URL`` when set,
as under ``make test``, else one started for the session), each in a namespace of its
own. Tests that change the server as a whole (rules, revoked tokens, dropped streams,
request counters, restarts) get a private stand-in, so that they never disturb another
run sharing the same server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from stream_gateway_rtdb.testing import StandinServer, shared_standin

from rtdb_support import KEEPALIVE, Site, new_namespace


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def private_server() -> Iterator[StandinServer]:
    server = StandinServer(keepalive=KEEPALIVE)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    """The shared stand-in, a fresh namespace."""
    server = shared_standin()
    namespace = new_namespace()
    yield Site(server, namespace)
    await server.wipe(namespace)


@pytest.fixture
async def private_site(private_server: StandinServer) -> AsyncIterator[Site]:
    """The session's private stand-in, reset (data, rules, counters) for this test."""
    await private_server.reset()
    yield Site(private_server, new_namespace())
    await private_server.reset()


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[StandinServer]:
    """A stand-in of this test's own, saving its data so that it survives a restart."""
    server = StandinServer(data_file=tmp_path / "rtdb.json", keepalive=KEEPALIVE)
    server.start()
    yield server
    server.stop()
