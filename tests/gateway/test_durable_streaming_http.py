"""Streaming durable flows served by the Gateway on both wire protocols."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from stream_gateway import Gateway, InMemoryStreamManager
from stream_gateway._json import loads
from stream_gateway.client import Reset, stream_flow
from stream_gateway.durable import (
    DurableContext,
    DurableEngine,
    InMemoryDurableStore,
    RetryPolicy,
    durable_flow,
)
from tests.gateway.conftest import serve
from tests.gateway.test_resume import STREAM, parse_sse

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(max_attempts=2, backoff_base=0.0, jitter=0.0)


def make_flows(first_attempt_waits: anyio.Event) -> list[Any]:
    attempts = {"n": 0}

    @durable_flow(input=str, output=str, chunk=str)
    async def answer(prompt: str, ctx: DurableContext) -> str:
        await ctx.send_chunk(">")

        async def llm() -> str:
            attempts["n"] += 1
            await ctx.send_chunk("Hel")
            if attempts["n"] == 1:
                await first_attempt_waits.wait()
                raise RuntimeError("model overloaded")
            await ctx.send_chunk("lo")
            return "Hello"

        return ">" + str(await ctx.run("llm", llm, retry=FAST))

    @durable_flow(input=str, output=str, chunk=str)
    async def waits(prompt: str, ctx: DurableContext) -> str:
        await ctx.send_chunk("waiting")
        await ctx.wait_for_signal("go", "go")
        return "went"

    @durable_flow(input=str, output=dict, chunk=str)
    async def talks(prompt: str, ctx: DurableContext) -> dict[str, Any]:
        said: list[str] = []
        for i in range(10_000):
            if ctx.stop_requested:
                return {"said": said, "stopped": True}

            async def say(i: int = i) -> str:
                await ctx.send_chunk(f"w{i}")
                return f"w{i}"

            said.append(str(await ctx.run(f"w{i}", say)))
            await ctx.sleep(f"z{i}", 0.005)
        return {"said": said, "stopped": False}

    return [answer, waits, talks]


@asynccontextmanager
async def running(release: anyio.Event) -> AsyncIterator[str]:
    engine = DurableEngine(make_flows(release), store=InMemoryDurableStore(), poll_interval=0.02)
    manager = InMemoryStreamManager()
    gateway = Gateway(
        [], stream_manager=manager, durable=engine.worker(poll_interval=0.02, lease=5.0)
    )
    async with serve(gateway) as url:
        yield url


async def test_python_client_sees_the_reset_and_renders_once() -> None:
    release = anyio.Event()
    async with running(release) as url, httpx.AsyncClient(timeout=30) as http:
        stream = stream_flow(f"{url}/answer", "hi", http=http)
        shown: list[Any] = []
        resets: list[Reset] = []
        with anyio.fail_after(20):
            async for item in stream:
                if isinstance(item, Reset):
                    resets.append(item)
                    del shown[len(shown) - item.dropped :]
                else:
                    shown.append(item)
                    if shown == [">", "Hel"]:
                        release.set()
            assert await stream.result() == ">Hello"
        assert resets == [Reset(1, 1)]
        assert stream.stream_id is not None
        assert "".join(shown) == ">Hello"

        # A late SSE reader gets the live view; one resuming inside the retracted
        # attempt gets the reset first.
        sse = f"{url}/answer/streams/{stream.stream_id}"
        late = parse_sse((await http.get(sse)).text)
        assert [(e["id"], loads(e["data"])) for e in late if e.get("event") == "chunk"] == [
            ("0", ">"), ("3", "Hel"), ("4", "lo"),
        ]  # fmt: skip
        resumed = parse_sse((await http.get(sse, headers={"last-event-id": "1"})).text)
        assert resumed[0] == {"id": "2", "event": "reset", "data": '{"offset":1}'}
        # Genkit's reconnect (no offsets asked for): the live view, no reset frame.
        genkit = await http.post(
            f"{url}/answer", json={}, headers={**STREAM, "x-genkit-stream-id": stream.stream_id}
        )
        assert genkit.text == (
            'data: {"message":">"}\n\ndata: {"message":"Hel"}\n\n'
            'data: {"message":"lo"}\n\ndata: {"result":">Hello"}\n\n'
        )


async def test_post_names_the_execution_and_delete_cancels_it() -> None:
    async with running(anyio.Event()) as url, httpx.AsyncClient(timeout=30) as http:
        async with http.stream("POST", f"{url}/waits", json={"data": "x"}, headers=STREAM) as r:
            assert r.status_code == 200
            stream_id = r.headers["x-genkit-stream-id"]
            assert r.headers["x-execution-id"] == stream_id
            with anyio.fail_after(20):
                async for text in r.aiter_text():
                    if "waiting" in text:
                        break
        op = await http.get(f"{url}/durable/ops/{stream_id}")
        assert op.json()["flow"] == "waits"
        deleted = await http.delete(f"{url}/waits/streams/{stream_id}")
        assert deleted.json() == {"streamId": stream_id, "cancelled": True}
        events = parse_sse((await http.get(f"{url}/waits/streams/{stream_id}")).text)
        assert events[-1]["event"] == "error"
        assert loads(events[-1]["data"])["status"] == "CANCELLED"


async def test_non_streaming_post_answers_the_result() -> None:
    release = anyio.Event()
    release.set()
    async with running(release) as url, httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{url}/answer", json={"data": "hi"})
        assert response.status_code == 200
        assert response.json() == {"result": ">Hello"}
        assert response.headers["x-execution-id"]


async def test_stop_ends_the_stream_done_with_the_partial_result() -> None:
    async with running(anyio.Event()) as url, httpx.AsyncClient(timeout=30) as http:
        async with http.stream("POST", f"{url}/talks", json={"data": "x"}, headers=STREAM) as r:
            stream_id = r.headers["x-execution-id"]
        sse = f"{url}/talks/streams/{stream_id}"
        text = ""
        with anyio.fail_after(30):
            async with http.stream("GET", sse) as response:
                async for part in response.aiter_text():
                    if "event: chunk" in text + part and "event: chunk" not in text:
                        stop = await http.post(f"{sse}/stop")
                        assert stop.json() == {"streamId": stream_id, "stopped": True}
                    text += part
        events = parse_sse(text)
        chunks = [loads(e["data"]) for e in events if e.get("event") == "chunk"]
        assert events[-1]["event"] == "result"
        result = loads(events[-1]["data"])
        assert result["stopped"] is True
        assert result["said"] == chunks
        again = await http.post(f"{sse}/stop")
        assert again.json() == {"streamId": stream_id, "stopped": False}
