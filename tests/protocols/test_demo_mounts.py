"""`make demo` serves the AI SDK sample and Durable Streams next to the chat sample."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from samples.aisdk.app import STATIC
from samples.aisdk.flows import answer_tokens
from samples.chat.app import build_app
from tests.gateway.conftest import serve

pytestmark = pytest.mark.anyio


async def test_the_demo_mounts_the_chat_endpoint_durable_streams_and_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AISDK_TOKEN_DELAY", "0")
    body = {"id": "c1", "messages": [{"id": "u1", "role": "user", "parts": [
        {"type": "text", "text": "three little words"}]}]}  # fmt: skip
    async with serve(build_app(tmp_path / "s.db", "sqlite")) as url:
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.post(f"{url}/api/chat", json=body)
            assert answer.headers["x-vercel-ai-ui-message-stream"] == "v1"
            frames = [f[6:] for f in answer.text.split("\n\n") if f.startswith("data: ")]
            assert frames[-1] == "[DONE]"
            start = json.loads(frames[0])
            assert start["type"] == "start"
            # The answer's stream id is its message id; Durable Streams reads it.
            log = await http.get(f"{url}/ds/{start['messageId']}")
            assert log.status_code == 200
            tokens = len(answer_tokens("three little words"))
            assert log.json()[-1] == {"result": {"messageMetadata": {"tokens": tokens}}}
            page = await http.get(f"{url}/aisdk/")
            if (STATIC / "app.js").exists():
                assert page.status_code == 200 and "app.js" in page.text
            else:
                assert page.status_code == 503 and "make demo" in page.text
            assert (await http.get(f"{url}/flows/chat")).status_code == 200
