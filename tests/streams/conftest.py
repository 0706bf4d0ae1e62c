"""The stream contract suites' fixtures: one backend per parameter (`tests.backends`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from stream_gateway.streams import StreamManager
from tests.backends import BACKENDS, BackendHarness, selected_backends
from tests.streams.support import MakeManager


@pytest.fixture(params=selected_backends())
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[BackendHarness]:
    async with BACKENDS[request.param]() as harness:  # type: ignore[attr-defined]
        yield harness


@pytest.fixture
def make_manager(backend: BackendHarness) -> MakeManager:
    @asynccontextmanager
    async def make(**options: Any) -> AsyncIterator[StreamManager]:
        async with StreamManager(backend.new_storage(), **options) as manager:
            yield manager

    return make


@pytest.fixture
async def manager(make_manager: MakeManager) -> AsyncIterator[StreamManager]:
    async with make_manager(flush_interval=0.01) as m:
        yield m
