"""Durable flow definitions (`durable_flow`) and step retry policies (`RetryPolicy`)."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from pydantic import ValidationError

from .._codec import Codec
from .._errors import InternalError, InvalidArgumentError
from .._json import JsonValue, dumps
from ..flow import validate_input

if TYPE_CHECKING:
    from .context import DurableContext

__all__ = ["DurableFlow", "RetryPolicy", "durable_flow"]

logger = logging.getLogger("stream_gateway.durable")

InT = TypeVar("InT")
OutT = TypeVar("OutT")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a step is retried: at most ``max_attempts`` attempts in all.

    Before attempt ``n + 1`` the execution sleeps ``min(backoff_max, backoff_base *
    2 ** (n - 1))`` seconds, spread by up to ``jitter`` (a fraction) either way, on a
    durable timer. ``timeout`` bounds each attempt (`DeadlineExceededError`).
    """

    max_attempts: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    jitter: float = 0.1
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_base < 0 or self.backoff_max < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("backoffs must be >= 0 and jitter within [0, 1]")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        delay = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt - 1))
        return max(0.0, delay * (1 + random.uniform(-self.jitter, self.jitter)))


NO_RETRY = RetryPolicy(max_attempts=1)


class DurableFlow(Generic[InT, OutT]):
    """A named ``async fn(input, ctx: DurableContext) -> output`` run by a `DurableEngine`.

    Input and output types are anything pydantic validates (``None``: any JSON).
    The input is validated when the flow is scheduled and stored as JSON; the output
    is validated and stored as JSON when the flow completes.

    With ``chunk`` (a type, or ``typing.Any`` for any JSON) the flow streams: it calls
    ``await ctx.send_chunk(chunk)`` and each execution gets a stream (its id is the
    execution's id) on the engine's stream manager; see docs/durable-streaming.md.
    """

    def __init__(
        self,
        fn: Callable[[InT, DurableContext], Awaitable[OutT]],
        *,
        name: str,
        input: Any = None,
        output: Any = None,
        chunk: Any = None,
        description: str | None = None,
    ) -> None:
        if not name or "/" in name:
            raise ValueError(f"flow name must be non-empty and contain no '/': {name!r}")
        self.fn = fn
        self.name = name
        self.description = description if description is not None else (fn.__doc__ or "")
        self._input = Codec(input)
        self._output = Codec(output)
        #: Whether the flow streams (it was given a ``chunk`` type).
        self.streaming = chunk is not None
        self.chunk_codec = Codec(chunk)

    def parse_input(self, data: JsonValue) -> InT:
        """Validate input; raises `InvalidArgumentError` with pydantic's errors."""
        return validate_input(self._input, data, self.name)  # type: ignore[no-any-return]

    def dump_input(self, value: Any) -> str:
        """Validated input as JSON text (what is stored)."""
        parsed = self.parse_input(value)
        if self._input.adapter is not None:
            return dumps(self._input.adapter.dump_python(parsed, mode="json")).decode()
        return dumps(parsed).decode()

    def encode_output(self, value: Any) -> str:
        """The output as JSON text, validated; a mismatch is the flow's bug (`InternalError`)."""
        try:
            return self._output.encode(value).decode()
        except (ValidationError, InvalidArgumentError):
            logger.exception("durable flow %r produced an invalid output", self.name)
            raise InternalError("Internal Error") from None

    def decode_output(self, raw: str) -> OutT:
        """A stored output back as the output type."""
        return self._output.decode(raw)  # type: ignore[no-any-return]

    def schemas(self) -> dict[str, Any]:
        """JSON Schemas of input and output (``None`` where any JSON goes)."""
        schemas = {"input": self._input.json_schema(), "output": self._output.json_schema()}
        if self.streaming:
            schemas["chunk"] = self.chunk_codec.json_schema()
        return schemas

    def __repr__(self) -> str:
        return f"DurableFlow({self.name!r})"


@overload
def durable_flow(
    name: Callable[[InT, DurableContext], Awaitable[OutT]],
) -> DurableFlow[InT, OutT]: ...


@overload
def durable_flow(
    name: str | None = None,
    *,
    input: Any = None,
    output: Any = None,
    chunk: Any = None,
    description: str | None = None,
) -> Callable[[Callable[[InT, DurableContext], Awaitable[OutT]]], DurableFlow[InT, OutT]]: ...


def durable_flow(
    name: Any = None,
    *,
    input: Any = None,
    output: Any = None,
    chunk: Any = None,
    description: str | None = None,
) -> Any:
    """Decorate ``async def fn(input, ctx: DurableContext)`` into a `DurableFlow`.

    >>> @durable_flow(input=str, output=str)
    ... async def greet(name: str, ctx: DurableContext) -> str:
    ...     await ctx.sleep("pause", 1.0)
    ...     return await ctx.run("greet", lambda: f"hello {name}")
    """
    if callable(name):
        return DurableFlow(name, name=name.__name__)

    def wrap(fn: Callable[[InT, DurableContext], Awaitable[OutT]]) -> DurableFlow[InT, OutT]:
        return DurableFlow(
            fn,
            name=name or fn.__name__,
            input=input,
            output=output,
            chunk=chunk,
            description=description,
        )

    return wrap
