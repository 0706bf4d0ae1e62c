"""Stop: ``POST .../streams/{id}/stop`` asks a flow to finish now with its partial result."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from pydantic import BaseModel

from stream_gateway import FailedPreconditionError, FlowContext, Gateway, StreamManager, flow
from stream_gateway._json import loads
from stream_gateway.client import stream_flow
from tests.backends import BackendHarness
from tests.faults import FlakyStorage
from tests.gateway.conftest import serve
from tests.gateway.test_resume import STREAM, parse_sse

pytestmark = pytest.mark.anyio


class Words(BaseModel):
    limit: int = 1_000_000


@flow(input=Words, output=dict, chunk=str)
async def words(req: Words, ctx: FlowContext[str]) -> dict[str, object]:
    """Say words until done or asked to stop; return what was said."""
    said: list[str] = []
    for k in range(req.limit):
        if ctx.stop_requested:
            return {"said": said, "stopped": True}
        said.append(f"w{k}")
        await ctx.send_chunk(f"w{k}")
        await anyio.sleep(0.01)
    return {"said": said, "stopped": False}


@flow(input=Words, output=dict, chunk=str)
async def waiting(req: Words, ctx: FlowContext[str]) -> dict[str, object]:
    """Send one chunk, then wait (awaiting the stop) and return."""
    await ctx.send_chunk("ready")
    await ctx.stop_requested.wait()
    return {"stopped": True}


@flow(input=Words, output=dict, chunk=str)
async def stubborn(req: Words, ctx: FlowContext[str]) -> dict[str, object]:
    """Ignores a stop: it is cancelled once the grace is over."""
    await ctx.send_chunk("ready")
    await anyio.sleep(3600)
    return {}


@asynccontextmanager
async def running(harness: BackendHarness, stop_grace: float = 10.0) -> AsyncIterator[str]:
    manager = StreamManager(harness.new_storage())
    gateway = Gateway([words, waiting, stubborn], stream_manager=manager, stop_grace=stop_grace)
    async with serve(gateway) as url:
        yield url


async def start(http: httpx.AsyncClient, url: str) -> str:
    async with http.stream("POST", url, json={"data": {}}, headers=STREAM) as response:
        assert response.status_code == 200
        return response.headers["x-genkit-stream-id"]


async def first_chunk_then_rest(http: httpx.AsyncClient, url: str, stop_url: str) -> str:
    """Follow the SSE stream; once a chunk arrived, ask for the stop; return the text."""
    text = ""
    async with http.stream("GET", url) as response:
        async for part in response.aiter_text():
            if "event: chunk" in text + part and "event: chunk" not in text:
                stop = await http.post(stop_url)
                assert stop.status_code == 200
                assert stop.json()["stopped"] is True
            text += part
    return text


async def test_stop_ends_the_stream_done_with_the_partial_result(
    harness: BackendHarness,
) -> None:
    async with running(harness) as base, httpx.AsyncClient(timeout=30) as http:
        stream_id = await start(http, f"{base}/words")
        url = f"{base}/words/streams/{stream_id}"
        with anyio.fail_after(20):
            text = await first_chunk_then_rest(http, url, url + "/stop")
        events = parse_sse(text)
        chunks = [loads(e["data"]) for e in events if e.get("event") == "chunk"]
        assert events[-1]["event"] == "result"
        result = loads(events[-1]["data"])
        assert result["stopped"] is True
        assert result["said"] == chunks  # the stream holds exactly the partial answer
        assert len(chunks) < 1_000_000
        again = await http.post(url + "/stop")
        assert again.json() == {"streamId": stream_id, "stopped": False}


async def test_a_flow_can_await_the_stop(harness: BackendHarness) -> None:
    async with running(harness) as base, httpx.AsyncClient(timeout=30) as http:
        stream_id = await start(http, f"{base}/waiting")
        url = f"{base}/waiting/streams/{stream_id}"
        with anyio.fail_after(20):
            text = await first_chunk_then_rest(http, url, url + "/stop")
        last = parse_sse(text)[-1]
        assert (last["event"], loads(last["data"])) == ("result", {"stopped": True})


async def test_a_flow_that_ignores_the_stop_is_cancelled_after_the_grace(
    harness: BackendHarness,
) -> None:
    async with running(harness, stop_grace=0.3) as base, httpx.AsyncClient(timeout=30) as http:
        stream_id = await start(http, f"{base}/stubborn")
        url = f"{base}/stubborn/streams/{stream_id}"
        with anyio.fail_after(20):
            text = await first_chunk_then_rest(http, url, url + "/stop")
        last = parse_sse(text)[-1]
        assert last["event"] == "error"
        assert loads(last["data"]) == {
            "status": "CANCELLED",
            "message": "flow did not stop within its grace period",
        }


async def test_stop_of_unknown_stream_is_not_found(harness: BackendHarness) -> None:
    async with running(harness) as base, httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{base}/words/streams/no-such-stream-0001/stop")
        assert response.status_code == 404
        assert response.json()["error"]["status"] == "NOT_FOUND"


async def test_stop_names_what_to_do_when_the_store_cannot_carry_it(
    harness: BackendHarness,
) -> None:
    # A store without `request_stop` (FlakyStorage does not pass it on).
    without = FlakyStorage(harness.new_storage())
    async with StreamManager(harness.new_storage()) as a, StreamManager(without) as b:
        writer = await a.open(flow="words")
        with pytest.raises(FailedPreconditionError, match="cancel reaches every process"):
            await b.stop(writer.stream_id)
        assert await a.stop(writer.stream_id) is True
        assert writer.stop_requested
        await writer.done({"said": []})
        assert await a.stop(writer.stream_id) is False


async def test_python_client_stop_keeps_the_partial_answer(harness: BackendHarness) -> None:
    async with running(harness) as base, httpx.AsyncClient(timeout=30) as http:
        stream = stream_flow(f"{base}/words", {}, http=http)
        seen: list[str] = []
        with anyio.fail_after(20):
            async for chunk in stream:
                seen.append(chunk)
                if len(seen) == 3:
                    assert await stream.stop() is True
            result = await stream.result()
        assert result["stopped"] is True
        assert result["said"] == seen
        assert await stream.stop() is False
