"""The chat sample: its token sources (the deterministic fake, an OpenAI-compatible API)
and the app served on Postgres."""

from __future__ import annotations

import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from samples.chat.flows import ChatInput, chat
from tests.gateway.conftest import serve

pytestmark = pytest.mark.anyio


async def test_fake_llm_streams_the_deterministic_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAT_OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("CHAT_TOKENS_PER_SECOND", "0")  # no pacing in tests
    chunks: list[str] = []

    async def collect(chunk: object) -> None:
        chunks.append(str(chunk))

    answer = await chat(ChatInput(prompt="why?"), on_chunk=collect)
    assert answer == "".join(chunks)
    assert answer.startswith("Durable streaming means") and answer.endswith("You asked: why?")
    assert len(chunks) > 50


async def test_streams_from_an_openai_compatible_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, object]] = []

    async def completions(request: Request) -> StreamingResponse:
        body = await request.json()
        seen.append({"body": body, "auth": request.headers.get("authorization")})

        async def events() -> object:
            yield b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'
            for piece in ["Hel", "lo ", "wörld"]:
                delta = {"choices": [{"delta": {"content": piece}}]}
                yield f"data: {json.dumps(delta)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")  # type: ignore[arg-type]

    api = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    async with serve(api) as url:
        monkeypatch.setenv("CHAT_OPENAI_BASE_URL", url + "/v1")
        monkeypatch.setenv("CHAT_OPENAI_MODEL", "tiny")
        monkeypatch.setenv("CHAT_OPENAI_API_KEY", "sk-test")
        chunks: list[str] = []

        async def collect(chunk: object) -> None:
            chunks.append(str(chunk))

        answer = await chat(ChatInput(prompt="hi"), on_chunk=collect)
    assert chunks == ["Hel", "lo ", "wörld"]
    assert answer == "Hello wörld"
    assert seen == [
        {
            "body": {
                "model": "tiny",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
            "auth": "Bearer sk-test",
        }
    ]


async def test_the_sample_serves_and_resumes_on_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    """``STREAM_BACKEND=postgres make demo``: the same app, on the server of the run."""
    from stream_gateway_postgres.testing import drop_schema, shared_server

    from samples.chat.app import build_app

    server = shared_server()
    monkeypatch.setenv("POSTGRES_DSN", server.dsn)
    monkeypatch.setenv("CHAT_TOKENS_PER_SECOND", "0")
    monkeypatch.delenv("CHAT_OPENAI_BASE_URL", raising=False)
    headers = {"accept": "text/event-stream", "content-type": "application/json"}
    try:
        async with serve(build_app(backend="postgres")) as url, httpx.AsyncClient() as http:
            first = await http.post(
                f"{url}/flows/chat", json={"data": {"prompt": "pg?"}}, headers=headers
            )
            stream_id = first.headers["x-genkit-stream-id"]
            again = await http.post(
                f"{url}/flows/chat", headers={**headers, "x-genkit-stream-id": stream_id}
            )
    finally:
        await drop_schema(server.dsn, "stream_gateway")
    assert first.status_code == again.status_code == 200
    assert first.text.endswith('You asked: pg?"}\n\n') and first.text.count('"message"') > 50
    assert again.text == first.text  # replayed from the database, frame for frame
