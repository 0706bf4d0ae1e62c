"""A real uvicorn server, in the test's event loop, serving the test flows app."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from stream_gateway import StreamManager
from tests.backends import BACKENDS, BackendHarness
from tests.servers.flows_app import build_app


@asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    sock = config.bind_socket()
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
                await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True


@dataclass
class Live:
    """A running test app: its URL, its manager (if any) and an HTTP client."""

    url: str
    manager: StreamManager | None
    http: httpx.AsyncClient

    def flow(self, name: str) -> str:
        return f"{self.url}/flows/{name}"


def gateway_backends() -> list[str]:
    wanted = os.environ.get("GATEWAY_BACKENDS", "memory,sqlite")
    return [n for n in wanted.split(",") if n]


StartLive = Callable[..., AbstractAsyncContextManager[Live]]


@pytest.fixture(params=gateway_backends())
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[BackendHarness]:
    async with BACKENDS[request.param]() as h:  # type: ignore[attr-defined]
        yield h


@pytest.fixture
def start_live(harness: BackendHarness) -> StartLive:
    """Start the test app; ``manager=False`` serves it without a stream manager."""

    @asynccontextmanager
    async def start(manager: bool = True, **options: Any) -> AsyncIterator[Live]:
        keep_alive = options.pop("keep_alive", 15.0)
        stream_manager = StreamManager(harness.new_storage(), **options) if manager else None
        app = build_app(stream_manager, keep_alive=keep_alive)
        async with serve(app) as url, httpx.AsyncClient(timeout=30) as http:
            yield Live(url, stream_manager, http)

    return start


@pytest.fixture
async def live(start_live: StartLive) -> AsyncIterator[Live]:
    async with start_live() as running:
        yield running
