"""The Pydantic AI adapter: a real agent run (Pydantic AI's own offline test models),
with a tool call, served, dropped and resumed by offset."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic_ai import Agent, ModelRetry
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import (
    AgentInfo,
    DeltaThinkingCalls,
    DeltaThinkingPart,
    DeltaToolCall,
    DeltaToolCalls,
    FunctionModel,
)
from pydantic_ai.models.test import TestModel

from stream_gateway import Gateway
from stream_gateway.adapters.pydantic_ai import agent_flow
from stream_gateway.client import stream_flow
from stream_gateway.streams import StreamManager
from tests.backends import BackendHarness
from tests.gateway.conftest import serve
from tests.servers.flows_app import DropConnections

from .resume import read_dropped_and_resumed, texts

pytestmark = pytest.mark.anyio


def weather_agent() -> Agent[None, str]:
    agent = Agent(TestModel(), name="weather")

    @agent.tool_plain
    def forecast(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    return agent


@pytest.fixture
async def served(harness: BackendHarness) -> AsyncIterator[tuple[str, DropConnections]]:
    gateway = Gateway(
        [agent_flow(weather_agent())], stream_manager=StreamManager(harness.new_storage())
    )
    dropping = DropConnections(gateway)
    async with serve(dropping) as url:
        yield f"{url}/weather", dropping


async def test_a_run_with_a_tool_call_is_streamed_dropped_and_resumed(
    served: tuple[str, DropConnections],
) -> None:
    url, dropping = served
    expected = (await weather_agent().run("weather in Paris?")).output
    chunks = await read_dropped_and_resumed(url, dropping, "weather in Paris?", expected)
    (call,) = [c for c in chunks if c["type"] == "tool-input-available"]
    assert call["toolName"] == "forecast" and set(call["input"]) == {"city"}
    (result,) = [c for c in chunks if c["type"] == "tool-output-available"]
    assert result == {
        "type": "tool-output-available",
        "toolCallId": call["toolCallId"],
        "output": f"sunny in {call['input']['city']}",
    }
    assert chunks.index(call) < chunks.index(result)
    assert texts(chunks) == expected
    starts = [c["id"] for c in chunks if c["type"] == "text-start"]
    ends = [c["id"] for c in chunks if c["type"] == "text-end"]
    assert starts == ends and len(set(starts)) == len(starts)


async def test_reasoning_and_several_responses_get_their_own_part_ids(
    harness: BackendHarness,
) -> None:
    async def model(
        messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls | DeltaThinkingCalls]:
        if len(messages) == 1:
            yield {0: DeltaThinkingPart(content="need ")}
            yield {0: DeltaThinkingPart(content="a tool")}
            yield {1: DeltaToolCall("lookup", '{"key": "k"}', tool_call_id="call-1")}
        else:
            yield "found "
            yield "v"

    agent = Agent(FunctionModel(stream_function=model), name="lookup")

    @agent.tool_plain
    def lookup(key: str) -> str:
        return {"k": "v"}[key]

    gateway = Gateway([agent_flow(agent)], stream_manager=StreamManager(harness.new_storage()))
    async with serve(gateway) as url, httpx.AsyncClient(timeout=30) as http:
        stream = stream_flow(f"{url}/lookup", {"prompt": "find k"}, http=http)
        chunks = [chunk async for chunk in stream]
        assert await stream.result() == "found v"
    kinds = [c["type"] for c in chunks]
    assert kinds == [
        "reasoning-start", "reasoning-delta", "reasoning-delta", "reasoning-end",
        "tool-input-available", "tool-output-available",
        "text-start", "text-delta", "text-delta", "text-end",
    ]  # fmt: skip
    assert chunks[1] == {"type": "reasoning-delta", "id": "reasoning-0", "delta": "need "}
    assert chunks[4] == {
        "type": "tool-input-available",
        "toolCallId": "call-1",
        "toolName": "lookup",
        "input": {"key": "k"},
    }
    assert chunks[5] == {"type": "tool-output-available", "toolCallId": "call-1", "output": "v"}
    assert {c["id"] for c in chunks[6:]} == {"text-1"}


def test_a_nameless_agent_needs_a_flow_name() -> None:
    with pytest.raises(ValueError, match="name the flow"):
        agent_flow(Agent(TestModel()))
    assert agent_flow(Agent(TestModel()), name="chat").name == "chat"


async def test_a_tool_that_asks_for_a_retry_is_an_error_part_then_a_result(
    harness: BackendHarness,
) -> None:
    agent = Agent(TestModel(), name="flaky")
    calls: list[str] = []

    @agent.tool_plain
    def flaky(city: str) -> str:
        calls.append(city)
        if len(calls) == 1:
            raise ModelRetry("try again")
        return "ok"

    gateway = Gateway([agent_flow(agent)], stream_manager=StreamManager(harness.new_storage()))
    async with serve(gateway) as url, httpx.AsyncClient(timeout=30) as http:
        stream = stream_flow(f"{url}/flaky", {"prompt": "go"}, http=http)
        chunks = [chunk async for chunk in stream]
        await stream.result()
    outcomes = [c for c in chunks if c["type"].startswith("tool-output")]
    assert [c["type"] for c in outcomes] == ["tool-output-error", "tool-output-available"]
    assert "try again" in outcomes[0]["errorText"]
    assert outcomes[1]["output"] == "ok"
