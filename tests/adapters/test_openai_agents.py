"""The OpenAI Agents SDK adapter: a real `Runner.run_streamed` with a tool call, on an
offline `Model` of our own (the SDK's model interface, Responses API events), served,
dropped and resumed by offset."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from agents import Agent, FunctionTool, Runner, function_tool

from stream_gateway import Gateway, GatewayError
from stream_gateway.adapters.openai_agents import agent_flow
from stream_gateway.client import stream_flow
from stream_gateway.streams import StreamManager
from tests.backends import BackendHarness
from tests.gateway.conftest import serve
from tests.servers.flows_app import DropConnections

from .openai_model import OFFLINE, WeatherModel
from .resume import read_dropped_and_resumed, texts

pytestmark = pytest.mark.anyio


@function_tool
def forecast(city: str) -> str:
    """Today's forecast for a city."""
    return f"sunny in {city}"


def weather_agent(*tools: FunctionTool, name: str = "weather") -> Agent[Any]:
    return Agent(name=name, model=WeatherModel(), tools=list(tools) or [forecast])


@pytest.fixture
async def served(harness: BackendHarness) -> AsyncIterator[tuple[str, DropConnections]]:
    flow = agent_flow(weather_agent(), run_config=OFFLINE)
    gateway = Gateway([flow], stream_manager=StreamManager(harness.new_storage()))
    dropping = DropConnections(gateway)
    async with serve(dropping) as url:
        yield f"{url}/weather", dropping


async def test_a_run_with_a_tool_call_is_streamed_dropped_and_resumed(
    served: tuple[str, DropConnections],
) -> None:
    url, dropping = served
    expected = (
        await Runner.run(weather_agent(), "Weather in Paris?", run_config=OFFLINE)
    ).final_output
    assert expected == "The forecast: sunny in Paris."
    chunks = await read_dropped_and_resumed(url, dropping, "Weather in Paris?", expected)
    assert chunks == [
        {"type": "reasoning-start", "id": "reasoning-0"},
        {"type": "reasoning-delta", "id": "reasoning-0", "delta": "look "},
        {"type": "reasoning-delta", "id": "reasoning-0", "delta": "up "},
        {"type": "reasoning-delta", "id": "reasoning-0", "delta": "Paris"},
        {"type": "reasoning-end", "id": "reasoning-0"},
        {
            "type": "tool-input-available",
            "toolCallId": "call-1",
            "toolName": "forecast",
            "input": {"city": "Paris"},
        },
        {"type": "tool-output-available", "toolCallId": "call-1", "output": "sunny in Paris"},
        {"type": "text-start", "id": "text-1"},
        *[
            {"type": "text-delta", "id": "text-1", "delta": word}
            for word in ["The ", "forecast: ", "sunny ", "in ", "Paris."]
        ],
        {"type": "text-end", "id": "text-1"},
    ]
    assert texts(chunks) == expected


async def test_a_structured_output_is_the_result_as_json(harness: BackendHarness) -> None:
    @function_tool
    def count(city: str) -> dict[str, int]:
        """Letters in a city's name."""
        return {"letters": len(city)}

    agent = weather_agent(count, name="count")
    flow = agent_flow(agent, run_config=OFFLINE, description="counts")
    assert flow.description == "counts"
    gateway = Gateway([flow], stream_manager=StreamManager(harness.new_storage()))
    async with serve(gateway) as url, httpx.AsyncClient(timeout=30) as http:
        stream = stream_flow(f"{url}/count", {"prompt": "Oslo"}, http=http)
        chunks = [chunk async for chunk in stream]
        result = await stream.result()
    (output,) = [c for c in chunks if c["type"] == "tool-output-available"]
    assert output["output"] == {"letters": 4}
    assert result == "The forecast: {'letters': 4}."  # what the SDK gave the model


async def test_a_run_that_fails_ends_the_stream_with_its_error(harness: BackendHarness) -> None:
    flow = agent_flow(weather_agent(name="loop"), run_config=OFFLINE, max_turns=1)
    gateway = Gateway([flow], stream_manager=StreamManager(harness.new_storage()))
    async with serve(gateway) as url, httpx.AsyncClient(timeout=30) as http:
        stream = stream_flow(f"{url}/loop", {"prompt": "Rome"}, http=http)
        with pytest.raises(GatewayError) as raised:
            [chunk async for chunk in stream]
    assert raised.value.status == "INTERNAL"  # max turns exceeded: an error in the flow


async def test_a_cancelled_run_stops_the_agent(harness: BackendHarness) -> None:
    started, finished = anyio.Event(), anyio.Event()
    outcome: list[str] = []

    @function_tool
    async def slow(city: str) -> str:
        """Waits for ever."""
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            outcome.append("cancelled")
            finished.set()
        return "never"

    flow = agent_flow(weather_agent(slow, name="slow"), run_config=OFFLINE)
    gateway = Gateway([flow], stream_manager=StreamManager(harness.new_storage()))
    async with serve(gateway) as url, httpx.AsyncClient(timeout=30) as http:
        stream = stream_flow(f"{url}/slow", {"prompt": "Lima"}, http=http)
        async for chunk in stream:
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

    @function_tool
    async def slow(city: str) -> str:
        """Waits for ever."""
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            finished.set()
        return "never"

    flow = agent_flow(weather_agent(slow, name="slow"), run_config=OFFLINE)
    gateway = Gateway([flow], stream_manager=StreamManager(harness.new_storage()))
    async with serve(gateway) as url, httpx.AsyncClient(timeout=30) as http:
        stream = stream_flow(f"{url}/slow", {"prompt": "Lima"}, http=http)
        async for chunk in stream:
            if chunk["type"] == "tool-input-available":
                break
        with anyio.fail_after(10):
            await started.wait()
        assert await stream.stop()
        assert await stream.result() == ""  # done: the model wrote no text before the tool
        with anyio.fail_after(10):
            await finished.wait()  # the tool call was cancelled
