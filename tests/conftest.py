"""Shared fixtures: the anyio backend and the per-backend storage factories."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
