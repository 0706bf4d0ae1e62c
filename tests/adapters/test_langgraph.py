"""The LangGraph adapter: a real graph (a model node, LangGraph's `ToolNode`) run on
offline chat models, with a tool call, served, dropped and resumed by offset."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from langchain_core.language_models.fake_chat_models import (
    GenericFakeChatModel,
)
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
)
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import interrupt
from typing_extensions import TypedDict

from stream_gateway import Gateway, GatewayError
from stream_gateway.adapters.langgraph import graph_flow
from stream_gateway.client import stream_flow
from stream_gateway.streams import StreamManager
from tests.backends import BackendHarness
from tests.gateway.conftest import serve
from tests.servers.flows_app import DropConnections

from .langgraph_model import Graph, ListModel, WeatherModel, agent_graph, forecast
from .resume import read_dropped_and_resumed

pytestmark = pytest.mark.anyio


async def run_served(harness: BackendHarness, graph: Graph, prompt: str) -> tuple[list[Any], Any]:
    gateway = Gateway([graph_flow(graph)], stream_manager=StreamManager(harness.new_storage()))
    async with serve(gateway) as url, httpx.AsyncClient(timeout=30) as http:
        stream = stream_flow(f"{url}/{graph.name}", {"prompt": prompt}, http=http)
        chunks = [chunk async for chunk in stream]
        return chunks, await stream.result()


@pytest.fixture
async def served(harness: BackendHarness) -> AsyncIterator[tuple[str, DropConnections]]:
    graph = agent_graph(WeatherModel(), [forecast])
    gateway = Gateway([graph_flow(graph)], stream_manager=StreamManager(harness.new_storage()))
    dropping = DropConnections(gateway)
    async with serve(dropping) as url:
        yield f"{url}/weather", dropping


async def test_a_run_with_a_tool_call_is_streamed_dropped_and_resumed(
    served: tuple[str, DropConnections],
) -> None:
    url, dropping = served
    state = await agent_graph(WeatherModel(), [forecast]).ainvoke(
        {"messages": [HumanMessage("Weather in Paris?")]}
    )
    expected = state["messages"][-1].text
    assert expected == "The forecast: sunny in Paris."
    chunks = await read_dropped_and_resumed(url, dropping, "Weather in Paris?", expected)
    assert chunks == [
        {"type": "text-start", "id": "text-0"},
        {"type": "text-delta", "id": "text-0", "delta": "Let "},
        {"type": "text-delta", "id": "text-0", "delta": "me "},
        {"type": "text-delta", "id": "text-0", "delta": "check."},
        {"type": "text-end", "id": "text-0"},
        {
            "type": "tool-input-available",
            "toolCallId": "call-m1",
            "toolName": "forecast",
            "input": {"city": "Paris"},
        },
        {"type": "tool-output-available", "toolCallId": "call-m1", "output": "sunny in Paris"},
        {"type": "text-start", "id": "text-1"},
        *[
            {"type": "text-delta", "id": "text-1", "delta": word}
            for word in ["The ", "forecast: ", "sunny ", "in ", "Paris."]
        ],
        {"type": "text-end", "id": "text-1"},
    ]


async def test_whole_messages_with_reasoning_are_sent_whole(harness: BackendHarness) -> None:
    call = {"name": "forecast", "args": {"city": "Oslo"}, "id": "call-1"}
    replies: list[BaseMessage] = [
        AIMessage(
            [{"type": "reasoning", "reasoning": "a tool knows"}],
            tool_calls=[call],
            id="r1",
        ),
        AIMessage("Snow, says the tool.", id="r2"),
    ]
    graph = agent_graph(ListModel(responses=replies), [forecast])
    state = await graph.ainvoke({"messages": [HumanMessage("Oslo?")]})
    chunks, result = await run_served(harness, graph, "Oslo?")
    assert result == state["messages"][-1].text == "Snow, says the tool."
    assert chunks == [
        {"type": "reasoning-start", "id": "reasoning-0"},
        {"type": "reasoning-delta", "id": "reasoning-0", "delta": "a tool knows"},
        {"type": "reasoning-end", "id": "reasoning-0"},
        {
            "type": "tool-input-available",
            "toolCallId": "call-1",
            "toolName": "forecast",
            "input": {"city": "Oslo"},
        },
        {"type": "tool-output-available", "toolCallId": "call-1", "output": "sunny in Oslo"},
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": "Snow, says the tool."},
        {"type": "text-end", "id": "text-1"},
    ]


async def test_a_failing_tool_is_an_error_part(harness: BackendHarness) -> None:
    @tool
    def broken(city: str) -> str:
        """Always fails."""
        raise ValueError(f"no data for {city}")

    call = {"name": "broken", "args": {"city": "Rome"}, "id": "call-9"}
    replies: list[BaseMessage] = [
        AIMessage("", tool_calls=[call], id="b1"),
        AIMessage("Sorry.", id="b2"),
    ]
    graph = agent_graph(ListModel(responses=replies), [broken], name="broken", catch=True)
    chunks, result = await run_served(harness, graph, "Rome?")
    assert result == "Sorry."
    (error,) = [c for c in chunks if c["type"] == "tool-output-error"]
    assert error["toolCallId"] == "call-9" and "no data for Rome" in error["errorText"]
    assert not [c for c in chunks if c["type"] == "tool-output-available"]


async def test_the_library_s_streaming_fake_model_streams_tokens(harness: BackendHarness) -> None:
    model = GenericFakeChatModel(messages=iter(["Hello there, friend."]))
    graph = agent_graph(model, [], name="hello")
    chunks, result = await run_served(harness, graph, "hi")
    assert result == "Hello there, friend."
    deltas = [c["delta"] for c in chunks if c["type"] == "text-delta"]
    assert len(deltas) > 1 and "".join(deltas) == result
    assert [c["type"] for c in chunks if c["type"] != "text-delta"] == ["text-start", "text-end"]


class Counter(TypedDict):
    topic: str
    count: int


async def test_input_and_output_adapt_a_graph_without_messages(
    harness: BackendHarness,
) -> None:
    async def bump(state: Counter) -> dict[str, Any]:
        return {"count": state["count"] + len(state["topic"])}

    builder = StateGraph(Counter)
    builder.add_node("bump", bump)
    builder.add_edge(START, "bump")
    builder.add_edge("bump", END)
    graph = builder.compile()
    counted = graph_flow(graph, name="count", input=lambda p: {"topic": p, "count": 1})
    whole = graph_flow(
        graph, name="whole", input=lambda p: {"topic": p, "count": 0}, output=lambda s: s["count"]
    )
    gateway = Gateway([counted, whole], stream_manager=StreamManager(harness.new_storage()))
    async with serve(gateway) as url, httpx.AsyncClient(timeout=30) as http:
        first = stream_flow(f"{url}/count", {"prompt": "abc"}, http=http)
        assert [c async for c in first] == []
        assert await first.result() == {"topic": "abc", "count": 4}
        second = stream_flow(f"{url}/whole", {"prompt": "abcd"}, http=http)
        assert await second.result() == 4


async def test_a_cancelled_run_stops_the_graph(harness: BackendHarness) -> None:
    started, finished = anyio.Event(), anyio.Event()
    outcome: list[str] = []

    @tool
    async def slow(city: str) -> str:
        """Waits for ever."""
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            outcome.append("cancelled")
            finished.set()
        return "never"

    call = {"name": "slow", "args": {"city": "Lima"}, "id": "call-s"}
    replies: list[BaseMessage] = [AIMessage("", tool_calls=[call], id="s1")]
    graph = agent_graph(ListModel(responses=replies), [slow], name="slow")
    gateway = Gateway([graph_flow(graph)], stream_manager=StreamManager(harness.new_storage()))
    async with serve(gateway) as url, httpx.AsyncClient(timeout=30) as http:
        stream = stream_flow(f"{url}/slow", {"prompt": "Lima?"}, http=http)
        chunks = []
        async for chunk in stream:
            chunks.append(chunk)
            if chunk["type"] == "tool-input-available":
                break
        with anyio.fail_after(10):
            await started.wait()
        assert (await http.delete(f"{url}/slow/streams/{stream.stream_id}")).status_code == 200
        with anyio.fail_after(10):
            await finished.wait()
        resumed = stream_flow(f"{url}/slow", http=http, stream_id=stream.stream_id)
        with pytest.raises(GatewayError) as raised:
            [c async for c in resumed]
    assert raised.value.status == "CANCELLED"
    assert outcome == ["cancelled"]


async def test_a_stopped_run_ends_with_the_text_so_far(harness: BackendHarness) -> None:
    started, finished = anyio.Event(), anyio.Event()

    @tool
    async def slow(city: str) -> str:
        """Waits for ever."""
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            finished.set()
        return "never"

    call = {"name": "slow", "args": {"city": "Lima"}, "id": "call-s"}
    replies: list[BaseMessage] = [AIMessage("Looking it up.", tool_calls=[call], id="s1")]
    graph = agent_graph(ListModel(responses=replies), [slow], name="slow")
    gateway = Gateway([graph_flow(graph)], stream_manager=StreamManager(harness.new_storage()))
    async with serve(gateway) as url, httpx.AsyncClient(timeout=30) as http:
        stream = stream_flow(f"{url}/slow", {"prompt": "Lima?"}, http=http)
        async for chunk in stream:
            if chunk["type"] == "tool-input-available":
                break
        with anyio.fail_after(10):
            await started.wait()
        assert await stream.stop()
        assert await stream.result() == "Looking it up."  # done, with the partial answer
        with anyio.fail_after(10):
            await finished.wait()  # the tool call was cancelled


def test_a_graph_with_the_default_name_needs_a_flow_name() -> None:
    builder = StateGraph(MessagesState)
    builder.add_node("noop", lambda state: {})
    builder.add_edge(START, "noop")
    with pytest.raises(ValueError, match="name the flow"):
        graph_flow(builder.compile())
    assert graph_flow(builder.compile(), name="chat").name == "chat"
    assert graph_flow(builder.compile(name="named")).name == "named"


async def test_a_graph_that_stops_at_an_interrupt_ends_with_a_clear_error(
    harness: BackendHarness,
) -> None:
    async def ask(state: MessagesState) -> dict[str, Any]:
        answer = interrupt({"question": "approve?"})
        return {"messages": [AIMessage(f"approved: {answer}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    graph = builder.compile(name="ask", checkpointer=InMemorySaver())
    flow = graph_flow(graph, config={"configurable": {"thread_id": "t-1"}})
    gateway = Gateway([flow], stream_manager=StreamManager(harness.new_storage()))
    async with serve(gateway) as url, httpx.AsyncClient(timeout=30) as http:
        stream = stream_flow(f"{url}/ask", {"prompt": "buy"}, http=http)
        with pytest.raises(GatewayError) as raised:
            [c async for c in stream]
    assert raised.value.status == "FAILED_PRECONDITION"
    assert "interrupt()" in raised.value.message
