"""Serve a compiled LangGraph graph as a flow whose chunks are typed events.

Install with ``pip install 'stream-gateway[langgraph]'``.

>>> chat = graph_flow(builder.compile(name="chat"))                  # doctest: +SKIP
>>> app = Gateway([chat], stream_manager=SqliteStreamManager("streams.db"))  # doctest: +SKIP

The flow's input is ``{"prompt": "..."}``, given to the graph as
``{"messages": [HumanMessage(prompt)]}`` (``input=`` changes that). The graph runs with
``astream(stream_mode=["messages", "updates", "values"])``:

- ``messages`` gives the chat models' tokens: text and reasoning deltas, as
  ``text-start`` / ``text-delta`` / ``text-end`` and ``reasoning-*`` parts;
- ``updates`` gives what each node wrote: an ``AIMessage``'s tool calls become
  ``tool-input-available`` parts (arguments complete), a ``ToolMessage`` becomes
  ``tool-output-available`` (or ``tool-output-error`` when its status is ``error``);
- ``values`` gives the final state, as ``graph.ainvoke`` returns it. The flow's
  result is the text of that state's last message (``output=`` changes that).

A graph that stops at ``interrupt()`` ends the flow with `FailedPreconditionError`:
resuming it is not supported yet.

The chunks are the same as the other adapters' (``docs/agents.md``). Served by a
gateway with a stream manager, the run is detached from the request and its stream
resumable by offset like any flow's.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import aclosing
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from pydantic_core import to_jsonable_python

from .._errors import FailedPreconditionError
from ..flow import ConversationPolicy, Flow, FlowContext
from ._asyncio import in_own_task
from ._parts import AgentPrompt, Part, TextParts, tool_error, tool_input, tool_output
from ._stop import unless_stopped

__all__ = ["AgentPrompt", "GraphParts", "graph_flow", "last_message_text", "prompt_input"]

# What `compile()` names a graph that was not given a name.
_DEFAULT_GRAPH_NAME = "LangGraph"
_STREAM_MODES: list[Any] = ["messages", "updates", "values"]
# The update key under which a graph that called interrupt() reports it.
_INTERRUPT = "__interrupt__"


class GraphParts:
    """Turns one run's ``messages`` and ``updates`` stream items into parts (dicts).

    A message's text is streamed from its tokens when its model streams, else sent
    whole when its node returns it; its parts end when its node's update arrives.
    Each tool call and tool result is sent once.
    """

    def __init__(self) -> None:
        self._text = TextParts()
        self._nodes: dict[Hashable, str] = {}  # message streaming -> its node
        self._streamed: set[str] = set()  # ids of messages whose text was sent
        self._calls: set[str] = set()  # tool calls sent
        self._results: set[str] = set()  # tool results sent

    def parts(self, mode: str, data: Any) -> list[Part]:
        """The parts for one ``(mode, data)`` item of ``astream`` (none for others).

        Raises `FailedPreconditionError` when the graph reports an ``interrupt()``.
        """
        if mode == "messages":
            message, metadata = data
            return self._message(message, metadata.get("langgraph_node", ""))
        if mode == "updates" and isinstance(data, dict):
            if _INTERRUPT in data:
                raise FailedPreconditionError(
                    "the graph stopped at interrupt() (human in the loop), which graph_flow"
                    " cannot resume yet"
                )
            parts: list[Part] = []
            for node, update in data.items():
                parts += self._node_done(node)
                for message in _messages_in(update):
                    parts += self._written(message)
            return parts
        return []

    def end(self) -> list[Part]:
        """The parts that close what is still open when the run ends."""
        return self._text.end_all()

    def _message(self, message: Any, node: str) -> list[Part]:
        if not isinstance(message, AIMessage):
            return []  # tool results are taken from the updates, once
        source: Hashable = message.id or id(message)
        if not isinstance(message, AIMessageChunk):
            if message.id is not None and message.id in self._streamed:
                return []
            return self._blocks(source, message) + self._text.end(source)
        self._nodes[source] = node
        return self._blocks(source, message)

    def _blocks(self, source: Hashable, message: AIMessage) -> list[Part]:
        if message.id is not None:
            self._streamed.add(message.id)
        parts: list[Part] = []
        for block in message.content_blocks:
            if block["type"] == "text":
                parts += self._text.delta(source, "text", block["text"])
            elif block["type"] == "reasoning":
                parts += self._text.delta(source, "reasoning", block.get("reasoning", ""))
        return parts

    def _node_done(self, node: str) -> list[Part]:
        parts: list[Part] = []
        for source in [s for s, n in self._nodes.items() if n == node]:
            del self._nodes[source]
            parts += self._text.end(source)
        return parts

    def _written(self, message: BaseMessage) -> list[Part]:
        if isinstance(message, AIMessage):
            parts = []
            for call in message.tool_calls:
                call_id = call["id"] or ""
                if call_id not in self._calls:
                    self._calls.add(call_id)
                    parts.append(tool_input(call_id, call["name"], call["args"]))
            return parts
        if isinstance(message, ToolMessage) and message.tool_call_id not in self._results:
            self._results.add(message.tool_call_id)
            if message.status == "error":
                return [tool_error(message.tool_call_id, message.text)]
            content = message.content
            output = content if isinstance(content, str) else to_jsonable_python(content)
            return [tool_output(message.tool_call_id, output)]
        return []


def _messages_in(update: Any) -> Iterator[BaseMessage]:
    """The messages a node's update writes, in any channel (a message or a list)."""
    if isinstance(update, BaseMessage):
        yield update
    elif isinstance(update, dict):
        for value in update.values():
            yield from _messages_in(value)
    elif isinstance(update, list | tuple):
        for item in update:
            yield from _messages_in(item)


def prompt_input(prompt: str) -> dict[str, Any]:
    """The graph input for a prompt: ``{"messages": [HumanMessage(prompt)]}``."""
    return {"messages": [HumanMessage(prompt)]}


def last_message_text(state: Any) -> Any:
    """The text of the state's last message; the whole state (JSON-able) if the state
    has no ``messages``."""
    messages = state.get("messages") if isinstance(state, dict) else None
    if isinstance(messages, list) and messages and isinstance(messages[-1], BaseMessage):
        return messages[-1].text
    return to_jsonable_python(state, fallback=str)


def graph_flow(
    graph: Pregel[Any, Any, Any, Any],
    *,
    name: str | None = None,
    description: str = "",
    conversation_policy: ConversationPolicy = "reject",
    input: Callable[[str], Any] = prompt_input,
    output: Callable[[Any], Any] = last_message_text,
    config: RunnableConfig | None = None,
) -> Flow[AgentPrompt, Any, dict[str, Any]]:
    """A flow that runs ``graph`` on ``{"prompt"}`` and streams its progress as parts.

    ``name`` defaults to the graph's (``compile(name=...)``). ``input`` makes the
    graph's input from the prompt; ``output`` makes the flow's result from the final
    state (made JSON-able); ``config`` is passed to every run. When the stream's stop
    is requested the run is cancelled and the result is the text streamed so far.
    """
    flow_name = name or (graph.name if graph.name != _DEFAULT_GRAPH_NAME else None)
    if not flow_name:
        raise ValueError(
            "name the flow: graph_flow(graph, name='chat') or compile(name='chat')"
            " (the graph has LangGraph's default name)"
        )

    async def stream(
        request: AgentPrompt, ctx: FlowContext[dict[str, Any]], answer: list[str]
    ) -> Any:
        parts = GraphParts()
        final: Any = None
        items = graph.astream(input(request.prompt), config, stream_mode=_STREAM_MODES)
        async with aclosing(items):  # type: ignore[type-var]
            async for mode, data in items:
                if mode == "values":
                    final = data
                    continue
                for part in parts.parts(mode, data):
                    if part["type"] == "text-delta":
                        answer.append(part["delta"])
                    await ctx.send_chunk(part)
        for part in parts.end():
            await ctx.send_chunk(part)
        return to_jsonable_python(output(final), fallback=str)

    async def run(request: AgentPrompt, ctx: FlowContext[dict[str, Any]]) -> Any:
        answer: list[str] = []  # the text so far, the result of a stopped run
        # LangGraph cancels its running nodes (a tool call) only under asyncio's rules.
        result, stopped = await unless_stopped(
            ctx.stop_requested, lambda: in_own_task(stream(request, ctx, answer))
        )
        return "".join(answer) if stopped else result

    return Flow(
        run,
        name=flow_name,
        input=AgentPrompt,
        chunk=dict[str, Any],
        description=description,
        conversation_policy=conversation_policy,
    )
