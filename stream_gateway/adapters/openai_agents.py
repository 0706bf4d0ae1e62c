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
"""

from __future__ import annotations

import json
from typing import Any

from agents import Agent, RunConfig, Runner
from agents.items import ToolCallItem, ToolCallOutputItem
from agents.stream_events import RawResponsesStreamEvent, RunItemStreamEvent, StreamEvent
from pydantic_core import to_jsonable_python

from ..flow import ConversationPolicy, Flow, FlowContext
from ._parts import AgentPrompt, Part, TextParts, tool_input, tool_output

__all__ = ["AgentPrompt", "RunEventParts", "agent_flow"]

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
        self._text = TextParts()

    def parts(self, event: StreamEvent) -> list[Part]:
        """The parts for ``event`` (none for events that carry nothing to show)."""
        if isinstance(event, RawResponsesStreamEvent):
            data: Any = event.data
            kind = data.type
            if kind in _TEXT_DELTAS:
                return self._text.delta(data.item_id, "text", data.delta)
            if kind in _REASONING_DELTAS:
                return self._text.delta(data.item_id, "reasoning", data.delta)
            if kind == "response.output_item.done":
                return self._text.end(getattr(data.item, "id", None))
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
        return self._text.end_all()


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
    result is the run's ``final_output`` made JSON-able.
    """
    options: dict[str, Any] = {"run_config": run_config}
    if max_turns is not None:
        options["max_turns"] = max_turns

    async def run(request: AgentPrompt, ctx: FlowContext[dict[str, Any]]) -> Any:
        parts = RunEventParts()
        result = Runner.run_streamed(agent, request.prompt, **options)
        try:
            async for event in result.stream_events():
                for part in parts.parts(event):
                    await ctx.send_chunk(part)
        finally:
            if not result.is_complete:
                result.cancel()  # the run is a task of the SDK's own: it would go on
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
