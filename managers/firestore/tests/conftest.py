"""Fixtures: the emulator (shared per session), a fresh project per test, storages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from stream_gateway_firestore import FirestoreStreamStorage
from stream_gateway_firestore.testing import FirestoreEmulator, shared_emulator


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def emulator() -> FirestoreEmulator:
    return shared_emulator()


@pytest.fixture
async def project(emulator: FirestoreEmulator) -> AsyncIterator[str]:
    await emulator.awipe()
    yield emulator.project
    await emulator.awipe()


@pytest.fixture
def make_storage(project: str) -> Callable[..., FirestoreStreamStorage]:
    """A fresh storage on the test's data, as another process would have."""

    def make(**options: Any) -> FirestoreStreamStorage:
        return FirestoreStreamStorage(project=project, **options)

    return make
