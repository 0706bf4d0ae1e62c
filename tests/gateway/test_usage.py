"""What users do by habit either works or fails with an error naming what to do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from stream_gateway import (
    FlowContext,
    FlowHandler,
    Gateway,
    InMemoryStreamManager,
    RequestContext,
    flow,
)
from tests.gateway.conftest import Live, serve
from tests.servers.flows_app import count, echo

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}
STREAM = {"accept": "text/event-stream", "content-type": "application/json"}


async def test_a_body_without_the_data_wrapper_says_so(live: Live) -> None:
    bare = await live.http.post(live.flow("typed"), json={"name": "Ada", "age": 36})
    assert bare.status_code == 400
    assert bare.json()["error"] == {
        "status": "INVALID_ARGUMENT",
        "message": 'request body must be {"data": <input>}: it has no "data" field',
    }
    for empty in [b"", b"{}"]:
        response = await live.http.post(live.flow("typed"), content=empty, headers=JSON)
        assert response.status_code == 400
        message = response.json()["error"]["message"]
        assert message.startswith("invalid input for flow 'typed'")
        assert message.endswith('the request carried no input; send {"data": <input>}')
    # A client sends {"init": ...} alone when the input is undefined: no input, no wrapper
    # error; a flow taking any JSON then runs with null.
    init_only = await live.http.post(live.flow("echo"), json={"init": {"x": 1}})
    assert init_only.json() == {"result": None}
    # The wrapper with a null input is the flow's own validation error, as before.
    null = await live.http.post(live.flow("typed"), json={"data": None})
    assert null.json()["error"]["message"] == "invalid input for flow 'typed'"
    fine = await live.http.post(live.flow("typed"), json={"data": {"name": "Ada", "age": 36}})
    assert fine.json() == {"result": "Hello Ada, 36"}


async def test_numbers_beyond_a_double_are_400(live: Live) -> None:
    response = await live.http.post(live.flow("echo"), content=b'{"data": 1e400}', headers=JSON)
    assert response.status_code == 400
    assert "out of range" in response.json()["error"]["message"]


async def test_every_request_says_when_the_lifespan_is_missing() -> None:
    gateway = Gateway([count, echo], stream_manager=InMemoryStreamManager())
    host = Starlette(routes=[Mount("/flows", app=gateway)])  # lifespan forgotten
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        requests = [
            http.build_request("POST", "/flows/echo", json={"data": 1}),
            http.build_request("POST", "/flows/count", json={"data": {"n": 1}}, headers=STREAM),
            http.build_request("GET", "/flows/count/streams/" + "D" * 22),
            http.build_request("GET", "/flows/"),
        ]
        for request in requests:
            response = await http.send(request)
            assert response.status_code == 503, request
            error = response.json()["error"]
            assert error["status"] == "UNAVAILABLE"
            assert "lifespan=gateway.lifespan" in error["message"]
    # With the lifespan, the same requests are served.
    host = Starlette(routes=[Mount("/flows", app=gateway)], lifespan=gateway.lifespan)
    async with serve(host) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.post("/flows/echo", json={"data": 1})).json() == {"result": 1}


async def test_a_handler_route_serves_its_bare_path_without_a_redirect() -> None:
    handler = FlowHandler(count, stream_manager=InMemoryStreamManager())
    gateway = Gateway([echo])
    host = Starlette(
        routes=[
            handler.route("/chat"),
            Mount("/api", routes=[gateway.route("/flows")]),
        ],
        lifespan=_both(handler, gateway),
    )
    async with serve(host) as url, httpx.AsyncClient(base_url=url) as http:
        for path in ["/chat", "/chat/"]:
            response = await http.post(path, json={"data": {"n": 2}}, headers=STREAM)
            assert response.status_code == 200, path
            assert response.text.endswith('data: {"result":{"total":2}}\n\n')
            stream_id = response.headers["x-genkit-stream-id"]
        described = await http.get("/chat")
        assert described.status_code == 200
        assert described.json()["name"] == "count"
        replay = await http.get(f"/chat/streams/{stream_id}")
        assert replay.text.endswith('event: result\ndata: {"total":2}\n\n')
        listed = await http.get("/api/flows")
        assert [f["name"] for f in listed.json()["flows"]] == ["echo"]
        assert (await http.post("/api/flows/echo", json={"data": 3})).json() == {"result": 3}
        # Only the mount's own path is served bare: neighbours stay unknown.
        assert (await http.post("/chatter", json={"data": 1})).status_code == 404


def _both(*gateways: Gateway) -> Any:
    @asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for gateway in gateways:
                await stack.enter_async_context(gateway.lifespan())
            yield

    return lifespan


async def test_reconnects_are_served_while_the_lifespan_drains() -> None:
    release = anyio.Event()

    @flow
    async def hold(data: Any, ctx: FlowContext[Any]) -> str:
        await release.wait()
        return "released"

    manager = InMemoryStreamManager()
    gateway = Gateway([hold], stream_manager=manager, drain_grace=30)
    stop = anyio.Event()
    transport = httpx.ASGITransport(app=gateway)
    async with (
        anyio.create_task_group() as tg,
        httpx.AsyncClient(transport=transport, base_url="http://gw") as http,
    ):

        async def run_lifespan() -> None:
            async with gateway.lifespan():
                await stop.wait()

        tg.start_soon(run_lifespan)
        with anyio.fail_after(10):
            while gateway.runner._tg is None:  # noqa: ASYNC110 - no event to wait on
                await anyio.sleep(0.01)
            writer = await manager.open(flow="hold")
            gateway.runner.start(
                hold, None, writer, RequestContext(), max_chunk_bytes=100, max_stream_chunks=10
            )
            stop.set()  # the host shuts down; the runner drains the running flow
            while not gateway.runner._closing:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            responses: list[httpx.Response] = []

            async def reconnect() -> None:
                responses.append(await http.get(f"/hold/streams/{writer.stream_id}"))

            tg.start_soon(reconnect)
            # Mid-drain: the reconnect is answered, or it follows the stream.
            while not responses and writer.stream_id not in manager._listeners:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            release.set()
    assert responses[0].status_code == 200
    assert responses[0].text == 'event: result\ndata: "released"\n\n'
