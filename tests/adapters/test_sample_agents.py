"""The Pydantic AI sample app, served as its README runs it (offline TestModel)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

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
