"""Failure paths: every stream gets a terminal entry, whatever a flow or a client does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from stream_gateway import (
    FlowContext,
    FlowHandler,
    Gateway,
    InMemoryStreamManager,
    InvalidArgumentError,
    RequestContext,
    flow,
)
from stream_gateway.asgi._http import FrameResponse, Write
from stream_gateway.client import Reconnect, stream_flow
from stream_gateway.streams import ChunkEvent, ErrorEvent, StreamEvent, StreamManager
from tests.gateway.conftest import Live, StartLive, serve
from tests.servers.flows_app import count

pytestmark = pytest.mark.anyio
STREAM = {"accept": "text/event-stream", "content-type": "application/json"}


async def events_of(manager: StreamManager, stream_id: str) -> list[StreamEvent]:
    with anyio.fail_after(10):
        return [e async for e in manager.subscribe(stream_id)]


@flow
async def odd_details(data: Any, ctx: FlowContext[Any]) -> None:
    """Fails with details JSON cannot carry."""
    await ctx.send_chunk(1)
    raise InvalidArgumentError("bad", details={"when": object()})


@flow
async def stray_cancel(data: Any, ctx: FlowContext[Any]) -> None:
    """Awaits a task someone else cancelled: a cancellation that is not the runner's."""
    task = asyncio.get_running_loop().create_future()
    task.cancel()
    await task


@flow
async def slow(data: Any, ctx: FlowContext[Any]) -> str:
    """Runs until stopped."""
    for i in range(10_000):
        await ctx.send_chunk(i)
        await anyio.sleep(0.01)
    return "never"


async def test_every_odd_failure_still_ends_the_stream() -> None:
    manager = InMemoryStreamManager()
    gateway = Gateway([odd_details, stray_cancel, slow], stream_manager=manager)
    async with serve(gateway) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        async with http.stream("POST", "/slow", json={}, headers=STREAM) as response:
            slow_id = response.headers["x-genkit-stream-id"]

        odd = await http.post("/odd_details", json={}, headers=STREAM)
        assert odd.content.endswith(
            b'error: {"error":{"status":"INVALID_ARGUMENT","message":"bad"}}\n\n'
        )
        stray = await http.post("/stray_cancel", json={}, headers=STREAM)
        assert stray.content.endswith(
            b'error: {"error":{"status":"UNAVAILABLE",'
            b'"message":"flow was cancelled unexpectedly"}}\n\n'
        )
        # The flow that ran alongside was not disturbed.
        assert (await manager.info(slow_id)).status == "open"
        assert (await http.delete(f"/slow/streams/{slow_id}")).json()["cancelled"] is True
        last = (await events_of(manager, slow_id))[-1]
        assert last == ErrorEvent("CANCELLED", "flow cancelled")
        plain = await http.post("/odd_details", json={})
        assert (plain.status_code, plain.json()) == (
            400,
            {"error": {"status": "INVALID_ARGUMENT", "message": "bad"}},
        )


async def test_unflushable_chunks_end_in_an_error_not_a_short_result() -> None:
    async with InMemoryStreamManager(max_bytes=64, flush_interval=10, lease=30) as manager:
        writer = await manager.open()
        await writer.write("x" * 40)
        await writer.write("y" * 40)  # buffered; the store has no room for both
        await writer.done("looks fine")
        events = await events_of(manager, writer.stream_id)
    assert isinstance(events[-1], ErrorEvent) and events[-1].status == "RESOURCE_EXHAUSTED"


async def test_runner_exit_under_cancellation_still_ends_streams() -> None:
    manager = InMemoryStreamManager()
    gateway = Gateway([slow], stream_manager=manager, drain_grace=0.2)
    storage = manager.storage
    stream_id = ""
    with anyio.CancelScope() as outer:
        async with gateway.lifespan():
            writer = await manager.open(flow="slow")
            stream_id = writer.stream_id
            gateway.runner.start(
                slow, None, writer, RequestContext(), max_chunk_bytes=1000, max_stream_chunks=10**5
            )
            await anyio.sleep(0.1)
            outer.cancel()  # the host is cancelled while a flow runs
            await anyio.sleep(5)
    record = await storage.load(stream_id)
    assert record is not None and record.status == "error"
    assert (
        record.terminal is not None
        and b"server shut down before the flow finished" in record.terminal.payload
    )


async def test_a_response_cancelled_from_outside_sends_last_words() -> None:
    sent: list[dict[str, Any]] = []

    async def producer(write: Write) -> None:
        await write(b"data: 1\n\n")
        await anyio.sleep_forever()

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Any) -> None:
        sent.append(message)

    response = FrameResponse(producer, media_type="text/plain", cut=b"bye\n\n")
    with anyio.move_on_after(0.2):  # uvicorn's graceful-shutdown timeout, say
        await response({"type": "http"}, receive, send)
    assert [m.get("body") for m in sent[1:]] == [b"data: 1\n\n", b"bye\n\n"]
    assert sent[-1]["more_body"] is False


async def test_gateway_chunk_limits_apply_with_a_manager_too(start_live: StartLive) -> None:
    manager = InMemoryStreamManager()
    gateway = Gateway([count], stream_manager=manager, max_chunk_bytes=5)
    async with serve(gateway) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.post("/count", json={"data": {"n": 2}}, headers=STREAM)
    assert b'"status":"RESOURCE_EXHAUSTED"' in response.content.split(b"\n\n")[-2]


async def test_running_flows_are_capped() -> None:
    gateway = Gateway([slow], stream_manager=InMemoryStreamManager(), max_running_flows=2)
    async with serve(gateway) as url, httpx.AsyncClient(base_url=url) as http:
        for _ in range(2):
            async with http.stream("POST", "/slow", json={}, headers=STREAM) as response:
                assert response.status_code == 200
        third = await http.post("/slow", json={}, headers=STREAM)
        assert third.status_code == 429
        assert third.json()["error"]["status"] == "RESOURCE_EXHAUSTED"


async def test_auth_runs_before_listing_and_before_unknown_flows(live: Live) -> None:
    invalid = {"authorization": "Bearer invalid"}
    assert (await live.http.get(live.url + "/flows/", headers=invalid)).status_code == 401
    assert (await live.http.post(live.flow("nope"), headers=invalid)).status_code == 401
    assert (await live.http.post(live.flow("nope"), json={})).status_code == 404
    assert (await live.http.get(live.url + "/flows/")).status_code == 200


async def test_bad_offsets_and_deep_json_are_400(live: Live) -> None:
    async with live.http.stream(
        "POST", live.flow("count"), json={"data": {"n": 1}}, headers=STREAM
    ) as r:
        stream_id = r.headers["x-genkit-stream-id"]
    url = live.flow("count") + f"/streams/{stream_id}"
    assert (await live.http.get(url + "?offset=%C2%B2")).status_code == 400
    arabic_one = "\u0661".encode()  # a Unicode digit that str.isdigit() accepts
    assert (await live.http.get(url, headers={b"last-event-id": arabic_one})).status_code == 400
    deep = b'{"data":' + b"[" * 30_000 + b"]" * 30_000 + b"}"  # nested past the parser
    assert len(deep) < 64 * 1024  # within the test app's body limit
    nested = await live.http.post(live.flow("echo"), content=deep, headers=STREAM)
    assert nested.status_code == 400
    echoed = await live.http.post(
        live.flow("echo"),
        content=b'{"data":"\\ud800"}',
        headers={"content-type": "application/json"},
    )
    assert echoed.json() == {"result": "\ud800"}


async def test_handlers_can_share_one_manager() -> None:
    manager = InMemoryStreamManager()
    first, second = (
        FlowHandler(count, stream_manager=manager),
        FlowHandler(slow, stream_manager=manager),
    )
    async with first.lifespan(), second.lifespan():
        pass  # the first to exit must not stop the manager for the other
    async with first.lifespan():
        async with second.lifespan():
            pass
        writer = await manager.open()  # still running for `first`
        await writer.done(None)


async def test_python_client_resumes_through_a_restarting_server() -> None:
    calls: list[httpx.Request] = []

    async def body(frames: list[bytes]) -> AsyncIterator[bytes]:
        for frame in frames:
            yield frame

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:  # breaks off after one chunk
            return httpx.Response(
                200,
                headers={"x-genkit-stream-id": "S" * 22},
                content=body([b'data: {"message":0}\n\ndata: {"mess']),
            )
        if len(calls) == 2:
            return httpx.Response(
                503, json={"error": {"status": "UNAVAILABLE", "message": "deploying"}}
            )
        assert request.headers["x-genkit-stream-offset"] == "1"
        return httpx.Response(200, content=body([b'data: {"message":1}\n\ndata: {"result":2}\n\n']))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        stream = stream_flow(
            "http://gw/flows/count", {}, http=http, reconnect=Reconnect(base=0.001, cap=0.01)
        )
        assert [c async for c in stream] == [0, 1]
        assert await stream.result() == 2
    assert len(calls) == 3


async def test_chunk_events_stay_in_order_under_concurrent_cancel(live: Live) -> None:
    async with live.http.stream(
        "POST", live.flow("count"), json={"data": {"n": 100_000, "delay": 0.001}}, headers=STREAM
    ) as r:
        stream_id = r.headers["x-genkit-stream-id"]
    assert live.manager is not None
    async with anyio.create_task_group() as tg:
        got: list[StreamEvent] = []

        async def follow() -> None:
            got.extend(await events_of(live.manager, stream_id))  # type: ignore[arg-type]

        tg.start_soon(follow)
        await anyio.sleep(0.2)
        await live.manager.cancel(stream_id)
    offsets = [e.offset for e in got if isinstance(e, ChunkEvent)]
    assert offsets == list(range(len(offsets)))
    assert got[-1] == ErrorEvent("CANCELLED", "flow cancelled")
