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
    """``new_storage()`` returns a storage on the same data as every other one made here."""

    name: str
    new_storage: Callable[[], StreamStorage]


@asynccontextmanager
async def memory_backend() -> AsyncIterator[BackendHarness]:
    shared = InMemoryStreamStorage()
    yield BackendHarness("memory", lambda: shared)


@asynccontextmanager
async def sqlite_backend() -> AsyncIterator[BackendHarness]:
    from stream_gateway.streams.sqlite import SqliteStreamStorage

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "streams.db"
        yield BackendHarness("sqlite", lambda: SqliteStreamStorage(path))


BACKENDS: dict[str, Callable[[], object]] = {
    "memory": memory_backend,
    "sqlite": sqlite_backend,
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
