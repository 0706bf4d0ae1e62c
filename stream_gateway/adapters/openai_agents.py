"""Serve an OpenAI Agents SDK `Agent` as a flow whose chunks are typed events.

Install with ``pip install 'stream-gateway[openai-agents]'``.

>>> from agents import Agent                                         # doctest: +SKIP
>>> chat = agent_flow(Agent(name="chat", instructions="Be brief."))  # doctest: +SKIP
>>> app = Gateway([chat], stream_manager=SqliteStreamManager("streams.db"))  # doctest: +SKIP

The flow's input is ``{"prompt": "..."}``; it runs ``Runner.run_streamed(agent,
prompt)`` and its result is the run's ``final_output`` (as JSON). Its chunks are the
run's stream events as the other adapters' parts (``docs/agents.md``):

- the model's raw events give the text (``response.output_text.delta``) and reasoning
  (``response.reasoning_summary_text.delta``, ``response.reasoning_text.delta``)
  deltas, as ``text-*`` and ``reasoning-*`` parts, one part per output item;
- the run items give the tool calls (``tool_called``: ``tool-input-available``, the
  arguments parsed) and their results (``tool_output``: ``tool-output-available``).

Served by a gateway with a stream manager, the run is detached from the request and
its stream resumable by offset like any flow's; cancelling the stream cancels the run.
`durable_agent_flow` is the durable variant: each model request and each function
tool call a step of a durable execution's journal (``docs/agents.md``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

import anyio
from agents import (
    Agent,
    FunctionTool,
    ModelBehaviorError,
    ModelResponse,
    RunConfig,
    Runner,
    RunResultStreaming,
)
from agents.items import ToolCallItem, ToolCallOutputItem, TResponseStreamEvent
from agents.models.interface import Model
from agents.stream_events import RawResponsesStreamEvent, RunItemStreamEvent, StreamEvent
from agents.tool_context import ToolContext
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)
from pydantic_core import to_jsonable_python

from ..durable import DEFAULT_RETRY, DurableContext, DurableFlow, RetryPolicy
from ..flow import ConversationPolicy, Flow, FlowContext
from ._parts import AgentPrompt, Part, TextParts, tool_input, tool_output
from ._stop import unless_stopped

__all__ = ["AgentPrompt", "RunEventParts", "agent_flow", "durable_agent_flow"]

_TEXT_DELTAS = frozenset({"response.output_text.delta"})
_REASONING_DELTAS = frozenset(
    {"response.reasoning_summary_text.delta", "response.reasoning_text.delta"}
)


class RunEventParts:
    """Turns one run's stream events into UI-message stream parts (dicts).

    Text and reasoning are keyed by the model's output item, whose part ends when the
    item is done; part ids are unique within the run.
    """

    def __init__(self) -> None:
        self.text = TextParts()

    def parts(self, event: StreamEvent) -> list[Part]:
        """The parts for ``event`` (none for events that carry nothing to show)."""
        if isinstance(event, RawResponsesStreamEvent):
            data: Any = event.data
            kind = data.type
            if kind in _TEXT_DELTAS:
                return self.text.delta(data.item_id, "text", data.delta)
            if kind in _REASONING_DELTAS:
                return self.text.delta(data.item_id, "reasoning", data.delta)
            if kind == "response.output_item.done":
                return self.text.end(getattr(data.item, "id", None))
            return []
        if isinstance(event, RunItemStreamEvent):
            item = event.item
            if event.name == "tool_called" and isinstance(item, ToolCallItem):
                raw = item.raw_item
                arguments = raw.get("arguments") if isinstance(raw, dict) else None
                arguments = getattr(raw, "arguments", arguments)
                return [tool_input(item.call_id or "", item.tool_name or "", _parsed(arguments))]
            if event.name == "tool_output" and isinstance(item, ToolCallOutputItem):
                output = to_jsonable_python(item.output, fallback=str)
                return [tool_output(item.call_id or "", output)]
        return []

    def end(self) -> list[Part]:
        """The parts that close what is still open when the run ends."""
        return self.text.end_all()


def _parsed(arguments: Any) -> Any:
    """A tool call's arguments: the JSON the model wrote, parsed (as sent if it is not
    JSON; ``{}`` when there are none)."""
    if arguments is None or arguments == "":
        return {}
    if not isinstance(arguments, str):
        return to_jsonable_python(arguments, fallback=str)
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def agent_flow(
    agent: Agent[Any],
    *,
    name: str | None = None,
    description: str | None = None,
    conversation_policy: ConversationPolicy = "reject",
    run_config: RunConfig | None = None,
    max_turns: int | None = None,
) -> Flow[AgentPrompt, Any, dict[str, Any]]:
    """A flow that runs ``agent`` on ``{"prompt"}`` and streams its events as parts.

    ``name`` defaults to the agent's name; ``run_config`` and ``max_turns`` are passed
    to every ``Runner.run_streamed`` (``max_turns`` defaults to the SDK's). The flow's
    result is the run's ``final_output`` made JSON-able. When the stream's stop is
    requested the run is cancelled and the result is the text streamed so far.
    """
    options: dict[str, Any] = {"run_config": run_config}
    if max_turns is not None:
        options["max_turns"] = max_turns

    async def run(request: AgentPrompt, ctx: FlowContext[dict[str, Any]]) -> Any:
        parts = RunEventParts()
        answer: list[str] = []  # the text so far, the result of a stopped run
        result = Runner.run_streamed(agent, request.prompt, **options)

        async def events() -> None:
            async for event in result.stream_events():
                for part in parts.parts(event):
                    if part["type"] == "text-delta":
                        answer.append(part["delta"])
                    await ctx.send_chunk(part)

        try:
            _, stopped = await unless_stopped(ctx.stop_requested, events)
        finally:
            if not result.is_complete:
                result.cancel()  # the run is a task of the SDK's own: it would go on
        if stopped:
            return "".join(answer)
        for part in parts.end():
            await ctx.send_chunk(part)
        return to_jsonable_python(result.final_output, fallback=str)

    return Flow(
        run,
        name=name or agent.name,
        input=AgentPrompt,
        chunk=dict[str, Any],
        description=description if description is not None else (agent.handoff_description or ""),
        conversation_policy=conversation_policy,
    )


# -- the durable variant -------------------------------------------------------------


class _DurableSteps:
    """Makes each model request and each function tool call of one run a durable step.

    The SDK runs the agent loop in a task of its own, ahead of whoever reads its
    events, so every chunk is sent from inside a step: a model request's step streams
    the response's text and reasoning, then its tool calls (as the plain flow does,
    once the response is complete), and returns the response; a tool call's step runs
    the tool and streams its output. On replay both come from the journal. Steps are
    named ``model``, ``model#2``... in call order, and ``tool-{name}-{call id}`` (the
    id the model gave the call); tool calls run one at a time.
    """

    def __init__(
        self,
        ctx: DurableContext,
        model_retry: RetryPolicy | None,
        tool_retry: RetryPolicy | None,
    ) -> None:
        self.ctx = ctx
        self.parts = RunEventParts()
        self.model_retry = model_retry
        self.tool_retry = tool_retry
        self.answer: list[str] = []  # the text of the responses so far
        self.stopped = False
        self.result: RunResultStreaming | None = None
        self._counts: dict[str, int] = {}
        self._tools = anyio.Lock()

    def _key(self, name: str) -> str:
        count = self._counts[name] = self._counts.get(name, 0) + 1
        return name if count == 1 else f"{name}#{count}"

    async def _stop(self) -> NoReturn:
        """End the run where it stands (the flow returns its partial answer)."""
        self.stopped = True
        assert self.result is not None
        self.result.cancel()
        await anyio.sleep_forever()  # cancelled by the SDK at once
        raise AssertionError("unreachable")

    async def model_step(
        self, stream: Callable[[], AsyncIterator[TResponseStreamEvent]]
    ) -> Response:
        """The events of ``stream()`` as a step: the completed response."""
        first_id = self.parts.text.next_id
        ctx = self.ctx

        async def body() -> dict[str, Any]:
            if ctx.stop_requested:
                return {"stopped": True}
            self.parts.text.restart(first_id)  # an attempt after a failed one starts over
            response: Response | None = None
            async for event in stream():
                if isinstance(event, ResponseCompletedEvent):
                    response = event.response
                for part in self.parts.parts(RawResponsesStreamEvent(data=event)):
                    await ctx.send_chunk(part)
            if response is None:
                raise ModelBehaviorError("the model's stream ended without response.completed")
            for part in self.parts.end():
                await ctx.send_chunk(part)
            for item in response.output:
                if isinstance(item, ResponseFunctionToolCall):
                    await ctx.send_chunk(
                        tool_input(item.call_id, item.name, _parsed(item.arguments))
                    )
            return {
                "response": response.model_dump(mode="json"),
                "next_id": self.parts.text.next_id,
            }

        step = await ctx.run(self._key("model"), body, retry=self.model_retry)
        if step.get("stopped"):
            await self._stop()
        self.parts.text.restart(step["next_id"])
        response = Response.model_validate(step["response"])
        self.answer.append(
            "".join(
                content.text
                for item in response.output
                if isinstance(item, ResponseOutputMessage)
                for content in item.content
                if isinstance(content, ResponseOutputText)
            )
        )
        if ctx.stop_requested:
            await self._stop()
        return response

    def tool(self, tool: FunctionTool) -> FunctionTool:
        """``tool``, each call a step that streams its output."""
        invoke = tool.on_invoke_tool
        ctx = self.ctx

        async def on_invoke_tool(context: ToolContext[Any], arguments: str) -> Any:
            async with self._tools:  # one at a time
                # Named by the call's id, which the journaled model response fixes:
                # the SDK starts each call in a task of its own, after hooks and
                # guardrails that may take longer on replay, so the order in which
                # calls get here is not the order of the calls.
                call = f"{tool.name}-{context.tool_call_id}".replace("/", "_")
                key = self._key(f"tool-{call}")

                async def body() -> dict[str, Any]:
                    if ctx.stop_requested:
                        return {"stopped": True}
                    value = to_jsonable_python(await invoke(context, arguments), fallback=str)
                    await ctx.send_chunk(tool_output(context.tool_call_id, value))
                    return {"value": value}

                outcome = await ctx.run(key, body, retry=self.tool_retry)
            if outcome.get("stopped") or ctx.stop_requested:
                await self._stop()
            return outcome["value"]

        return dataclasses.replace(tool, on_invoke_tool=on_invoke_tool)


class _StepModel(Model):
    """The run's model, each request a durable step (`_DurableSteps.model_step`)."""

    def __init__(self, model: Model, steps: _DurableSteps) -> None:
        self.model = model
        self.steps = steps

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        # The durable flow runs the agent with Runner.run_streamed, which streams.
        raise NotImplementedError(
            "a durable agent flow's model streams: run the agent with Runner.run_streamed"
        )

    async def stream_response(
        self, *args: Any, **kwargs: Any
    ) -> AsyncIterator[TResponseStreamEvent]:
        response = await self.steps.model_step(lambda: self.model.stream_response(*args, **kwargs))
        # The step streamed the response: the SDK gets it whole.
        yield ResponseCompletedEvent(
            type="response.completed", sequence_number=0, response=response
        )


def durable_agent_flow(
    agent: Agent[Any],
    *,
    name: str | None = None,
    description: str | None = None,
    run_config: RunConfig | None = None,
    max_turns: int | None = None,
    model_retry: RetryPolicy | None = DEFAULT_RETRY,
    tool_retry: RetryPolicy | None = None,
) -> DurableFlow[AgentPrompt, Any]:
    """A durable streaming flow that runs ``agent`` on ``{"prompt"}``, each model
    request and each function tool call one step of its journal.

    Its chunks are `agent_flow`'s. A worker that dies mid-run is replaced by another
    that replays the run: completed model responses and tool results come from the
    journal (the model is not asked again, a tool's side effect does not happen
    again), what the lost attempt streamed is retracted, and the run continues after
    the last completed step. ``model_retry`` is the model steps' retry policy;
    ``tool_retry`` the tool steps' (default one attempt; a function tool made with
    ``@function_tool`` reports its own errors to the model, which is memoized like
    any result). Function tool calls run one at a time. The agent's model (or
    ``run_config.model``) is wrapped: agents with handoffs are refused (the agents
    they hand off to would run outside the journal).

    A stop is seen when the step going on ends: the run ends and the result is the
    text of its responses so far. Register the flow with a `DurableEngine`.
    """
    if agent.handoffs:
        raise ValueError(
            "durable_agent_flow does not run handoffs (the other agent's model calls and "
            "tools would not be steps): serve this agent with agent_flow"
        )
    config = run_config or RunConfig()
    options: dict[str, Any] = {}
    if max_turns is not None:
        options["max_turns"] = max_turns

    async def run(request: AgentPrompt, ctx: DurableContext) -> Any:
        steps = _DurableSteps(ctx, model_retry, tool_retry)
        chosen = config.model if config.model is not None else agent.model
        model = chosen if isinstance(chosen, Model) else config.model_provider.get_model(chosen)
        tools = [steps.tool(t) if isinstance(t, FunctionTool) else t for t in agent.tools]
        durable = agent.clone(tools=tools)
        wrapped = dataclasses.replace(config, model=_StepModel(model, steps))
        result = steps.result = Runner.run_streamed(
            durable, request.prompt, run_config=wrapped, **options
        )
        try:
            async for _ in result.stream_events():
                pass  # the steps stream the chunks
        finally:
            if not result.is_complete:
                result.cancel()
        if steps.stopped:
            return "".join(steps.answer)
        return to_jsonable_python(result.final_output, fallback=str)

    return DurableFlow(
        run,
        name=name or agent.name,
        input=AgentPrompt,
        chunk=dict[str, Any],
        description=description if description is not None else (agent.handoff_description or ""),
    )
