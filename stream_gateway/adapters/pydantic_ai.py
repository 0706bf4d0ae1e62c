"""Serve a Pydantic AI `Agent` as a flow whose chunks are typed events.

Install with ``pip install 'stream-gateway[pydantic-ai]'``.

>>> from pydantic_ai import Agent                                   # doctest: +SKIP
>>> chat = agent_flow(Agent("openai:gpt-4o"), name="chat")          # doctest: +SKIP
>>> app = Gateway([chat], stream_manager=SqliteStreamManager("streams.db"))  # doctest: +SKIP

The flow's input is ``{"prompt": "..."}``; its result is the agent's output (as JSON);
its chunks are dicts shaped like the AI SDK's UI-message stream parts, so a reader
can rebuild the message as the agent produced it:

- ``{"type": "text-start" | "text-end", "id"}``, ``{"type": "text-delta", "id", "delta"}``
- ``{"type": "reasoning-start" | "reasoning-end", "id"}``,
  ``{"type": "reasoning-delta", "id", "delta"}``
- ``{"type": "tool-input-available", "toolCallId", "toolName", "input"}``: the agent
  calls a tool with these arguments;
- ``{"type": "tool-output-available", "toolCallId", "output"}``: what the tool returned
  a call that did not succeed (failed, denied, retried...) is sent as
  ``{"type": "tool-output-error", "toolCallId", "errorText"}``.

Part ids are unique within a run (``text-0``, ``reasoning-1``, ...). Served by a
gateway with a stream manager, the run is detached from the request and its stream
resumable by offset like any flow's. `durable_agent_flow` is the durable variant: each
model request and each tool call a step of a durable execution's journal, so a run
cut by a crash continues after its last completed step (``docs/agents.md``).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic_ai import Agent, ModelRetry, RunContext, ToolFailed
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import (
    AgentStreamEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelResponse,
    PartDeltaEvent,
    PartEndEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
)
from pydantic_ai.models import (
    CompletedStreamedResponse,
    Model,
    ModelRequestParameters,
    StreamedResponse,
)
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tool_manager import ToolManager
from pydantic_ai.toolsets import AbstractToolset, ToolsetTool, WrapperToolset
from pydantic_core import to_jsonable_python

from ..durable import DEFAULT_RETRY, DurableContext, DurableFlow, RetryPolicy
from ..flow import ConversationPolicy, Flow, FlowContext
from ._parts import AgentPrompt
from ._stop import unless_stopped

__all__ = ["AgentPrompt", "EventParts", "agent_flow", "durable_agent_flow"]


class EventParts:
    """Turns one run's Pydantic AI events into UI-message stream parts (dicts).

    Keeps the part ids of the model response being streamed, so that deltas name the
    part they extend; ids are unique within the run.
    """

    def __init__(self) -> None:
        self._next_id = 0
        self._open: dict[int, tuple[str, str]] = {}  # event index -> (kind, part id)

    @property
    def next_id(self) -> int:
        """The number the next text or reasoning part's id gets."""
        return self._next_id

    def restart(self, next_id: int) -> None:
        """Forget the open parts and number the next part ``next_id`` (a model
        response that starts over, or one replayed from a journal)."""
        self._next_id = next_id
        self._open.clear()

    def parts(self, event: AgentStreamEvent | Any) -> list[dict[str, Any]]:
        """The parts for ``event`` (none for events that carry nothing to show)."""
        if isinstance(event, PartStartEvent):
            return self._start(event.index, event.part)
        if isinstance(event, PartDeltaEvent):
            opened = self._open.get(event.index)
            delta = event.delta
            if opened is None:
                return []
            kind, part_id = opened
            if isinstance(delta, TextPartDelta) and delta.content_delta:
                return [{"type": "text-delta", "id": part_id, "delta": delta.content_delta}]
            if isinstance(delta, ThinkingPartDelta) and delta.content_delta:
                return [{"type": "reasoning-delta", "id": part_id, "delta": delta.content_delta}]
            return []
        if isinstance(event, PartEndEvent):
            opened = self._open.pop(event.index, None)
            if opened is None:
                return []
            kind, part_id = opened
            return [{"type": f"{kind}-end", "id": part_id}]
        if isinstance(event, FunctionToolCallEvent):
            part = event.part
            return [
                {
                    "type": "tool-input-available",
                    "toolCallId": part.tool_call_id,
                    "toolName": part.tool_name,
                    "input": part.args_as_dict(),
                }
            ]
        if isinstance(event, FunctionToolResultEvent):
            result = event.part
            if result.outcome != "success":
                return [
                    {
                        "type": "tool-output-error",
                        "toolCallId": result.tool_call_id,
                        "errorText": f"{result.outcome}: {result.model_response_str()}",
                    }
                ]
            return [
                {
                    "type": "tool-output-available",
                    "toolCallId": result.tool_call_id,
                    "output": to_jsonable_python(result.content, fallback=str),
                }
            ]
        return []

    def _start(self, index: int, part: Any) -> list[dict[str, Any]]:
        if isinstance(part, TextPart):
            kind, content = "text", part.content
        elif isinstance(part, ThinkingPart):
            kind, content = "reasoning", part.content
        else:
            return []  # tool calls are sent whole, once their arguments are complete
        part_id = f"{kind}-{self._next_id}"
        self._next_id += 1
        self._open[index] = (kind, part_id)
        parts: list[dict[str, Any]] = [{"type": f"{kind}-start", "id": part_id}]
        if content:
            parts.append({"type": f"{kind}-delta", "id": part_id, "delta": content})
        return parts


def agent_flow(
    agent: Agent[Any, Any],
    *,
    name: str | None = None,
    description: str | None = None,
    conversation_policy: ConversationPolicy = "reject",
) -> Flow[AgentPrompt, Any, dict[str, Any]]:
    """A flow that runs ``agent`` on ``{"prompt"}`` and streams its events as parts.

    ``name`` defaults to the agent's name. The flow's result is the agent's output
    made JSON-able (a pydantic output model becomes an object). When the stream's stop
    is requested the run is cancelled and the result is the text streamed so far.
    """
    flow_name = name or agent.name
    if not flow_name:
        raise ValueError("name the flow: agent_flow(agent, name='chat') (the agent has no name)")

    async def run(request: AgentPrompt, ctx: FlowContext[dict[str, Any]]) -> Any:
        parts = EventParts()
        answer: list[str] = []  # the text so far, the result of a stopped run

        async def events() -> Any:
            async with agent.run_stream_events(request.prompt) as stream:
                async for event in stream:
                    for part in parts.parts(event):
                        if part["type"] == "text-delta":
                            answer.append(part["delta"])
                        await ctx.send_chunk(part)
                return stream.result.output if stream.result is not None else None

        output, stopped = await unless_stopped(ctx.stop_requested, events)
        if stopped:
            return "".join(answer)
        return to_jsonable_python(output, fallback=str)

    return Flow(
        run,
        name=flow_name,
        input=AgentPrompt,
        chunk=dict[str, Any],
        description=description if description is not None else (agent.description or ""),
        conversation_policy=conversation_policy,
    )


# -- the durable variant -------------------------------------------------------------


class _Stopped(Exception):
    """A step saw the stop: the run ends with its partial answer."""


class _DurableSteps(AbstractCapability[Any]):
    """Makes each model request and each tool call of one run a durable step.

    A model request's step streams the response's parts (inside the step, so a lost
    or failed attempt's chunks are retracted and a completed one's never repeat) and
    returns the response; a tool call's step returns the tool's result (JSON). On
    replay both come from the journal: the model is not asked again, the tool does
    not run again. Tool events are streamed by the run's own code, the same on every
    replay, so the engine counts them off.
    """

    def __init__(
        self,
        ctx: DurableContext,
        parts: EventParts,
        model_retry: RetryPolicy | None,
        tool_retry: RetryPolicy | None,
    ) -> None:
        self.ctx = ctx
        self.parts = parts
        self.model_retry = model_retry
        self.tool_retry = tool_retry
        self.answer: list[str] = []  # the text of the responses so far
        self._counts: dict[str, int] = {}  # steps made so far, by name

    def _key(self, name: str) -> str:
        """``name`` for its first step, then ``name#2``, ``name#3``..."""
        count = self._counts[name] = self._counts.get(name, 0) + 1
        return name if count == 1 else f"{name}#{count}"

    def get_wrapper_model(self, model: Model) -> Model | None:
        return _StepModel(model, self)

    async def model_step(self, fetch: Callable[[], Awaitable[ModelResponse]]) -> ModelResponse:
        """``fetch()`` as the step ``model`` (``model#2``...): the response, from the
        journal on replay."""
        first_id = self.parts.next_id

        async def body() -> dict[str, Any]:
            if self.ctx.stop_requested:
                return {"stopped": True}
            self.parts.restart(first_id)  # an attempt after a failed one starts over
            response = await fetch()
            dumped = ModelMessagesTypeAdapter.dump_python([response], mode="json")
            return {"response": dumped[0], "next_id": self.parts.next_id}

        step = await self.ctx.run(self._key("model"), body, retry=self.model_retry)
        if step.get("stopped"):
            raise _Stopped
        self.parts.restart(step["next_id"])
        response = ModelMessagesTypeAdapter.validate_python([step["response"]])[0]
        assert isinstance(response, ModelResponse)
        self.answer.append("".join(p.content for p in response.parts if isinstance(p, TextPart)))
        if self.ctx.stop_requested:
            raise _Stopped
        return response

    def get_wrapper_toolset(self, toolset: AbstractToolset[Any]) -> AbstractToolset[Any] | None:
        return _StepToolset(toolset, self)

    async def tool_step(self, name: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """``call()`` (the tool ``name``) as the step ``tool-{name}`` (``#2``, ``#3``...
        for the next calls of that tool): its result, from the journal on replay. A
        tool asking for a retry or reporting a failure to the model is an outcome,
        raised again from the journal: the run counts retries the same on every
        replay."""

        async def body() -> dict[str, Any]:
            if self.ctx.stop_requested:
                return {"stopped": True}
            try:
                value = await call()
            except ModelRetry as exc:
                return {"retry": exc.message}
            except ToolFailed as exc:
                return {"failed": exc.message}
            return {"value": to_jsonable_python(value, fallback=str)}

        # Pydantic AI calls tools from tasks of its own: each call gets its own step name
        # (the engine refuses a repeated name from another task), in call order.
        key = self._key("tool-" + name.replace("/", "_"))
        outcome = await self.ctx.run(key, body, retry=self.tool_retry)
        if outcome.get("stopped") or self.ctx.stop_requested:
            raise _Stopped
        if "retry" in outcome:
            raise ModelRetry(outcome["retry"])
        if "failed" in outcome:
            raise ToolFailed(outcome["failed"])
        return outcome["value"]


@dataclass
class _StepToolset(WrapperToolset[Any]):
    """The run's tools, each call a durable step (`_DurableSteps.tool_step`)."""

    steps: _DurableSteps

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        return await self.steps.tool_step(
            name, lambda: self.wrapped.call_tool(name, tool_args, ctx, tool)
        )


class _StepModel(WrapperModel):
    """The run's model, each request a durable step (`_DurableSteps.model_step`)."""

    def __init__(self, model: Model, steps: _DurableSteps) -> None:
        super().__init__(model)
        self._steps = steps

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        return await self._steps.model_step(
            lambda: self.wrapped.request(messages, model_settings, model_request_parameters)
        )

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncIterator[StreamedResponse]:
        steps = self._steps

        async def streamed() -> ModelResponse:
            async with self.wrapped.request_stream(
                messages, model_settings, model_request_parameters, run_context
            ) as response:
                async for event in response:
                    for part in steps.parts.parts(event):
                        await steps.ctx.send_chunk(part)
                return response.get()

        response = await steps.model_step(streamed)
        # The step streamed the response's parts: the run's own stream of it is empty.
        yield CompletedStreamedResponse(response, model_request_parameters=model_request_parameters)


def durable_agent_flow(
    agent: Agent[Any, Any],
    *,
    name: str | None = None,
    description: str | None = None,
    model_retry: RetryPolicy | None = DEFAULT_RETRY,
    tool_retry: RetryPolicy | None = None,
) -> DurableFlow[AgentPrompt, Any]:
    """A durable streaming flow that runs ``agent`` on ``{"prompt"}``, each model
    request and each tool call one step of its journal.

    Its chunks are `agent_flow`'s. A worker that dies mid-run is replaced by another
    that replays the run: completed model responses and tool results come from the
    journal (the model is not asked again, a tool's side effect does not happen
    again), what the lost attempt streamed is retracted, and the run continues after
    the last completed step. ``model_retry`` is the model steps' retry policy (a
    retried attempt's chunks are retracted); ``tool_retry`` the tool steps' (default
    one attempt: a tool that fails fails the run, as in Pydantic AI). A tool asking
    for a retry (`ModelRetry`) is a memoized outcome, not a failed step. Tool calls
    run one at a time (their steps must be made in the same order on every replay).

    A stop (``POST .../streams/{id}/stop``) is seen when the step going on ends: the
    run ends and the result is the text of its responses so far. Register the flow
    with a `DurableEngine` (``Gateway(..., durable=engine)`` serves it).
    """
    flow_name = name or agent.name
    if not flow_name:
        raise ValueError(
            "name the flow: durable_agent_flow(agent, name='chat') (the agent has no name)"
        )

    async def run(request: AgentPrompt, ctx: DurableContext) -> Any:
        parts = EventParts()
        steps = _DurableSteps(ctx, parts, model_retry, tool_retry)

        async def handle(_: RunContext[Any], events: AsyncIterable[AgentStreamEvent]) -> None:
            async for event in events:  # tool calls and results; the steps stream the rest
                for part in parts.parts(event):
                    await ctx.send_chunk(part)

        try:
            with ToolManager.parallel_execution_mode("sequential"):
                result = await agent.run(
                    request.prompt, event_stream_handler=handle, capabilities=[steps]
                )
        except _Stopped:
            return "".join(steps.answer)
        return to_jsonable_python(result.output, fallback=str)

    return DurableFlow(
        run,
        name=flow_name,
        input=AgentPrompt,
        chunk=dict[str, Any],
        description=description if description is not None else (agent.description or ""),
    )
