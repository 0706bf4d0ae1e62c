"""The Python client: results, errors, and resuming by itself after dropped connections."""

from __future__ import annotations

import uuid

import anyio
import httpx
import pytest

from stream_gateway import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    StreamNotFoundError,
)
from stream_gateway.client import Reconnect, run_flow, stream_flow
from tests.gateway.conftest import Live, StartLive

pytestmark = pytest.mark.anyio


async def test_stream_and_result(live: Live) -> None:
    stream = stream_flow(live.flow("count"), {"n": 5}, http=live.http)
    chunks = [c async for c in stream]
    assert chunks == [{"i": i} for i in range(5)]
    assert await stream.result() == {"total": 5}
    assert stream.stream_id is not None and stream.offset == 5


async def test_errors_raise_gateway_errors(live: Live) -> None:
    failing = stream_flow(
        live.flow("fail"), {"after": 2, "status": "NOT_FOUND", "message": "x"}, http=live.http
    )
    got: list[object] = []
    with pytest.raises(NotFoundError, match="x"):
        async for chunk in failing:
            got.append(chunk)
    assert got == [0, 1]
    with pytest.raises(InvalidArgumentError):
        await run_flow(live.flow("typed"), {"name": 1}, http=live.http)
    assert await run_flow(live.flow("echo"), [1, 2], http=live.http) == [1, 2]
    with pytest.raises(StreamNotFoundError):
        await stream_flow(live.flow("count"), stream_id="E" * 22, http=live.http).result()


async def test_follows_existing_stream_from_offset(live: Live) -> None:
    first = stream_flow(live.flow("count"), {"n": 6}, http=live.http)
    await first.result()
    assert first.stream_id is not None
    tail = stream_flow(live.flow("count"), stream_id=first.stream_id, offset=4, http=live.http)
    assert [c async for c in tail] == [{"i": 4}, {"i": 5}]


async def test_resumes_by_itself_after_100_server_side_drops(live: Live) -> None:
    drops = await live.http.post(
        live.url + "/_test/drops", json={"count": 100, "seed": 5, "max_bytes": 400}
    )
    assert drops.json() == {"left": 100}
    stream = stream_flow(
        live.flow("count"),
        {"n": 1500, "delay": 0.0005},
        http=live.http,
        reconnect=Reconnect(attempts=5, base=0.001, cap=0.01),
    )
    with anyio.fail_after(60):
        chunks = [c async for c in stream]
        assert await stream.result() == {"total": 1500}
    assert chunks == [{"i": i} for i in range(1500)]
    left = await live.http.get(live.url + "/_test/drops")
    assert left.json() == {"left": 0}


async def test_cancel_from_client(live: Live) -> None:
    stream = stream_flow(live.flow("count"), {"n": 10_000, "delay": 0.01}, http=live.http)
    iterator = aiter(stream)
    assert await anext(iterator) == {"i": 0}
    assert await stream.cancel() is True
    with anyio.fail_after(10), pytest.raises(Exception, match="cancelled") as caught:
        async for _ in iterator:
            pass
    assert getattr(caught.value, "status", None) == "CANCELLED"


class LoseFirstStart(httpx.AsyncBaseTransport):
    """Delivers the first start to the server, then loses its response (a reset)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.keys: list[str | None] = []
        self.lost_stream_id: str | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.keys.append(request.headers.get("idempotency-key"))
        response = await self.inner.handle_async_request(request)
        if len(self.keys) == 1:
            self.lost_stream_id = response.headers.get("x-genkit-stream-id")
            await response.aclose()
            raise httpx.ReadError("connection reset", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_start_lost_before_its_response_is_repeated_with_its_key(live: Live) -> None:
    transport = LoseFirstStart()
    async with httpx.AsyncClient(transport=transport, timeout=30) as http:
        stream = stream_flow(
            live.flow("count"), {"n": 5}, http=http, reconnect=Reconnect(base=0.001)
        )
        assert [c async for c in stream] == [{"i": i} for i in range(5)]
        assert await stream.result() == {"total": 5}
    first, second = transport.keys
    assert first is not None and first == second == stream.idempotency_key
    # The repeat joined the run the lost start began.
    assert transport.lost_stream_id is not None
    assert stream.stream_id == transport.lost_stream_id


async def test_without_a_stream_manager_a_lost_start_ends_with_its_connection(
    start_live: StartLive,
) -> None:
    # There the run lives inside its response: losing the response ends the run, and
    # the repeated start is a run of its own, the only one left.
    async with start_live(manager=False) as live:
        transport = LoseFirstStart()
        async with httpx.AsyncClient(transport=transport, timeout=30) as http:
            stream = stream_flow(
                live.flow("count"), {"n": 5}, http=http, reconnect=Reconnect(base=0.001)
            )
            assert await stream.result() == {"total": 5}
    assert len(transport.keys) == 2
    assert transport.lost_stream_id is None and stream.stream_id is None


async def test_a_run_in_a_conversation_is_found_by_another_client(live: Live) -> None:
    gate = f"py-gate-{uuid.uuid4()}"  # gates outlive a test in this process: a fresh one
    stream = stream_flow(live.flow("gate"), gate, http=live.http, conversation="py-chat")
    chunks = aiter(stream)
    assert await anext(chunks) == "waiting"
    found = await live.http.get(live.flow("gate") + "/conversations/py-chat")
    assert found.json()["streamId"] == stream.stream_id
    again = stream_flow(live.flow("gate"), "other", http=live.http, conversation="py-chat")
    with pytest.raises(AlreadyExistsError):
        await again.result()
    await live.http.post(f"{live.url}/_test/gates/{gate}")
    assert await stream.result() == f"opened {gate}"
