"""Offline chat models for LangGraph and the ReAct graph the tests run on them."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import BaseTool, tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition

__all__ = ["Graph", "ListModel", "WeatherModel", "agent_graph", "forecast"]

Graph = CompiledStateGraph[Any, Any, Any, Any]


@tool
def forecast(city: str) -> str:
    """Today's forecast for a city."""
    return f"sunny in {city}"


class WeatherModel(BaseChatModel):
    """An offline chat model that asks for the forecast of the prompt's last word, then
    answers with what the tool said. It streams as providers do: its text word by word,
    its tool call's arguments in two pieces."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> WeatherModel:
        return self

    @property
    def _llm_type(self) -> str:
        return "weather-test"

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        last = messages[-1]
        turn = f"m{len(messages)}"
        if isinstance(last, ToolMessage):
            return AIMessage(f"The forecast: {last.text}.", id=turn)
        city = last.text.split()[-1].strip("?")
        call = {"name": "forecast", "args": {"city": city}, "id": f"call-{turn}"}
        return AIMessage("Let me check.", tool_calls=[call], id=turn)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        reply = self._reply(messages)
        for word in re.split(r"(?<= )", reply.text):
            yield ChatGenerationChunk(message=AIMessageChunk(content=word, id=reply.id))
        for index, call in enumerate(reply.tool_calls):
            args = json.dumps(call["args"])
            half = len(args) // 2
            pieces = [
                tool_call_chunk(name=call["name"], args=args[:half], id=call["id"], index=index),
                tool_call_chunk(args=args[half:], index=index),
            ]
            for piece in pieces:
                yield ChatGenerationChunk(
                    message=AIMessageChunk(content="", id=reply.id, tool_call_chunks=[piece])
                )


class ListModel(FakeMessagesListChatModel):
    """LangChain's fake model that answers whole messages (it does not stream)."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ListModel:
        return self


def agent_graph(
    model: BaseChatModel, tools: Sequence[BaseTool], name: str = "weather", *, catch: bool = False
) -> Graph:
    """The ReAct loop: the model, then the tools it calls, until it answers. ``catch``:
    a tool's error goes back to the model as an error result instead of failing the run."""
    bound = model.bind_tools(tools) if tools else model

    async def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", call_model)
    builder.add_node("tools", ToolNode(tools, handle_tool_errors=catch))
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", tools_condition)
    builder.add_edge("tools", "model")
    return builder.compile(name=name)
