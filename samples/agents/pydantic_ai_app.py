"""A Pydantic AI agent with a tool, served with durable, resumable streaming.

Run: ``uvicorn samples.agents.pydantic_ai_app:app --port 8000`` and see
``samples/agents/README.md``. The agent uses the model named by ``AGENT_MODEL`` (any
Pydantic AI model name, e.g. ``openai:gpt-4o``, with that provider installed and its
key set); without it, Pydantic AI's offline ``TestModel``, which calls every tool
once and answers with what they returned. Chats are conversations: one answer at a
time per chat, a second message interrupts the first.

The same agent is also served durably at ``/weather-durable``: each model request and
each tool call is a step of a durable execution (SQLite journal, ``AGENT_DURABLE_DB``),
so a server killed mid-answer continues the run after its last completed step when it
starts again, on the same stream.
"""

from __future__ import annotations

import os

from pydantic_ai import Agent
from pydantic_ai.models import Model
from pydantic_ai.models.test import TestModel

from stream_gateway import Gateway, SqliteStreamManager
from stream_gateway.adapters.pydantic_ai import agent_flow, durable_agent_flow
from stream_gateway.durable import DurableEngine, SqliteDurableStore

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


def make_app(db_path: str | None = None, durable_path: str | None = None) -> Gateway:
    """The gateway: the agent at ``/weather``, streams in SQLite (``AGENT_DB``), and
    its durable variant at ``/weather-durable``, its journal in SQLite
    (``AGENT_DURABLE_DB``); the gateway runs a worker for it."""
    path = db_path or os.environ.get("AGENT_DB", ".data/agents.sqlite3")
    journal = durable_path or os.environ.get("AGENT_DURABLE_DB", ".data/agents-durable.sqlite3")
    for file in (path, journal):
        os.makedirs(os.path.dirname(file) or ".", exist_ok=True)
    chat = agent_flow(make_agent(), conversation_policy="interrupt")
    durable = durable_agent_flow(make_agent(), name="weather-durable")
    engine = DurableEngine([durable], store=SqliteDurableStore(journal))
    return Gateway([chat], stream_manager=SqliteStreamManager(path), durable=engine)


app = make_app()
