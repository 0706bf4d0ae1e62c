"""A LangGraph agent (a model node and LangGraph's `ToolNode`), served with durable,
resumable streaming.

Run: ``uvicorn samples.agents.langgraph_app:app --port 8000`` and see
``samples/agents/README.md``. The graph's model is an offline chat model that asks the
forecast tool about the prompt's last word and answers with what it returned,
streaming word by word; put any LangChain chat model with tool calling in its place
(``make_graph(ChatOpenAI(model="gpt-4o"))`` with ``langchain-openai``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from samples.agents.weather import forecast_for, last_word
from stream_gateway import Gateway, SqliteStreamManager
from stream_gateway.adapters.langgraph import graph_flow


@tool
def forecast(city: str) -> str:
    """Today's forecast for a city."""
    return forecast_for(city)


class OfflineModel(BaseChatModel):
    """Asks for the forecast of the prompt's last word, then answers with it."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> OfflineModel:
        return self

    @property
    def _llm_type(self) -> str:
        return "offline-weather"

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        last, turn = messages[-1], f"reply-{len(messages)}"
        if isinstance(last, ToolMessage):
            return AIMessage(f"Today: {last.text}.", id=turn)
        call = {"name": "forecast", "args": {"city": last_word(last.text)}, "id": f"call-{turn}"}
        return AIMessage("", tool_calls=[call], id=turn)

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
            piece = tool_call_chunk(name=call["name"], args=args, id=call["id"], index=index)
            yield ChatGenerationChunk(
                message=AIMessageChunk(content="", id=reply.id, tool_call_chunks=[piece])
            )


def make_graph(model: BaseChatModel | None = None) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The agent: ``model`` (default: the offline one) and the forecast tool, in a loop."""
    bound = (model or OfflineModel()).bind_tools([forecast])

    async def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", call_model)
    builder.add_node("tools", ToolNode([forecast]))
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", tools_condition)
    builder.add_edge("tools", "model")
    return builder.compile(name="weather")


def make_app(db_path: str | None = None) -> Gateway:
    """The gateway: the graph at ``/weather``, streams in SQLite (``AGENT_DB``)."""
    path = db_path or os.environ.get("AGENT_DB", ".data/agents.sqlite3")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    chat = graph_flow(make_graph(), conversation_policy="interrupt")
    return Gateway([chat], stream_manager=SqliteStreamManager(path))


app = make_app()
