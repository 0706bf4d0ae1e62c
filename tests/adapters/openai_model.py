"""An offline model for the OpenAI Agents SDK (its model interface, Responses API
events): it thinks, calls the first tool with the prompt's last word as ``city``,
then answers with what the tool returned."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from agents import ModelResponse, RunConfig, Usage
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
    ResponseReasoningItem,
    ResponseReasoningSummaryTextDeltaEvent,
    ResponseTextDeltaEvent,
)
from openai.types.responses.response_reasoning_item import Summary

__all__ = ["OFFLINE", "WeatherModel"]

OFFLINE = RunConfig(tracing_disabled=True)


class WeatherModel(Model):
    """An offline model: it thinks, calls the first tool with the prompt's last word as
    ``city``, then answers with what the tool returned. It streams as the Responses
    API does: reasoning and text word by word, each output item added, then done."""

    def _reply(self, input: str | list[TResponseInputItem], tool: str) -> list[Any]:
        items: list[Any] = (
            [{"type": "message", "content": input}] if isinstance(input, str) else input
        )
        last: Any = items[-1]
        turn = len(items)
        if last.get("type") == "function_call_output":
            text = f"The forecast: {last['output']}."
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
        prompt = last["content"] if isinstance(last["content"], str) else last["content"][0]["text"]
        city = prompt.split()[-1].strip("?")
        return [
            ResponseReasoningItem(
                id=f"rs-{turn}",
                type="reasoning",
                summary=[Summary(text=f"look up {city}", type="summary_text")],
            ),
            ResponseFunctionToolCall(
                id=f"fc-{turn}",
                type="function_call",
                call_id=f"call-{turn}",
                name=tool,
                arguments=json.dumps({"city": city}),
                status="completed",
            ),
        ]

    async def get_response(
        self,
        system_instructions: Any,
        input: Any,
        model_settings: Any,
        tools: Any,
        *args: Any,
        **kwargs: Any,
    ) -> ModelResponse:
        output = self._reply(input, tools[0].name)
        return ModelResponse(output=output, usage=Usage(), response_id=None)

    async def stream_response(
        self,
        system_instructions: Any,
        input: Any,
        model_settings: Any,
        tools: Any,
        *args: Any,
        **kwargs: Any,
    ) -> AsyncIterator[TResponseStreamEvent]:
        output = self._reply(input, tools[0].name)
        number = itertools.count()
        for index, item in enumerate(output):
            yield ResponseOutputItemAddedEvent(
                type="response.output_item.added",
                item=item,
                output_index=index,
                sequence_number=next(number),
            )
            if isinstance(item, ResponseReasoningItem):
                for word in re.split(r"(?<= )", item.summary[0].text):
                    yield ResponseReasoningSummaryTextDeltaEvent(
                        type="response.reasoning_summary_text.delta",
                        item_id=item.id,
                        output_index=index,
                        summary_index=0,
                        delta=word,
                        sequence_number=next(number),
                    )
            if isinstance(item, ResponseOutputMessage):
                for word in re.split(r"(?<= )", item.content[0].text):  # type: ignore[union-attr]
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
            id=f"resp-{len(input)}",
            created_at=0,
            model="weather-test",
            object="response",
            output=output,
            tool_choice="auto",
            tools=[],
            parallel_tool_calls=False,
        )
        yield ResponseCompletedEvent(
            type="response.completed", response=response, sequence_number=next(number)
        )
