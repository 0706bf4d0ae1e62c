"""Flows: named async functions with validated input, output and chunks."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar, overload

import anyio
from pydantic import BaseModel, ValidationError

from ._codec import Codec
from ._errors import InternalError, InvalidArgumentError
from ._json import JsonValue, dumps, loads

__all__ = [
    "ChunkSink",
    "OnChunk",
    "ContextProvider",
    "ConversationPolicy",
    "Flow",
    "FlowContext",
    "RequestContext",
    "StopRequest",
    "flow",
]

logger = logging.getLogger("stream_gateway.flows")

InT = TypeVar("InT")
OutT = TypeVar("OutT")
ChunkT = TypeVar("ChunkT")

ChunkSink = Callable[[bytes], Awaitable[None]]
"""Where a running flow's chunks go, as compact JSON bytes."""

OnChunk = Callable[[Any], Awaitable[None] | None]
"""Receives an in-process run's chunks, decoded from JSON; sync or async."""

ConversationPolicy = Literal["reject", "interrupt", "enqueue"]
"""What a start in a conversation that has an active run does."""


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


class StopRequest:
    """Whether the caller asked the flow to finish now with what it has.

    Set by ``POST .../streams/{id}/stop`` (or `StreamManager.stop`). Poll it
    (``if ctx.stop_requested:`` or ``ctx.stop_requested.is_set()``) between chunks, or
    ``await ctx.stop_requested.wait()`` in a task. The flow then returns its partial
    result, and its stream ends ``done`` with it; a flow that does not return within
    the gateway's ``stop_grace`` seconds is cancelled.
    """

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: anyio.Event | None = None  # made when first awaited, in the loop

    def is_set(self) -> bool:
        """True once a stop was requested."""
        return self._set

    def __bool__(self) -> bool:
        return self._set

    async def wait(self) -> None:
        """Return once a stop is requested (at once if it was)."""
        if self._set:
            return
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()

    def set(self) -> None:
        """Request the stop (the runner calls this; idempotent)."""
        self._set = True
        if self._event is not None:
            self._event.set()


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
        #: Set when the caller asks the flow to finish now (see `StopRequest`).
        self.stop_requested = StopRequest()

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

        Validated even for non-streaming calls (which drop it then), so a chunk that
        does not fit fails every call alike: `InternalError`, with the cause logged.
        Raises `ResourceExhaustedError` when a limit is exceeded and
        `StreamClosedError` after the flow's stream has ended.
        """
        raw = self.flow.encode_chunk(chunk)
        if self._sink is not None:
            await self._sink(raw)


def validate_input(codec: Codec, data: JsonValue, flow_name: str) -> Any:
    """``data`` validated as a flow's input (as is when there is no type).

    Raises `InvalidArgumentError` carrying pydantic's errors (without the input and
    the exception objects, so the details are JSON and echo nothing back).
    """
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
        conversation_policy: ConversationPolicy = "reject",
        stream_ttl: float | None = None,
    ) -> None:
        if not name or "/" in name:
            raise ValueError(f"flow name must be non-empty and contain no '/': {name!r}")
        check_flow_function(fn, name)
        self.fn = fn
        self.name = name
        self.description = description if description is not None else (fn.__doc__ or "")
        if conversation_policy not in ("reject", "interrupt", "enqueue"):
            raise ValueError(
                "conversation_policy must be 'reject', 'interrupt' or 'enqueue',"
                f" not {conversation_policy!r}"
            )
        #: What a start in a conversation with an active run does (see docs/conversations.md).
        self.conversation_policy: ConversationPolicy = conversation_policy
        if stream_ttl is not None and not stream_ttl > 0:
            raise ValueError(f"stream_ttl must be a positive number of seconds, not {stream_ttl!r}")
        #: Seconds its streams stay readable after they end (None: the manager's ``ttl``;
        #: a start may ask for another with the ``x-stream-ttl`` header).
        self.stream_ttl = stream_ttl
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
        return self._validate(self._output, result, "output")[1]

    def encode_chunk(self, chunk: ChunkT) -> bytes:
        """A chunk as compact JSON, validated against the chunk type."""
        return self._validate(self._chunk, chunk, "chunk")[1]

    def _validate(self, codec: Codec, value: Any, what: str) -> tuple[Any, bytes]:
        """``value`` validated by ``codec`` (as is without a type) and its JSON."""
        try:
            if codec.adapter is None:
                return value, codec.encode(value)
            value = codec.adapter.validate_python(value)
            return value, dumps(codec.adapter.dump_python(value, mode="json"))
        except (ValidationError, InvalidArgumentError) as exc:
            logger.exception("flow %r produced an invalid %s", self.name, what)
            raise InternalError("Internal Error") from exc

    def schemas(self) -> dict[str, Any]:
        """JSON Schemas of input, output and chunk (``None`` where any JSON goes)."""

        return {
            "input": self._input.json_schema(),
            "output": self._output.json_schema(),
            "chunk": self._chunk.json_schema(),
        }

    async def __call__(
        self,
        input: Any,
        *,
        on_chunk: OnChunk | None = None,
        request: RequestContext | None = None,
    ) -> OutT:
        """Run the flow in-process (handy in tests), validated as a served call is.

        ``input`` is validated against the input type (a model instance or its dict
        both do) and must be JSON when the type is "any JSON": `InvalidArgumentError`
        otherwise. Each chunk is validated and encoded as for a client, then handed
        to ``on_chunk`` decoded from JSON (``on_chunk`` may be sync or async). The
        output is validated against the output type and returned as validated (a
        model instance for a model type). A chunk or output that does not fit raises
        `InternalError`, as a served call answers; other exceptions propagate as the
        flow raised them (a served call answers ``INTERNAL``).
        """
        if not self._input.typed:
            self._validate_json_input(input)
        value = self.parse_input(input)
        sink: ChunkSink | None = None
        if on_chunk is not None:
            callback = on_chunk

            async def deliver(raw: bytes) -> None:
                delivered = callback(loads(raw))
                if inspect.isawaitable(delivered):
                    await delivered

            sink = deliver
        result = await self.fn(value, FlowContext(self, sink=sink, request=request))
        return self._validate(self._output, result, "output")[0]  # type: ignore[no-any-return]

    def _validate_json_input(self, input: Any) -> None:
        try:
            dumps(input.model_dump(mode="json") if isinstance(input, BaseModel) else input)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(
                f"invalid input for flow {self.name!r}: {exc.message}"
            ) from None

    def __repr__(self) -> str:
        return f"Flow({self.name!r})"


def check_flow_function(fn: Any, name: str) -> None:
    """Raise `TypeError`, saying what to write, unless ``fn`` is ``async def fn(input, ctx)``.

    Checked when a flow is defined, so a wrong shape fails at import, not as an
    ``INTERNAL`` error on every call.
    """
    expected = f"a flow is `async def {name}(input, ctx)` returning its output"
    if inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"flow {name!r} is an async generator, but {expected}: send each chunk with "
            "`await ctx.send_chunk(chunk)` and `return` the output (an async generator "
            "cannot return a value)"
        )
    if not _is_async(fn):
        what = "a generator" if inspect.isgeneratorfunction(fn) else "not an `async def`"
        raise TypeError(
            f"flow {name!r} is {what}, but {expected}; run blocking work inside it with "
            "`await anyio.to_thread.run_sync(...)`"
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a callable that hides its signature: trust it
        return
    try:
        signature.bind(None, None)
    except TypeError:
        raise TypeError(
            f"flow {name!r} takes {signature}, but {expected}: it is called with the "
            "input and a `FlowContext` (name it `_ctx` if the flow does not use it)"
        ) from None


def _is_async(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    # An object whose __call__ is `async def` (functions and methods were checked).
    return (
        callable(fn)
        and not inspect.isroutine(fn)
        and inspect.iscoroutinefunction(type(fn).__call__)
    )


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
    conversation_policy: ConversationPolicy = "reject",
    stream_ttl: float | None = None,
) -> Callable[[Callable[[InT, FlowContext[ChunkT]], Awaitable[OutT]]], Flow[InT, OutT, ChunkT]]: ...


def flow(
    name: Any = None,
    *,
    input: Any = None,
    output: Any = None,
    chunk: Any = None,
    description: str | None = None,
    conversation_policy: ConversationPolicy = "reject",
    stream_ttl: float | None = None,
) -> Any:
    """Decorate ``async def fn(input, ctx)`` into a `Flow`; the name defaults to ``fn``'s.

    ``conversation_policy``: what a start naming a conversation that has an active
    run does: ``"reject"`` (409), ``"interrupt"`` (cancel the active run, then
    start) or ``"enqueue"`` (start once the active run has ended). ``stream_ttl``:
    seconds its streams stay readable after they end, within the stream manager's
    ``max_ttl`` (default: the manager's ``ttl``).

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
            conversation_policy=conversation_policy,
            stream_ttl=stream_ttl,
        )

    return wrap
