"""The Pydantic AI adapter's durable variant: each model request and each tool call is
a step of the run's journal. A real agent run (Pydantic AI's own offline models)
streams what the plain flow streams; a worker SIGKILLed after the tool step, mid-answer,
is taken over: the tool ran once, completed model requests were not made again, the
answer is the framework's own and the stream's live view has it once. And both the
plain and the durable flow end at a stop with the text so far."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from pydantic_ai import Agent, ModelRetry
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.models.test import TestModel

from stream_gateway import Gateway, InMemoryStreamManager
from stream_gateway.adapters.pydantic_ai import EventParts, agent_flow, durable_agent_flow
from stream_gateway.client import Reset, stream_flow
from stream_gateway.durable import DurableEngine, DurableFlow, InMemoryDurableStore, RetryPolicy
from stream_gateway.streams import StreamManager
from tests.backends import BackendHarness
from tests.gateway.conftest import serve

from .crashes import killed_mid_answer, view
from .durable_procs import lines
from .procs_pydantic import agent as pydantic_agent
from .resume import texts

pytestmark = pytest.mark.anyio


def weather_agent(effects: list[str]) -> Agent[None, str]:
    agent = Agent(TestModel(), name="weather")

    @agent.tool_plain
    def forecast(city: str) -> str:
        """The weather in a city."""
        effects.append(city)
        return f"sunny in {city}"

    return agent


async def plain_run(agent: Agent[None, Any], prompt: str) -> tuple[list[dict[str, Any]], Any]:
    """The chunks of the plain flow for the same run, and the agent's own output."""
    parts = EventParts()
    chunks: list[dict[str, Any]] = []
    async with agent.run_stream_events(prompt) as events:
        async for event in events:
            chunks += parts.parts(event)
        assert events.result is not None
        return chunks, events.result.output


@asynccontextmanager
async def served(
    flow: DurableFlow[Any, Any], manager: StreamManager | None = None
) -> AsyncIterator[tuple[str, DurableEngine]]:
    async with InMemoryStreamManager() as own:
        engine = DurableEngine([flow], store=InMemoryDurableStore(), poll_interval=0.02)
        worker = engine.worker(poll_interval=0.02, lease=5.0, grace=1.0)
        gateway = Gateway([], stream_manager=manager or own, durable=worker)
        async with serve(gateway) as url:
            yield f"{url}/{flow.name}", engine


async def test_a_durable_run_streams_what_the_plain_flow_streams() -> None:
    effects: list[str] = []
    plain, expected = await plain_run(weather_agent([]), "weather in Paris?")
    async with served(durable_agent_flow(weather_agent(effects))) as (url, engine):
        async with httpx.AsyncClient(timeout=30) as http:
            stream = stream_flow(url, {"prompt": "weather in Paris?"}, http=http)
            chunks = [chunk async for chunk in stream]
            assert await stream.result() == expected
        assert stream.stream_id is not None
        detail = await engine.detail(stream.stream_id)
    assert chunks == plain
    assert [c["type"] for c in chunks][:2] == ["tool-input-available", "tool-output-available"]
    assert len(effects) == 1
    assert [(e.path, e.status) for e in detail.steps] == [
        ("model", "completed"),
        ("tool-forecast", "completed"),
        ("model#2", "completed"),
    ]


async def test_a_worker_killed_mid_answer_continues_after_the_tool_call(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    prompt = "weather in Paris?"
    plain, expected = await plain_run(pydantic_agent(own), prompt)
    assert expected == "The forecast: sunny in Paris."

    def held(chunk: dict[str, Any]) -> bool:
        return chunk.get("delta") == "The forecast: "

    final, events = await killed_mid_answer(tmp_path, "pydantic", prompt, held)
    assert final.status == "completed", final.to_json()
    assert final.response == expected
    assert lines(tmp_path, "effects") == ["forecast Paris"]  # the tool ran once
    # The first request was answered once; the answer cut by the kill was asked again.
    assert lines(tmp_path, "calls") == ["request-1", "request-3", "request-3"]
    shown = view(events)
    assert shown == plain
    assert texts(shown) == "Let me check. The forecast: sunny in Paris."  # once
    assert any(type(e).__name__ == "ResetEvent" for e in events)  # the lost words went


async def test_a_tool_retry_is_memoized_as_an_outcome() -> None:
    calls: list[str] = []
    agent = Agent(TestModel(), name="flaky")

    @agent.tool_plain
    def flaky(city: str) -> str:
        calls.append(city)
        if len(calls) == 1:
            raise ModelRetry("try again")
        return "ok"

    async with served(durable_agent_flow(agent)) as (url, engine):
        async with httpx.AsyncClient(timeout=30) as http:
            stream = stream_flow(url, {"prompt": "go"}, http=http)
            chunks = [chunk async for chunk in stream]
            await stream.result()
        assert stream.stream_id is not None
        detail = await engine.detail(stream.stream_id)
    outcomes = [c for c in chunks if c["type"].startswith("tool-output")]
    assert [c["type"] for c in outcomes] == ["tool-output-error", "tool-output-available"]
    assert "try again" in outcomes[0]["errorText"]
    assert len(calls) == 2
    assert [e.path for e in detail.steps if e.path.startswith("tool")] == [
        "tool-flaky",
        "tool-flaky#2",
    ]


def test_a_nameless_agent_needs_a_flow_name() -> None:
    with pytest.raises(ValueError, match="name the flow"):
        durable_agent_flow(Agent(TestModel()))
    assert durable_agent_flow(Agent(TestModel()), name="chat").name == "chat"


# -- stop ---------------------------------------------------------------------------


def slow_agent(
    running: anyio.Event,
    release: anyio.Event,
    *,
    hold_in: str = "tool",
    ran: list[str] | None = None,
) -> Agent[None, str]:
    """Says a few words and calls ``lookup``, then answers; the first answer
    (``hold_in="model"``) or the tool waits for ``release``."""

    async def model(
        messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls]:
        if len(messages) == 1:
            yield "Looking "
            yield "it up. "
            if hold_in == "model":
                running.set()
                await release.wait()
            yield {1: DeltaToolCall("lookup", "{}", tool_call_id="call-1")}
        else:
            yield "Found it."

    agent = Agent(FunctionModel(stream_function=model), name="slow")

    @agent.tool_plain
    async def lookup() -> str:
        if ran is not None:
            ran.append("lookup")
        if hold_in == "tool":
            running.set()
            await release.wait()
        return "v"

    return agent


async def test_a_stopped_plain_run_ends_with_the_text_so_far(harness: BackendHarness) -> None:
    running, release = anyio.Event(), anyio.Event()  # never released: only a stop ends it
    gateway = Gateway(
        [agent_flow(slow_agent(running, release))],
        stream_manager=StreamManager(harness.new_storage()),
    )
    async with serve(gateway) as url, httpx.AsyncClient(timeout=30) as http:
        stream = stream_flow(f"{url}/slow", {"prompt": "find"}, http=http)
        chunks = []
        async for chunk in stream:
            chunks.append(chunk)
            if chunk["type"] == "tool-input-available":
                break
        with anyio.fail_after(10):
            await running.wait()
        assert await stream.stop()
        rest = [chunk async for chunk in stream]
        assert await stream.result() == "Looking it up. "
    assert texts(chunks + rest) == "Looking it up. "


@pytest.mark.parametrize(
    ("hold_in", "steps", "tool_runs"),
    [
        ("tool", ["model", "tool-lookup", "model#2"], 1),  # the next request sees the stop
        ("model", ["model", "tool-lookup"], 0),  # the tool call sees it: no tool runs
    ],
)
async def test_a_stopped_durable_run_ends_with_the_text_so_far(
    hold_in: str, steps: list[str], tool_runs: int
) -> None:
    running, release = anyio.Event(), anyio.Event()
    ran: list[str] = []
    agent = slow_agent(running, release, hold_in=hold_in, ran=ran)
    flow = durable_agent_flow(agent)
    async with served(flow) as (url, engine):
        async with httpx.AsyncClient(timeout=30) as http:
            stream = stream_flow(url, {"prompt": "find"}, http=http)
            async for chunk in stream:
                if chunk["type"] == "text-delta":
                    break
            with anyio.fail_after(10):
                await running.wait()
            assert await stream.stop()
            release.set()  # the step going on completes; the run stops at the next one
            assert await stream.result() == "Looking it up. "
        assert stream.stream_id is not None
        detail = await engine.detail(stream.stream_id)
    assert [e.path for e in detail.steps if e.kind == "step"] == steps
    assert len(ran) == tool_runs


async def test_a_model_request_that_fails_mid_answer_is_retracted_and_asked_again() -> None:
    attempts: list[int] = []

    async def model(
        messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls]:
        if len(messages) == 1:
            yield {0: DeltaToolCall("lookup", "{}", tool_call_id="call-1")}
            return
        attempts.append(len(attempts) + 1)
        yield "Found "
        if len(attempts) == 1:
            raise ConnectionError("the provider went away mid-answer")
        yield "it."

    def flaky_agent() -> Agent[None, str]:
        agent = Agent(FunctionModel(stream_function=model), name="flaky-model")

        @agent.tool_plain
        def lookup() -> str:
            return "v"

        return agent

    fast = RetryPolicy(max_attempts=2, backoff_base=0.0, jitter=0.0)
    async with served(durable_agent_flow(flaky_agent(), model_retry=fast)) as (url, _):
        async with httpx.AsyncClient(timeout=30) as http:
            stream = stream_flow(url, {"prompt": "find"}, http=http)
            shown: list[Any] = []
            resets = 0
            async for item in stream:
                if isinstance(item, Reset):
                    resets += 1
                    del shown[len(shown) - item.dropped :]
                else:
                    shown.append(item)
            assert await stream.result() == "Found it."
    assert attempts == [1, 2] and resets == 1
    plain, _ = await plain_run(flaky_agent(), "find")  # the model answers at once now
    assert shown == plain  # the same part ids as a run without the failure
