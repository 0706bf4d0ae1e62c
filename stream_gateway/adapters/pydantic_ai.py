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
resumable by offset like any flow's.
"""

from __future__ import annotations

from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import (
    AgentStreamEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    PartDeltaEvent,
    PartEndEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
)
from pydantic_core import to_jsonable_python

from ..flow import ConversationPolicy, Flow, FlowContext
from ._parts import AgentPrompt

__all__ = ["AgentPrompt", "EventParts", "agent_flow"]


class EventParts:
    """Turns one run's Pydantic AI events into UI-message stream parts (dicts).

    Keeps the part ids of the model response being streamed, so that deltas name the
    part they extend; ids are unique within the run.
    """

    def __init__(self) -> None:
        self._next_id = 0
        self._open: dict[int, tuple[str, str]] = {}  # event index -> (kind, part id)

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
    made JSON-able (a pydantic output model becomes an object).
    """
    flow_name = name or agent.name
    if not flow_name:
        raise ValueError("name the flow: agent_flow(agent, name='chat') (the agent has no name)")

    async def run(request: AgentPrompt, ctx: FlowContext[dict[str, Any]]) -> Any:
        parts = EventParts()
        output: Any = None
        async with agent.run_stream_events(request.prompt) as events:
            async for event in events:
                for part in parts.parts(event):
                    await ctx.send_chunk(part)
            output = events.result.output if events.result is not None else None
        return to_jsonable_python(output, fallback=str)

    return Flow(
        run,
        name=flow_name,
        input=AgentPrompt,
        chunk=dict[str, Any],
        description=description if description is not None else (agent.description or ""),
        conversation_policy=conversation_policy,
    )
