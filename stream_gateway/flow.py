"""Flows: named async functions with validated input, output and chunks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, overload

from pydantic import TypeAdapter, ValidationError

from ._codec import Codec
from ._errors import InternalError, InvalidArgumentError
from ._json import JsonValue

__all__ = [
    "ChunkSink",
    "ContextProvider",
    "Flow",
    "FlowContext",
    "RequestContext",
    "flow",
]

logger = logging.getLogger("stream_gateway.flows")

InT = TypeVar("InT")
OutT = TypeVar("OutT")
ChunkT = TypeVar("ChunkT")

ChunkSink = Callable[[bytes], Awaitable[None]]
"""Where a running flow's chunks go, as compact JSON bytes."""


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is calling, as a context provider decided.

    ``principal`` identifies the caller (a user id, say); streams a caller starts are
    owned by it, and only the same principal may reconnect to them. ``data`` is
    handed to the flow as ``ctx.context``.
    """

    principal: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


class ContextProvider(Protocol):
    """Decides who is calling; run on every request, reconnects included.

    Called with the Starlette ``Request``. Raise `UnauthenticatedError` (401) or
    `PermissionDeniedError` (403) to reject; return a `RequestContext` to admit.
    """

    async def __call__(self, request: Any, /) -> RequestContext: ...


class FlowContext(Generic[ChunkT]):
    """What a running flow sees: a way to send chunks, and who called it."""

    def __init__(
        self,
        flow: Flow[Any, Any, ChunkT],
        *,
        sink: ChunkSink | None = None,
        request: RequestContext | None = None,
        stream_id: str | None = None,
    ) -> None:
        self.flow = flow
        self.stream_id = stream_id
        self.request = request or RequestContext()
        self._sink = sink

    @property
    def principal(self) -> str | None:
        """The caller's principal, if a context provider named one."""
        return self.request.principal

    @property
    def context(self) -> Mapping[str, Any]:
        """The data the context provider attached to the request."""
        return self.request.data

    @property
    def is_streaming(self) -> bool:
        """True when the caller receives chunks (False for a non-streaming call)."""
        return self._sink is not None

    async def send_chunk(self, chunk: ChunkT) -> None:
        """Validate the chunk against the flow's chunk type and send it.

        A no-op for non-streaming calls. Raises `ResourceExhaustedError` when a limit
        is exceeded and `StreamClosedError` after the flow's stream has ended.
        """
        if self._sink is None:
            return
        await self._sink(self.flow.encode_chunk(chunk))


def validate_input(codec: Codec | TypeAdapter[Any] | None, data: JsonValue, flow_name: str) -> Any:
    """``data`` validated as a flow's input (as is when there is no type).

    Raises `InvalidArgumentError` carrying pydantic's errors (without the input and
    the exception objects, so the details are JSON and echo nothing back).
    """
    if codec is None:
        return data
    if not isinstance(codec, Codec):
        wrapped = Codec()
        wrapped.adapter = codec
        codec = wrapped
    return codec.validate(data, f"input for flow {flow_name!r}")


class Flow(Generic[InT, OutT, ChunkT]):
    """A named async function ``fn(input, ctx) -> output`` with typed input, output, chunks.

    Types are anything pydantic validates (models, ``str``, ``dict[str, int]`` ...);
    ``None`` means "any JSON". Their JSON Schemas are available for clients.
    """

    def __init__(
        self,
        fn: Callable[[InT, FlowContext[ChunkT]], Awaitable[OutT]],
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
        self._chunk = Codec(chunk)

    def parse_input(self, data: JsonValue) -> InT:
        """Validate wire input; raises `InvalidArgumentError` with pydantic's errors."""
        return validate_input(self._input, data, self.name)  # type: ignore[no-any-return]

    def encode_output(self, result: OutT) -> bytes:
        """The result as compact JSON, validated against the output type.

        A result that does not fit is the flow's bug: logged, and `InternalError`.
        """
        return self._encode(self._output, result, "output")

    def encode_chunk(self, chunk: ChunkT) -> bytes:
        """A chunk as compact JSON, validated against the chunk type."""
        return self._encode(self._chunk, chunk, "chunk")

    def _encode(self, codec: Codec, value: Any, what: str) -> bytes:
        try:
            return codec.encode(value)
        except (ValidationError, InvalidArgumentError):
            logger.exception("flow %r produced an invalid %s", self.name, what)
            raise InternalError("Internal Error") from None

    def schemas(self) -> dict[str, Any]:
        """JSON Schemas of input, output and chunk (``None`` where any JSON goes)."""

        return {
            "input": self._input.json_schema(),
            "output": self._output.json_schema(),
            "chunk": self._chunk.json_schema(),
        }

    async def __call__(
        self,
        input: InT,
        *,
        on_chunk: Callable[[Any], Awaitable[None]] | None = None,
        request: RequestContext | None = None,
    ) -> OutT:
        """Run the flow in-process (handy in tests). Chunks go to ``on_chunk`` decoded."""
        sink: ChunkSink | None = None
        if on_chunk is not None:
            from ._json import loads

            async def decode(raw: bytes) -> None:
                await on_chunk(loads(raw))

            sink = decode
        return await self.fn(input, FlowContext(self, sink=sink, request=request))

    def __repr__(self) -> str:
        return f"Flow({self.name!r})"


@overload
def flow(
    name: Callable[[InT, FlowContext[ChunkT]], Awaitable[OutT]],
) -> Flow[InT, OutT, ChunkT]: ...


@overload
def flow(
    name: str | None = None,
    *,
    input: Any = None,
    output: Any = None,
    chunk: Any = None,
    description: str | None = None,
) -> Callable[[Callable[[InT, FlowContext[ChunkT]], Awaitable[OutT]]], Flow[InT, OutT, ChunkT]]: ...


def flow(
    name: Any = None,
    *,
    input: Any = None,
    output: Any = None,
    chunk: Any = None,
    description: str | None = None,
) -> Any:
    """Decorate ``async def fn(input, ctx)`` into a `Flow`; the name defaults to ``fn``'s.

    >>> @flow(input=str, output=str, chunk=str)
    ... async def shout(text: str, ctx: FlowContext[str]) -> str:
    ...     await ctx.send_chunk(text.upper())
    ...     return text.upper()
    """
    if callable(name):
        return Flow(name, name=name.__name__)

    def wrap(fn: Callable[[InT, FlowContext[ChunkT]], Awaitable[OutT]]) -> Flow[InT, OutT, ChunkT]:
        return Flow(
            fn,
            name=name or fn.__name__,
            input=input,
            output=output,
            chunk=chunk,
            description=description,
        )

    return wrap
