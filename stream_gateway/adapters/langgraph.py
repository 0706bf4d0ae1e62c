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
resumable by offset like any flow's. `durable_graph_flow` is the durable variant: each
node run a step of a durable execution's journal, so a run cut by a crash continues
after its last completed node.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from contextlib import aclosing
from typing import Any, TypeVar
from uuid import UUID

import anyio
from langchain_core._api import LangChainBetaWarning
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.load import dumpd, load
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGenerationChunk, GenerationChunk
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.runnables.config import merge_configs
from langgraph.pregel import Pregel
from langgraph.pregel._read import DEFAULT_BOUND
from pydantic_core import to_jsonable_python

from .._errors import FailedPreconditionError
from ..durable import DurableContext, DurableFlow, RetryPolicy
from ..flow import ConversationPolicy, Flow, FlowContext
from ._asyncio import in_own_task
from ._parts import AgentPrompt, Part, TextParts, tool_error, tool_input, tool_output
from ._stop import unless_stopped

__all__ = [
    "AgentPrompt",
    "GraphParts",
    "durable_graph_flow",
    "graph_flow",
    "last_message_text",
    "prompt_input",
]

T = TypeVar("T")

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
        self.text = TextParts()
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
        return self.text.end_all()

    def _message(self, message: Any, node: str) -> list[Part]:
        if not isinstance(message, AIMessage):
            return []  # tool results are taken from the updates, once
        source: Hashable = message.id or id(message)
        if not isinstance(message, AIMessageChunk):
            if message.id is not None and message.id in self._streamed:
                return []
            return self._blocks(source, message) + self.text.end(source)
        self._nodes[source] = node
        return self._blocks(source, message)

    def _blocks(self, source: Hashable, message: AIMessage) -> list[Part]:
        if message.id is not None:
            self._streamed.add(message.id)
        parts: list[Part] = []
        for block in message.content_blocks:
            if block["type"] == "text":
                parts += self.text.delta(source, "text", block["text"])
            elif block["type"] == "reasoning":
                parts += self.text.delta(source, "reasoning", block.get("reasoning", ""))
        return parts

    def _node_done(self, node: str) -> list[Part]:
        parts: list[Part] = []
        for source in [s for s, n in self._nodes.items() if n == node]:
            del self._nodes[source]
            parts += self.text.end(source)
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


# -- the durable variant -------------------------------------------------------------


class _TokenParts(AsyncCallbackHandler):
    """Streams the chat models' tokens as parts; called while a node runs, so from
    inside the node's step (a replayed node does not run and streams nothing).

    Given to the whole run, as LangGraph's own ``messages`` handler is; its
    ``tap_output_*`` methods make LangChain's chat models stream to it (they stream
    when a handler has them).
    """

    def __init__(self, steps: _DurableNodes) -> None:
        self.steps = steps
        self.nodes: dict[UUID, str] = {}  # chat model run -> its node

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        node = (metadata or {}).get("langgraph_node")
        if isinstance(node, str):
            self.nodes[run_id] = node

    def tap_output_aiter(self, run_id: UUID, output: AsyncIterator[T]) -> AsyncIterator[T]:
        return output

    def tap_output_iter(self, run_id: UUID, output: Iterator[T]) -> Iterator[T]:
        return output

    async def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: GenerationChunk | ChatGenerationChunk | None = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        message = getattr(chunk, "message", None)
        node = self.nodes.get(run_id)
        if isinstance(message, AIMessageChunk) and node is not None:
            for part in self.steps.parts._message(message, node):
                await self.steps.ctx.send_chunk(part)


class _DurableNodes:
    """Makes each node run of one graph run a durable step.

    A node's step runs the node, streams its model's tokens (a callback inside the
    step) and the messages its update writes, and returns the update (LangChain's
    JSON form); on replay the update comes from the journal and the node does not run.
    Nodes run one at a time, their steps named in run order (``node-{name}``,
    ``node-{name}#2``...).
    """

    def __init__(self, ctx: DurableContext, retry: RetryPolicy | None) -> None:
        self.ctx = ctx
        self.retry = retry
        self.parts = GraphParts()
        self.answer: list[str] = []  # the text of the messages written so far
        self.stopped = False
        self._counts: dict[str, int] = {}
        self._lock = anyio.Lock()

    def wrap(self, name: str, bound: Runnable[Any, Any]) -> Runnable[Any, Any]:
        async def run(state: Any, config: RunnableConfig) -> Any:
            async with self._lock:
                count = self._counts[name] = self._counts.get(name, 0) + 1
                key = f"node-{name}" + ("" if count == 1 else f"#{count}")
                first_id = self.parts.text.next_id

                async def body() -> dict[str, Any]:
                    if self.ctx.stop_requested:
                        return {"stopped": True}
                    self.parts.text.restart(first_id)
                    update = await bound.ainvoke(state, config)
                    parts: list[Part] = []
                    for message in _messages_in(update):
                        parts += self.parts._message(message, name)
                    parts += self.parts.parts("updates", {name: update})
                    for part in parts:
                        await self.ctx.send_chunk(part)
                    dumped = _dumped(update)
                    if dumped is None:
                        return {"unjournaled": type(update).__name__}
                    return {"update": dumped, "next_id": self.parts.text.next_id}

                step = await self.ctx.run(key, body, retry=self.retry)
            if step.get("stopped"):
                self.stopped = True
                raise _NodeStopped
            if "unjournaled" in step:
                raise FailedPreconditionError(
                    f"node {name!r} returned {step['unjournaled']}, which durable_graph_flow "
                    "cannot journal: return a state update (a dict of JSON values and "
                    "LangChain messages), or serve the graph with graph_flow"
                )
            self.parts.text.restart(step["next_id"])
            update = _loaded(step["update"])
            self.answer += [m.text for m in _messages_in(update) if isinstance(m, AIMessage)]
            if self.ctx.stop_requested:
                self.stopped = True
                raise _NodeStopped
            return update

        return RunnableLambda(run, name=name)


class _NodeStopped(Exception):
    """A step saw the stop: the run ends with its partial answer."""


def _dumped(update: Any) -> Any:
    """A node's update in LangChain's JSON form (messages as constructors); ``None``
    if it holds something that form cannot rebuild (a ``Command``, an object)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LangChainBetaWarning)
        dumped = dumpd(update)
    return None if _unrebuildable(dumped) else dumped


def _unrebuildable(value: Any) -> bool:
    if isinstance(value, dict):
        if value.get("lc") == 1 and value.get("type") == "not_implemented":
            return True
        return any(_unrebuildable(v) for v in value.values())
    if isinstance(value, list):
        return any(_unrebuildable(v) for v in value)
    return False


def _loaded(dumped: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LangChainBetaWarning)
        return load(dumped, allowed_objects="messages")


def durable_graph_flow(
    graph: Pregel[Any, Any, Any, Any],
    *,
    name: str | None = None,
    description: str = "",
    input: Callable[[str], Any] = prompt_input,
    output: Callable[[Any], Any] = last_message_text,
    config: RunnableConfig | None = None,
    retry: RetryPolicy | None = None,
) -> DurableFlow[AgentPrompt, Any]:
    """A durable streaming flow that runs ``graph`` on ``{"prompt"}``, each node run
    (a model call, a tool node) one step of its journal.

    Its chunks are `graph_flow`'s. A worker that dies mid-run is replaced by another
    that replays the run: the updates of the nodes that completed come from the
    journal (their models are not asked again, their tools do not run again), what
    the lost attempt streamed is retracted, and the run continues after the last
    completed node. Nodes must return state updates of JSON values and LangChain
    messages (not ``Command``/``Send``), run one at a time, and ``interrupt()`` is not
    supported. ``retry`` is the node steps' retry policy (default: one attempt). A
    stop is seen when the node going on ends: the result is the text of the AI
    messages written so far. Register the flow with a `DurableEngine`.
    """
    flow_name = name or (graph.name if graph.name != _DEFAULT_GRAPH_NAME else None)
    if not flow_name:
        raise ValueError(
            "name the flow: durable_graph_flow(graph, name='chat') or compile(name='chat')"
            " (the graph has LangGraph's default name)"
        )

    async def stream(request: AgentPrompt, ctx: DurableContext, nodes: _DurableNodes) -> Any:
        wrapped = {
            node_name: node
            if node.bound is DEFAULT_BOUND or node_name.startswith("__")
            else node.copy({"bound": nodes.wrap(node_name, node.bound)})
            for node_name, node in graph.nodes.items()
        }
        durable = graph.copy({"nodes": wrapped})
        final: Any = None
        tokens = merge_configs(config, {"callbacks": [_TokenParts(nodes)]})
        items = durable.astream(input(request.prompt), tokens, stream_mode="values")
        async with aclosing(items):  # type: ignore[type-var]
            async for data in items:
                final = data
        for part in nodes.parts.end():
            await ctx.send_chunk(part)
        return to_jsonable_python(output(final), fallback=str)

    async def run(request: AgentPrompt, ctx: DurableContext) -> Any:
        nodes = _DurableNodes(ctx, retry)
        try:
            return await in_own_task(stream(request, ctx, nodes))
        except _NodeStopped:
            return "".join(nodes.answer)

    return DurableFlow(
        run,
        name=flow_name,
        input=AgentPrompt,
        chunk=dict[str, Any],
        description=description,
    )
