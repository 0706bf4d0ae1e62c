"""The OpenAI Agents SDK agent of the crash tests (see `tests.adapters.durable_procs`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agents import Agent, function_tool
from agents.items import TResponseStreamEvent
from openai.types.responses import ResponseTextDeltaEvent

from stream_gateway.adapters.openai_agents import durable_agent_flow
from stream_gateway.durable import DurableFlow

from .durable_procs import held, log
from .openai_model import OFFLINE, WeatherModel


class HeldWeatherModel(WeatherModel):
    """`WeatherModel`, each request logged; its answer held after its first word."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def stream_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> AsyncIterator[TResponseStreamEvent]:
        turn = 1 if isinstance(input, str) else len(input)
        log(self.directory, "calls", f"request-{turn}")
        events = super().stream_response(system_instructions, input, *args, **kwargs)
        async for event in events:
            yield event
            if isinstance(event, ResponseTextDeltaEvent):
                await held(self.directory)


def agent(directory: Path) -> Agent[Any]:
    """A weather agent: it thinks, calls ``forecast``, then answers from its result."""

    @function_tool
    def forecast(city: str) -> str:
        """Today's forecast for a city."""
        log(directory, "effects", f"forecast {city}")
        return f"sunny in {city}"

    return Agent(name="weather", model=HeldWeatherModel(directory), tools=[forecast])


def flow(directory: Path) -> DurableFlow[Any, Any]:
    return durable_agent_flow(agent(directory), name="openai-weather", run_config=OFFLINE)
