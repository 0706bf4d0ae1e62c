"""The LangGraph agent of the crash tests (see `tests.adapters.durable_procs`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, ToolMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.tools import tool

from stream_gateway.adapters.langgraph import durable_graph_flow
from stream_gateway.durable import DurableFlow

from .durable_procs import held, log
from .langgraph_model import Graph, WeatherModel, agent_graph


class HeldWeatherModel(WeatherModel):
    """`WeatherModel`, each request logged; its answer held after its first word."""

    directory: Path

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        log(self.directory, "calls", f"request-{len(messages)}")
        answering = isinstance(messages[-1], ToolMessage)
        async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
            yield chunk
            if answering:
                await held(self.directory)


def agent(directory: Path) -> Graph:
    """A weather graph: a tool call, then an answer from the tool's result."""

    @tool
    def forecast(city: str) -> str:
        """Today's forecast for a city."""
        log(directory, "effects", f"forecast {city}")
        return f"sunny in {city}"

    return agent_graph(HeldWeatherModel(directory=directory), [forecast])


def flow(directory: Path) -> DurableFlow[Any, Any]:
    return durable_graph_flow(agent(directory), name="langgraph-weather")
