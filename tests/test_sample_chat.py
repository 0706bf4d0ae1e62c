"""The chat sample: its token sources (the deterministic fake, an OpenAI-compatible API)
and the app served on Postgres."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from samples.chat.flows import ChatInput, chat
from samples.chat.llm import DEFAULT_TOKENS_PER_SECOND, fake_tokens, tokens
from stream_gateway import UnavailableError
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


def completions_that_break_off(pieces: list[str]) -> ASGIApp:
    """An OpenAI-compatible endpoint that streams ``pieces``, then drops the connection
    (the response is never completed, so uvicorn closes it mid-body)."""

    async def completions(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for piece in pieces:
            delta = {"choices": [{"delta": {"content": piece}}]}
            body = f"data: {json.dumps(delta)}\n\n".encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})

    return Starlette(routes=[Mount("/v1", app=completions)])


async def test_an_endpoint_that_breaks_off_is_a_readable_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serve(completions_that_break_off(["Hel", "lo "])) as url:
        monkeypatch.setenv("CHAT_OPENAI_BASE_URL", url + "/v1")
        chunks: list[str] = []

        async def collect(chunk: object) -> None:
            chunks.append(str(chunk))

        with pytest.raises(UnavailableError, match="the language model stopped answering"):
            await chat(ChatInput(prompt="hi"), on_chunk=collect)
    assert chunks == ["Hel", "lo "]


async def test_an_endpoint_error_status_is_a_readable_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refuse(request: Request) -> JSONResponse:
        return JSONResponse({"error": {"message": "rate limited"}}, status_code=429)

    api = Starlette(routes=[Route("/chat/completions", refuse, methods=["POST"])])
    async with serve(api) as url:
        monkeypatch.setenv("CHAT_OPENAI_BASE_URL", url)
        with pytest.raises(UnavailableError, match="answered HTTP 429") as caught:
            await chat(ChatInput(prompt="hi"))
    assert caught.value.details == {"httpStatus": 429}


async def test_the_demo_default_rate_leaves_time_to_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    # The page invites a reload mid-answer: the default pace must leave several seconds.
    monkeypatch.delenv("CHAT_TOKENS_PER_SECOND", raising=False)
    monkeypatch.delenv("CHAT_OPENAI_BASE_URL", raising=False)
    count = len([t async for t in fake_tokens("why?", 0)])
    assert count / DEFAULT_TOKENS_PER_SECOND >= 5
    pauses: list[float] = []

    async def record(delay: float) -> None:
        pauses.append(delay)

    monkeypatch.setattr(anyio, "sleep", record)
    assert [t async for t in tokens("why?")] == [t async for t in fake_tokens("why?", 0)]
    assert pauses == [1 / DEFAULT_TOKENS_PER_SECOND] * count


async def test_the_rate_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAT_OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("CHAT_TOKENS_PER_SECOND", "40")
    pauses: list[float] = []

    async def record(delay: float) -> None:
        pauses.append(delay)

    monkeypatch.setattr(anyio, "sleep", record)
    count = len([t async for t in tokens("why?")])
    assert pauses == [1 / 40] * count


async def test_the_sample_streams_a_chat_through_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx
    from stream_gateway_redis.testing import shared_server

    from samples.chat.app import build_app

    monkeypatch.delenv("CHAT_OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("CHAT_TOKENS_PER_SECOND", "0")
    monkeypatch.setenv("REDIS_URL", shared_server().url)
    headers = {"accept": "text/event-stream", "content-type": "application/json"}
    async with serve(build_app(backend="redis")) as url, httpx.AsyncClient() as http:
        first = await http.post(
            url + "/flows/chat", json={"data": {"prompt": "hi"}}, headers=headers
        )
        stream_id = first.headers["x-genkit-stream-id"]
        # A reconnect by stream id replays the same answer from Redis.
        again = await http.post(
            url + "/flows/chat", headers={**headers, "x-genkit-stream-id": stream_id}
        )
    assert first.status_code == again.status_code == 200
    assert b'"result":' in first.content and again.content == first.content
    assert first.content.count(b'{"message":') > 50


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
