"""Fixtures for durable flows: stores by backend, and engines with workers that can be
stopped and started again on the same data (a restart)."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from stream_gateway.durable import (
    DurableEngine,
    DurableFlow,
    DurableStore,
    InMemoryDurableStore,
    SqliteDurableStore,
    Worker,
)

NewStore = Callable[[], DurableStore]


@pytest.fixture(params=["memory", "sqlite"])
def new_store(request: pytest.FixtureRequest) -> Iterable[NewStore]:
    """Makes stores that all see the same data, as processes sharing a file would."""
    if request.param == "memory":
        shared = InMemoryDurableStore()
        yield lambda: shared
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "durable.sqlite3"
        yield lambda: SqliteDurableStore(path)


Running = AbstractAsyncContextManager[tuple[DurableEngine, Worker]]
StartEngine = Callable[..., Running]


@pytest.fixture
def start(new_store: NewStore) -> StartEngine:
    """``async with start(flows) as (engine, worker)``: a fresh engine and worker on the
    shared data; leaving the block stops both (what a process restart does)."""

    @asynccontextmanager
    async def run(
        flows: Iterable[DurableFlow[Any, Any]], **worker_options: Any
    ) -> AsyncIterator[tuple[DurableEngine, Worker]]:
        options: dict[str, Any] = {"poll_interval": 0.02, "lease": 5.0, "grace": 1.0}
        options.update(worker_options)
        engine = DurableEngine(flows, store=new_store(), poll_interval=0.02)
        async with engine, engine.worker(**options) as worker:
            yield engine, worker

    return run
