"""Helpers shared by the plugin's tests: a request log, a site, collecting events."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from stream_gateway.streams import ChunkEvent, StreamEvent, StreamManager
from stream_gateway_rtdb import RtdbStreamManager
from stream_gateway_rtdb.testing import StandinServer

KEEPALIVE = 1.0  # the private stand-ins' keep-alive interval, seconds

MakeManager = Callable[..., AbstractAsyncContextManager[RtdbStreamManager]]


@dataclass
class RequestLog:
    """Every request a client sent, as ``(method, path, params)``."""

    entries: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    async def hook(self, request: httpx.Request) -> None:
        self.entries.append((request.method, request.url.path, dict(request.url.params)))

    def writes(self, under: str = "") -> list[tuple[str, str]]:
        return [
            (method, path)
            for method, path, _ in self.entries
            if method in ("PUT", "PATCH", "POST", "DELETE") and under in path
        ]

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(event_hooks={"request": [self.hook]})


@dataclass
class Site:
    """A stand-in and one namespace on it: what a test's managers share."""

    server: StandinServer
    namespace: str

    @property
    def url(self) -> str:
        return self.server.database_url(self.namespace)

    async def dump(self, path: str = "") -> Any:
        return await self.server.dump(self.namespace, path)


def new_namespace() -> str:
    return f"sg-rtdb-{secrets.token_hex(5)}"


def manager_factory(url: str, **defaults: Any) -> MakeManager:
    @asynccontextmanager
    async def make(**options: Any) -> AsyncIterator[RtdbStreamManager]:
        async with RtdbStreamManager(url, **{**defaults, **options}) as manager:
            yield manager

    return make


async def collect(
    manager: StreamManager, stream_id: str, from_offset: int = 0, within: float = 60
) -> list[StreamEvent]:
    with anyio.fail_after(within):
        return [e async for e in manager.subscribe(stream_id, from_offset)]


def chunks_of(events: list[StreamEvent]) -> list[tuple[int, Any]]:
    return [(e.offset, e.data) for e in events if isinstance(e, ChunkEvent)]


class FakeCredential:
    """Hands out ``token-1``, ``token-2``, ... each living ``lifetime`` seconds."""

    def __init__(self, lifetime: float = 3600.0) -> None:
        self.lifetime = lifetime
        self.calls = 0

    def get_access_token(self) -> Any:
        self.calls += 1
        expiry = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=self.lifetime)
        return type("Info", (), {"access_token": f"token-{self.calls}", "expiry": expiry})()
