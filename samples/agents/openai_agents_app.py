"""An OpenAI Agents SDK agent with a tool, served with durable, resumable streaming.

Run: ``uvicorn samples.agents.openai_agents_app:app --port 8000`` and see
``samples/agents/README.md``. The agent uses the OpenAI model named by
``AGENT_MODEL`` (``gpt-4o``, say, with ``OPENAI_API_KEY`` set); without it, an offline
model that asks the forecast tool about the prompt's last word and answers with what
it returned, streaming word by word (and tracing is off).
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, ModelResponse, RunConfig, Usage, function_tool
from agents.items import TResponseInputItem, TResponseStreamEvent
from agents.models.interface import Model
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputRefusal,
    ResponseOutputText,
    ResponseTextDeltaEvent,
)

from samples.agents.weather import forecast_for, last_word
from stream_gateway import Gateway, SqliteStreamManager
from stream_gateway.adapters.openai_agents import agent_flow


@function_tool
def forecast(city: str) -> str:
    """Today's forecast for a city."""
    return forecast_for(city)


class OfflineModel(Model):
    """Asks for the forecast of the prompt's last word, then answers with it."""

    def _reply(self, input: str | list[TResponseInputItem]) -> list[Any]:
        items: list[Any] = [{"role": "user", "content": input}] if isinstance(input, str) else input
        last, turn = items[-1], len(items)
        if last.get("type") == "function_call_output":
            text = f"Today: {last['output']}."
            content: list[ResponseOutputText | ResponseOutputRefusal] = [
                ResponseOutputText(type="output_text", text=text, annotations=[])
            ]
            return [
                ResponseOutputMessage(
                    id=f"msg-{turn}",
                    type="message",
                    role="assistant",
                    status="completed",
                    content=content,
                )
            ]
        prompt = last["content"] if isinstance(last["content"], str) else ""
        return [
            ResponseFunctionToolCall(
                id=f"fc-{turn}",
                type="function_call",
                call_id=f"call-{turn}",
                name="forecast",
                arguments=json.dumps({"city": last_word(prompt)}),
                status="completed",
            )
        ]

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        return ModelResponse(output=self._reply(input), usage=Usage(), response_id=None)

    async def stream_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> AsyncIterator[TResponseStreamEvent]:
        output = self._reply(input)
        number = itertools.count()
        for index, item in enumerate(output):
            yield ResponseOutputItemAddedEvent(
                type="response.output_item.added",
                item=item,
                output_index=index,
                sequence_number=next(number),
            )
            if isinstance(item, ResponseOutputMessage):
                text = item.content[0].text  # type: ignore[union-attr]
                for word in re.split(r"(?<= )", text):
                    yield ResponseTextDeltaEvent(
                        type="response.output_text.delta",
                        item_id=item.id,
                        output_index=index,
                        content_index=0,
                        delta=word,
                        logprobs=[],
                        sequence_number=next(number),
                    )
            yield ResponseOutputItemDoneEvent(
                type="response.output_item.done",
                item=item,
                output_index=index,
                sequence_number=next(number),
            )
        response = Response(
            id=f"offline-{len(input)}",
            created_at=0,
            model="offline-weather",
            object="response",
            output=output,
            tool_choice="auto",
            tools=[],
            parallel_tool_calls=False,
        )
        yield ResponseCompletedEvent(
            type="response.completed", response=response, sequence_number=next(number)
        )


def make_agent(model: Model | str | None = None) -> Agent[Any]:
    """The weather agent, on ``model`` (default: ``AGENT_MODEL``, else the offline one)."""
    chosen = model or os.environ.get("AGENT_MODEL") or OfflineModel()
    return Agent(
        name="weather",
        instructions="Answer with the forecast tool's help.",
        model=chosen,
        tools=[forecast],
    )


def run_config() -> RunConfig:
    """Traces go to OpenAI only for a real model."""
    return RunConfig(tracing_disabled=not os.environ.get("AGENT_MODEL"))


def make_app(db_path: str | None = None) -> Gateway:
    """The gateway: the agent at ``/weather``, streams in SQLite (``AGENT_DB``)."""
    path = db_path or os.environ.get("AGENT_DB", ".data/agents.sqlite3")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    chat = agent_flow(make_agent(), conversation_policy="interrupt", run_config=run_config())
    return Gateway([chat], stream_manager=SqliteStreamManager(path))


app = make_app()
