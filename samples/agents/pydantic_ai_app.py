"""A Pydantic AI agent with a tool, served with durable, resumable streaming.

Run: ``uvicorn samples.agents.pydantic_ai_app:app --port 8000`` and see
``samples/agents/README.md``. The agent uses the model named by ``AGENT_MODEL`` (any
Pydantic AI model name, e.g. ``openai:gpt-4o``, with that provider installed and its
key set); without it, Pydantic AI's offline ``TestModel``, which calls every tool
once and answers with what they returned. Chats are conversations: one answer at a
time per chat, a second message interrupts the first.
"""

from __future__ import annotations

import os

from pydantic_ai import Agent
from pydantic_ai.models import Model
from pydantic_ai.models.test import TestModel

from stream_gateway import Gateway, SqliteStreamManager
from stream_gateway.adapters.pydantic_ai import agent_flow

_FORECASTS = {"paris": "sunny, 21 C", "london": "light rain, 14 C", "oslo": "snow, -3 C"}


def make_agent(model: Model | str | None = None) -> Agent[None, str]:
    """The weather agent, on ``model`` (default: ``AGENT_MODEL``, else ``TestModel``)."""
    chosen = model or os.environ.get("AGENT_MODEL") or TestModel()
    agent = Agent(chosen, name="weather", instructions="Answer with the forecast tool's help.")

    @agent.tool_plain
    def forecast(city: str) -> str:
        """Today's forecast for a city."""
        return _FORECASTS.get(city.lower(), f"no forecast for {city}")

    return agent


def make_app(db_path: str | None = None) -> Gateway:
    """The gateway: the agent at ``/weather``, streams in SQLite (``AGENT_DB``)."""
    path = db_path or os.environ.get("AGENT_DB", ".data/agents.sqlite3")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    chat = agent_flow(make_agent(), conversation_policy="interrupt")
    return Gateway([chat], stream_manager=SqliteStreamManager(path))


app = make_app()
