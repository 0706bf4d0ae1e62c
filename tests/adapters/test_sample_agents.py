"""The agent samples, served as their README runs them (offline models)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from agents import Runner
from langchain_core.messages import HumanMessage

from samples.agents import langgraph_app, openai_agents_app
from samples.agents.pydantic_ai_app import make_agent, make_app
from stream_gateway.client import stream_flow
from tests.gateway.conftest import serve

pytestmark = pytest.mark.anyio


async def test_the_sample_streams_the_agent_run(tmp_path: Path) -> None:
    expected = (await make_agent().run("Weather in Paris?")).output
    async with serve(make_app(str(tmp_path / "agents.sqlite3"))) as url:
        async with httpx.AsyncClient(timeout=30) as http:
            stream = stream_flow(
                f"{url}/weather",
                {"prompt": "Weather in Paris?"},
                http=http,
                headers={"x-conversation-id": "chat-1"},
            )
            chunks = [chunk async for chunk in stream]
            assert await stream.result() == expected
            active = await http.get(f"{url}/weather/conversations/chat-1")
    assert active.status_code == 204  # the run is over
    assert [c["toolName"] for c in chunks if c["type"] == "tool-input-available"] == ["forecast"]


async def test_the_sample_serves_the_durable_variant(tmp_path: Path) -> None:
    expected = (await make_agent().run("Weather in Paris?")).output
    app = make_app(str(tmp_path / "agents.sqlite3"), str(tmp_path / "durable.sqlite3"))
    async with serve(app) as url, httpx.AsyncClient(timeout=30) as http:
        stream = stream_flow(f"{url}/weather-durable", {"prompt": "Weather in Paris?"}, http=http)
        chunks = [chunk async for chunk in stream]
        assert await stream.result() == expected
        execution = (await http.get(f"{url}/durable/ops/{stream.stream_id}")).json()
        detail = (await http.get(f"{url}/durable/ops/{stream.stream_id}/detail")).json()
    assert execution["done"] is True
    assert [step["path"] for step in detail["steps"]] == ["model", "tool-forecast", "model#2"]
    assert [c["toolName"] for c in chunks if c["type"] == "tool-input-available"] == ["forecast"]


async def test_the_langgraph_sample_streams_the_graph_run(tmp_path: Path) -> None:
    state = await langgraph_app.make_graph().ainvoke({"messages": [HumanMessage("Oslo?")]})
    expected = state["messages"][-1].text
    assert expected == "Today: snow, -3 C."
    async with serve(langgraph_app.make_app(str(tmp_path / "agents.sqlite3"))) as url:
        async with httpx.AsyncClient(timeout=30) as http:
            stream = stream_flow(f"{url}/weather", {"prompt": "Oslo?"}, http=http)
            chunks = [chunk async for chunk in stream]
            assert await stream.result() == expected
    (call,) = [c for c in chunks if c["type"] == "tool-input-available"]
    assert call["toolName"] == "forecast" and call["input"] == {"city": "Oslo"}
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == expected


async def test_the_openai_agents_sample_streams_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENT_MODEL", raising=False)
    expected = (
        await Runner.run(
            openai_agents_app.make_agent(), "London?", run_config=openai_agents_app.run_config()
        )
    ).final_output
    assert expected == "Today: light rain, 14 C."
    async with serve(openai_agents_app.make_app(str(tmp_path / "agents.sqlite3"))) as url:
        async with httpx.AsyncClient(timeout=30) as http:
            stream = stream_flow(f"{url}/weather", {"prompt": "London?"}, http=http)
            chunks = [chunk async for chunk in stream]
            assert await stream.result() == expected
    (call,) = [c for c in chunks if c["type"] == "tool-input-available"]
    assert call["toolName"] == "forecast" and call["input"] == {"city": "London"}
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == expected
