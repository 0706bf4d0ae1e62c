"""Fixtures for durable flows: stores by backend, and engines with workers that can be
stopped and started again on the same data (a restart)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from stream_gateway.durable import (
    DurableEngine,
    DurableFlow,
    DurableStore,
    Worker,
)

from .backends import DURABLE_BACKENDS, DurableHarness, backends_for
from .procs import kill_leftover_workers

NewStore = Callable[[], DurableStore]


@pytest.fixture(autouse=True)
def _no_leftover_worker_processes() -> Iterator[None]:
    """A test that fails half-way leaves no worker process running."""
    yield
    kill_leftover_workers()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Runs each test that uses a store against the stores its module is for (see
    `tests.durable.backends`)."""
    if "durable_harness" in metafunc.fixturenames:
        names = backends_for(metafunc.module.__name__)
        metafunc.parametrize("durable_harness", names, indirect=True)


@pytest.fixture
async def durable_harness(request: pytest.FixtureRequest) -> AsyncIterator[DurableHarness]:
    async with DURABLE_BACKENDS[request.param]() as harness:
        yield harness


@pytest.fixture
def new_store(durable_harness: DurableHarness) -> NewStore:
    """Makes stores that all see the same data, as processes sharing a database do."""
    return durable_harness.new_store


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
