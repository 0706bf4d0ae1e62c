"""UIMessageEncoder and UIMessageStreamApp beyond the AI SDK's own tests (samples/aisdk/test)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from stream_gateway import FlowContext, InMemoryStreamManager, InvalidArgumentError, flow
from stream_gateway.protocols import UIMessageEncoder, UIMessageStreamApp
from tests.gateway.conftest import serve
from tests.servers.flows_app import bearer_auth

pytestmark = pytest.mark.anyio


def test_text_and_reasoning_runs_open_and_close_around_other_parts() -> None:
    encoder = UIMessageEncoder("m1")
    out = encoder.start()
    for chunk in [
        "Hel",
        "lo",
        {"type": "reasoning", "text": "hmm"},
        {"type": "data-x", "data": 1},
        "!",
    ]:
        out += encoder.chunk(chunk)
    out += encoder.finish({"messageMetadata": {"n": 1}})
    assert out == [
        {"type": "start", "messageId": "m1"},
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": "Hel"},
        {"type": "text-delta", "id": "text-1", "delta": "lo"},
        {"type": "text-end", "id": "text-1"},
        {"type": "reasoning-start", "id": "reasoning-2"},
        {"type": "reasoning-delta", "id": "reasoning-2", "delta": "hmm"},
        {"type": "reasoning-end", "id": "reasoning-2"},
        {"type": "data-x", "data": 1},
        {"type": "text-start", "id": "text-3"},
        {"type": "text-delta", "id": "text-3", "delta": "!"},
        {"type": "text-end", "id": "text-3"},
        {"type": "finish", "messageMetadata": {"n": 1}},
    ]


def test_tool_calls_results_errors_and_pass_through() -> None:
    encoder = UIMessageEncoder("m")
    call = {"type": "tool-call", "toolCallId": "c", "toolName": "t", "input": {"a": 1}}
    assert encoder.chunk(call) == [
        {"type": "tool-input-start", "toolCallId": "c", "toolName": "t"},
        {"type": "tool-input-available", "toolCallId": "c", "toolName": "t", "input": {"a": 1}},
    ]
    failed = {"type": "tool-result", "toolCallId": "c", "errorText": "no"}
    assert encoder.chunk(failed) == [
        {"type": "tool-output-error", "toolCallId": "c", "errorText": "no"}
    ]
    source = {"type": "source-url", "sourceId": "s", "url": "https://example.com"}
    assert encoder.chunk(source) == [source]
    assert encoder.chunk("x")[0]["type"] == "text-start"
    assert encoder.error("boom") == [
        {"type": "text-end", "id": "text-1"},
        {"type": "error", "errorText": "boom"},
    ]


@pytest.mark.parametrize(
    "chunk",
    [42, None, {"no": "type"}, {"type": "banana"}, {"type": "tool-call", "toolCallId": "c"}],
)
def test_chunks_it_cannot_express_are_refused(chunk: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        UIMessageEncoder("m").chunk(chunk)


@flow
async def odd(request: dict[str, Any], ctx: FlowContext[Any]) -> None:
    """Sends a text token, then a chunk no UI part can carry."""
    await ctx.send_chunk("ok")
    await ctx.send_chunk(12345)


@pytest.fixture
async def base() -> AsyncIterator[str]:
    app = UIMessageStreamApp(
        odd, stream_manager=InMemoryStreamManager(), context_provider=bearer_auth
    )
    async with serve(app) as url:
        yield url


def frames(text: str) -> list[Any]:
    data = [line[6:] for line in text.split("\n\n") if line.startswith("data: ")]
    return [json.loads(d) if d != "[DONE]" else d for d in data]


BODY = {"id": "c1", "messages": [{"id": "u", "role": "user", "parts": []}]}


async def test_a_chunk_without_a_ui_part_ends_the_answer_with_an_error(base: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{base}/", json=BODY)
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert frames(response.text)[-3:] == [
            {"type": "text-end", "id": "text-1"},
            {
                "type": "error",
                "errorText": "a chat flow sends strings (text) or objects with a 'type' (UI parts)",
            },
            "[DONE]",
        ]


@pytest.mark.parametrize(
    "body",
    [[], {"messages": []}, {"id": "", "messages": []}, {"id": "c", "messages": "hi"}],
)
async def test_a_body_that_is_not_the_ai_sdks_is_refused(base: str, body: Any) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{base}/", json=body)
        assert response.status_code == 400
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


async def test_resume_and_stop_know_only_the_callers_chats(base: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(f"{base}/nope/stream")).status_code == 204
        assert (await http.delete(f"{base}/nope/stream")).json() == {"stopped": False}
        denied = await http.get(f"{base}/c1/stream", headers={"Authorization": "Bearer invalid"})
        assert denied.status_code == 401


@flow
async def slow(request: dict[str, Any], ctx: FlowContext[Any]) -> None:
    """Sends one token, then waits to be stopped."""
    await ctx.send_chunk("first ")
    await anyio.sleep(60)


async def test_a_running_answer_is_resumed_and_stopped_by_its_owner_only() -> None:
    app = UIMessageStreamApp(
        slow, stream_manager=InMemoryStreamManager(), context_provider=bearer_auth
    )
    alice, bob = {"Authorization": "Bearer alice"}, {"Authorization": "Bearer bob"}
    async with serve(app) as base, httpx.AsyncClient(timeout=30) as http:
        async with http.stream("POST", f"{base}/", json=BODY, headers=alice) as answer:
            assert answer.status_code == 200
            assert (await http.get(f"{base}/c1/stream", headers=bob)).status_code == 204
            bad = await http.get(f"{base}/c1/stream", params={"offset": "x"}, headers=alice)
            assert bad.status_code == 400
            async with http.stream(
                "GET", f"{base}/c1/stream", params={"offset": "1"}, headers=alice
            ) as resumed:
                assert resumed.status_code == 200
                lines = resumed.aiter_lines()
                first = await anext(lines)
                # Offset 1 skips "start": the first UI chunk sent is the text's start.
                assert json.loads(first[6:]) == {"type": "text-start", "id": "text-1"}
            stop = await http.delete(f"{base}/c1/stream", headers=bob)
            assert stop.json() == {"stopped": False}
            stop = await http.delete(f"{base}/c1/stream", headers=alice)
            assert stop.json() == {"stopped": True}
            body = (await answer.aread()).decode()
        assert frames(body)[-2:] == [{"type": "abort"}, "[DONE]"]
        assert (await http.get(f"{base}/c1/stream", headers=alice)).status_code == 204
