"""The Pydantic AI agent of the crash tests (see `tests.adapters.durable_procs`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from stream_gateway.adapters.pydantic_ai import durable_agent_flow
from stream_gateway.durable import DurableFlow

from .durable_procs import held, log


def agent(directory: Path) -> Agent[None, str]:
    """A weather agent: a tool call, then an answer from the tool's result."""

    async def model(
        messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls]:
        results = [
            part.content
            for message in messages
            if isinstance(message, ModelRequest)
            for part in message.parts
            if isinstance(part, ToolReturnPart)
        ]
        log(directory, "calls", f"request-{len(messages)}")
        if not results:
            yield "Let me check. "
            yield {1: DeltaToolCall("forecast", '{"city": "Paris"}', tool_call_id="call-1")}
            return
        yield "The forecast: "
        await held(directory)
        yield f"{results[0]}."

    agent = Agent(FunctionModel(stream_function=model), name="weather")

    @agent.tool_plain
    def forecast(city: str) -> str:
        """The weather in a city."""
        log(directory, "effects", f"forecast {city}")
        return f"sunny in {city}"

    return agent


def flow(directory: Path) -> DurableFlow[Any, Any]:
    return durable_agent_flow(agent(directory), name="pydantic-weather")
