"""The LangGraph adapter's durable variant: each node run (the model node, the tool
node) is a step of the run's journal. A real graph on an offline chat model streams
what the plain flow streams; a worker SIGKILLed after the tool node, mid-answer, is
taken over: the tool ran once, completed model calls were not made again, the answer
is the graph's own and the stream's live view has it once; a stop ends the run with
the text so far."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command
from typing_extensions import TypedDict

from stream_gateway import Gateway, GatewayError, InMemoryStreamManager
from stream_gateway.adapters.langgraph import GraphParts, durable_graph_flow
from stream_gateway.client import stream_flow
from stream_gateway.durable import DurableEngine, DurableFlow, InMemoryDurableStore
from tests.gateway.conftest import serve

from .crashes import killed_mid_answer, view
from .durable_procs import lines
from .langgraph_model import Graph, ListModel, WeatherModel, agent_graph, forecast
from .procs_langgraph import agent as langgraph_agent
from .resume import texts

pytestmark = pytest.mark.anyio


async def plain_run(graph: Graph, prompt: str) -> tuple[list[dict[str, Any]], Any]:
    """The chunks of the plain flow for the same run, and the graph's own answer."""
    parts = GraphParts()
    chunks: list[dict[str, Any]] = []
    final: Any = None
    modes: list[Any] = ["messages", "updates", "values"]
    async for mode, data in graph.astream({"messages": [HumanMessage(prompt)]}, stream_mode=modes):
        if mode == "values":
            final = data
        else:
            chunks += parts.parts(mode, data)
    return chunks + parts.end(), final["messages"][-1].text


@asynccontextmanager
async def served(flow: DurableFlow[Any, Any]) -> AsyncIterator[tuple[str, DurableEngine]]:
    async with InMemoryStreamManager() as manager:
        engine = DurableEngine([flow], store=InMemoryDurableStore(), poll_interval=0.02)
        worker = engine.worker(poll_interval=0.02, lease=5.0, grace=1.0)
        async with serve(Gateway([], stream_manager=manager, durable=worker)) as url:
            yield f"{url}/{flow.name}", engine


async def test_a_durable_run_streams_what_the_plain_flow_streams() -> None:
    plain, expected = await plain_run(agent_graph(WeatherModel(), [forecast]), "Weather in Paris?")
    assert expected == "The forecast: sunny in Paris."
    flow = durable_graph_flow(agent_graph(WeatherModel(), [forecast]))
    async with served(flow) as (url, engine):
        async with httpx.AsyncClient(timeout=30) as http:
            stream = stream_flow(url, {"prompt": "Weather in Paris?"}, http=http)
            chunks = [chunk async for chunk in stream]
            assert await stream.result() == expected
        assert stream.stream_id is not None
        detail = await engine.detail(stream.stream_id)
    assert chunks == plain
    assert [(e.path, e.status) for e in detail.steps] == [
        ("node-model", "completed"),
        ("node-tools", "completed"),
        ("node-model#2", "completed"),
    ]


async def test_whole_messages_are_streamed_as_the_plain_flow_streams_them() -> None:
    call = {"name": "forecast", "args": {"city": "Oslo"}, "id": "call-1"}
    replies: list[BaseMessage] = [
        AIMessage("Checking.", tool_calls=[call], id="a1"),
        AIMessage("Snow.", id="a2"),
    ]
    plain, expected = await plain_run(agent_graph(ListModel(responses=replies), [forecast]), "Oslo")
    flow = durable_graph_flow(agent_graph(ListModel(responses=replies), [forecast]))
    async with served(flow) as (url, _), httpx.AsyncClient(timeout=30) as http:
        stream = stream_flow(url, {"prompt": "Oslo"}, http=http)
        chunks = [chunk async for chunk in stream]
        assert await stream.result() == expected == "Snow."
    assert chunks == plain


async def test_a_worker_killed_mid_answer_continues_after_the_tool_call(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    prompt = "Weather in Paris?"
    plain, expected = await plain_run(langgraph_agent(own), prompt)
    assert expected == "The forecast: sunny in Paris."

    def held(chunk: dict[str, Any]) -> bool:
        return chunk.get("delta") == "The "

    final, events = await killed_mid_answer(tmp_path, "langgraph", prompt, held)
    assert final.status == "completed", final.to_json()
    assert final.response == expected
    assert lines(tmp_path, "effects") == ["forecast Paris"]  # the tool ran once
    # The first request was answered once; the answer cut by the kill was asked again.
    assert lines(tmp_path, "calls") == ["request-1", "request-3", "request-3"]
    shown = view(events)
    assert shown == plain
    assert texts(shown) == "Let me check." + expected  # once
    assert any(type(e).__name__ == "ResetEvent" for e in events)  # the lost words went


async def test_a_stopped_durable_run_ends_with_the_text_so_far() -> None:
    running, release = anyio.Event(), anyio.Event()

    @tool
    async def lookup(city: str) -> str:
        """Looks a city up, slowly."""
        running.set()
        await release.wait()
        return "found"

    call = {"name": "lookup", "args": {"city": "Lima"}, "id": "call-1"}
    replies: list[BaseMessage] = [
        AIMessage("Looking it up.", tool_calls=[call], id="a1"),
        AIMessage("Found.", id="a2"),
    ]
    graph = agent_graph(ListModel(responses=replies), [lookup], name="slow")
    async with served(durable_graph_flow(graph)) as (url, engine):
        async with httpx.AsyncClient(timeout=30) as http:
            stream = stream_flow(url, {"prompt": "Lima"}, http=http)
            async for chunk in stream:
                if chunk["type"] == "tool-input-available":
                    break
            with anyio.fail_after(10):
                await running.wait()
            assert await stream.stop()
            release.set()  # the tool node completes; the run stops before the model
            assert await stream.result() == "Looking it up."
        assert stream.stream_id is not None
        detail = await engine.detail(stream.stream_id)
    paths = [e.path for e in detail.steps if e.kind == "step"]
    assert paths == ["node-model", "node-tools", "node-model#2"]  # the last one: stopped


class Counter(TypedDict):
    count: int


async def test_a_node_returning_a_command_fails_with_a_clear_error() -> None:
    def jump(state: Counter) -> Command[Any]:
        return Command(update={"count": 1}, goto=END)

    builder = StateGraph(Counter)
    builder.add_node("jump", jump)
    builder.add_edge(START, "jump")
    flow = durable_graph_flow(builder.compile(name="jump"), input=lambda p: {"count": 0})
    async with served(flow) as (url, _), httpx.AsyncClient(timeout=30) as http:
        stream = stream_flow(url, {"prompt": "go"}, http=http)
        with pytest.raises(GatewayError) as raised:
            [chunk async for chunk in stream]
    assert "durable_graph_flow cannot journal" in raised.value.message
