"""The OpenAI Agents SDK adapter's durable variant: each model request and each
function tool call is a step of the run's journal. A real `Runner.run_streamed` (an
offline `Model` of our own) streams what the plain flow streams; a worker SIGKILLed
after the tool step, mid-answer, is taken over: the tool ran once, completed model
requests were not made again, the answer is the SDK's own and the stream's live view
has it once; a stop ends the run with the text so far."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from agents import Agent, Runner, function_tool

from stream_gateway import Gateway, InMemoryStreamManager
from stream_gateway.adapters.openai_agents import RunEventParts, durable_agent_flow
from stream_gateway.client import stream_flow
from stream_gateway.durable import DurableEngine, DurableFlow, InMemoryDurableStore
from tests.gateway.conftest import serve

from .crashes import killed_mid_answer, view
from .durable_procs import lines
from .openai_model import OFFLINE, WeatherModel
from .procs_openai import agent as openai_agent
from .resume import texts

pytestmark = pytest.mark.anyio


async def plain_run(agent: Agent[Any], prompt: str) -> tuple[list[dict[str, Any]], Any]:
    """The chunks of the plain flow for the same run, and the SDK's own output."""
    parts = RunEventParts()
    result = Runner.run_streamed(agent, prompt, run_config=OFFLINE)
    chunks = [part async for event in result.stream_events() for part in parts.parts(event)]
    return chunks + parts.end(), result.final_output


@asynccontextmanager
async def served(flow: DurableFlow[Any, Any]) -> AsyncIterator[tuple[str, DurableEngine]]:
    async with InMemoryStreamManager() as manager:
        engine = DurableEngine([flow], store=InMemoryDurableStore(), poll_interval=0.02)
        worker = engine.worker(poll_interval=0.02, lease=5.0, grace=1.0)
        async with serve(Gateway([], stream_manager=manager, durable=worker)) as url:
            yield f"{url}/{flow.name}", engine


def counted_agent(effects: list[str], name: str = "weather") -> Agent[Any]:
    @function_tool
    def forecast(city: str) -> str:
        """Today's forecast for a city."""
        effects.append(city)
        return f"sunny in {city}"

    return Agent(name=name, model=WeatherModel(), tools=[forecast])


async def test_a_durable_run_streams_what_the_plain_flow_streams() -> None:
    effects: list[str] = []
    plain, expected = await plain_run(counted_agent([]), "Weather in Paris?")
    assert expected == "The forecast: sunny in Paris."
    flow = durable_agent_flow(counted_agent(effects), run_config=OFFLINE)
    async with served(flow) as (url, engine):
        async with httpx.AsyncClient(timeout=30) as http:
            stream = stream_flow(url, {"prompt": "Weather in Paris?"}, http=http)
            chunks = [chunk async for chunk in stream]
            assert await stream.result() == expected
        assert stream.stream_id is not None
        detail = await engine.detail(stream.stream_id)
    assert chunks == plain
    assert effects == ["Paris"]
    assert [(e.path, e.status) for e in detail.steps] == [
        ("model", "completed"),
        ("tool-forecast-call-1", "completed"),
        ("model#2", "completed"),
    ]


async def test_a_worker_killed_mid_answer_continues_after_the_tool_call(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    prompt = "Weather in Paris?"
    plain, expected = await plain_run(openai_agent(own), prompt)
    assert expected == "The forecast: sunny in Paris."

    def held(chunk: dict[str, Any]) -> bool:
        return chunk.get("delta") == "The "

    final, events = await killed_mid_answer(tmp_path, "openai", prompt, held)
    assert final.status == "completed", final.to_json()
    assert final.response == expected
    assert lines(tmp_path, "effects") == ["forecast Paris"]  # the tool ran once
    # The first request was answered once; the answer cut by the kill was asked again.
    first, cut, again = lines(tmp_path, "calls")
    assert cut == again != first
    shown = view(events)
    assert shown == plain
    assert texts(shown) == expected  # once
    assert any(type(e).__name__ == "ResetEvent" for e in events)  # the lost words went


async def test_a_stopped_durable_run_ends_with_the_text_so_far() -> None:
    running, release = anyio.Event(), anyio.Event()
    ran: list[str] = []

    @function_tool
    async def lookup(city: str) -> str:
        """Looks a city up, slowly."""
        ran.append(city)
        running.set()
        await release.wait()
        return "found"

    agent = Agent(name="slow", model=WeatherModel(), tools=[lookup])
    async with served(durable_agent_flow(agent, run_config=OFFLINE)) as (url, engine):
        async with httpx.AsyncClient(timeout=30) as http:
            stream = stream_flow(url, {"prompt": "Lima"}, http=http)
            async for chunk in stream:
                if chunk["type"] == "tool-input-available":
                    break
            with anyio.fail_after(10):
                await running.wait()
            assert await stream.stop()
            release.set()  # the tool step completes; the run stops before the next request
            assert await stream.result() == ""  # the model said nothing before the tool
        assert stream.stream_id is not None
        detail = await engine.detail(stream.stream_id)
    steps = [e.path for e in detail.steps if e.kind == "step"]
    assert steps == ["model", "tool-lookup-call-1", "model#2"]
    assert ran == ["Lima"]


def test_handoffs_are_refused() -> None:
    other = Agent(name="other", model=WeatherModel())
    with pytest.raises(ValueError, match="handoffs"):
        durable_agent_flow(Agent(name="front", model=WeatherModel(), handoffs=[other]))
