"""Helpers for the storage's calls: tracking those in flight, and running several at once."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import anyio

__all__ = ["gather", "operation"]


class Tracked(Protocol):
    _closed: bool
    _in_flight: int
    _drained: anyio.Event | None  # set by the last call in flight once closing


T = TypeVar("T")
S = TypeVar("S", bound=Tracked)
P = ParamSpec("P")
R = TypeVar("R")


def operation(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """Count the call as in flight, so that ``close`` can let it finish first; refuse it
    once the storage is closed."""

    @functools.wraps(method)
    async def counted(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if self._closed:
            raise RuntimeError("the storage is closed")
        self._in_flight += 1
        try:
            return await method(self, *args, **kwargs)
        finally:
            self._in_flight -= 1
            if not self._in_flight and self._drained is not None:
                self._drained.set()

    return counted


async def gather(calls: Sequence[Callable[[], Awaitable[T]]], limit: int = 16) -> list[T]:
    """Run ``calls`` at once, at most ``limit`` at a time; their results in order.

    The first error is raised as is (not wrapped in an exception group, so that the
    manager still sees an `UnavailableError` and retries); the other calls are cancelled.
    """
    results: list[Any] = [None] * len(calls)
    errors: list[Exception] = []
    limiter = anyio.CapacityLimiter(limit)

    async def run(index: int, scope: anyio.CancelScope) -> None:
        try:
            async with limiter:
                results[index] = await calls[index]()
        except Exception as exc:
            errors.append(exc)
            scope.cancel()

    async with anyio.create_task_group() as tg:
        for index in range(len(calls)):
            tg.start_soon(run, index, tg.cancel_scope)
    if errors:
        raise errors[0]
    return results
