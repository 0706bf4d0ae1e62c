"""Idempotent starts: one key, one stream, one run, even across processes sharing a
backend; a different body is refused; another principal gets a run of its own."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from stream_gateway import FlowContext, Gateway, flow
from stream_gateway.streams import StreamManager
from tests.backends import BackendHarness
from tests.gateway.conftest import serve
from tests.servers.flows_app import bearer_auth

pytestmark = pytest.mark.anyio
STREAM = {"accept": "text/event-stream", "content-type": "application/json"}


class Runs:
    """A flow that counts its runs and waits to be released."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.inputs: list[Any] = []

    def flow(self) -> Any:
        @flow
        async def answer(data: Any, ctx: FlowContext[Any]) -> Any:
            self.inputs.append(data)
            await ctx.send_chunk("working")
            await self.release.wait()
            return {"answer": data}

        return answer


@asynccontextmanager
async def gateways(
    harness: BackendHarness, runs: Runs, count: int = 1, **options: Any
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """``count`` gateways, each with its own manager on the same data (as processes
    sharing a backend are), served on their own ports."""
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(count):
            gateway = Gateway(
                [runs.flow()],
                stream_manager=StreamManager(harness.new_storage()),
                context_provider=bearer_auth,
                **options,
            )
            url = await stack.enter_async_context(serve(gateway))
            clients.append(
                await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30))
            )
        yield clients


def keyed(key: str, **headers: str) -> dict[str, str]:
    return {**STREAM, "idempotency-key": key, **headers}


async def test_concurrent_identical_starts_make_one_run(harness: BackendHarness) -> None:
    runs = Runs()
    key = str(uuid.uuid4())
    async with gateways(harness, runs, count=2, max_running_flows_per_principal=1) as clients:
        bodies: list[tuple[str, str]] = []

        # Alice may run one flow at a time: the repeats must not count as runs.
        alice = keyed(key, authorization="Bearer alice")

        async def start(i: int) -> None:
            http = clients[i % 2]
            async with http.stream("POST", "/answer", json={"data": "q"}, headers=alice) as r:
                assert r.status_code == 200, await r.aread()
                stream_id = r.headers["x-genkit-stream-id"]
                bodies.append((stream_id, (await r.aread()).decode()))

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(start, i)
            with anyio.fail_after(10):
                while not runs.inputs:  # noqa: ASYNC110 - the flow has no event to offer
                    await anyio.sleep(0.01)
            runs.release.set()
    assert runs.inputs == ["q"]
    assert len({stream_id for stream_id, _ in bodies}) == 1
    expected = 'data: {"message":"working"}\n\ndata: {"result":{"answer":"q"}}\n\n'
    assert [text for _, text in bodies] == [expected] * 20


async def test_a_repeated_start_after_the_end_replays_without_running(
    harness: BackendHarness,
) -> None:
    runs = Runs()
    runs.release.set()
    key = str(uuid.uuid4())
    async with gateways(harness, runs) as (http,):
        first = await http.post("/answer", json={"data": 1}, headers=keyed(key))
        second = await http.post("/answer", json={"data": 1}, headers=keyed(key))
    assert first.headers["x-genkit-stream-id"] == second.headers["x-genkit-stream-id"]
    assert first.text == second.text
    assert runs.inputs == [1]


async def test_a_reused_key_with_another_body_is_409(harness: BackendHarness) -> None:
    runs = Runs()
    runs.release.set()
    key = str(uuid.uuid4())
    async with gateways(harness, runs) as (http,):
        first = await http.post("/answer", json={"data": "a"}, headers=keyed(key))
        other = await http.post("/answer", json={"data": "b"}, headers=keyed(key))
    assert other.status_code == 409
    error = other.json()["error"]
    assert error["status"] == "ALREADY_EXISTS"
    assert "different request" in error["message"]
    assert error["details"] == {"streamId": first.headers["x-genkit-stream-id"]}
    assert runs.inputs == ["a"]


async def test_another_principal_with_the_same_key_gets_its_own_run(
    harness: BackendHarness,
) -> None:
    runs = Runs()
    runs.release.set()
    key = str(uuid.uuid4())
    async with gateways(harness, runs) as (http,):
        alice = await http.post(
            "/answer", json={"data": "a"}, headers=keyed(key, authorization="Bearer alice")
        )
        bob = await http.post(
            "/answer", json={"data": "b"}, headers=keyed(key, authorization="Bearer bob")
        )
        anonymous = await http.post("/answer", json={"data": "c"}, headers=keyed(key))
        # Bob cannot follow Alice's stream by its id either.
        stolen = await http.post(
            "/answer",
            json={},
            headers={**STREAM, "authorization": "Bearer bob",
                     "x-genkit-stream-id": alice.headers["x-genkit-stream-id"]},
        )  # fmt: skip
    ids = {r.headers["x-genkit-stream-id"] for r in (alice, bob, anonymous)}
    assert len(ids) == 3
    assert sorted(runs.inputs) == ["a", "b", "c"]
    assert stolen.status_code == 204


@pytest.mark.parametrize("key", ["short", "x" * 256, "has space in it ....", "ünïcode-key-000000"])
async def test_malformed_keys_are_refused(harness: BackendHarness, key: str) -> None:
    runs = Runs()
    async with gateways(harness, runs) as (http,):
        headers: dict[str, Any] = {**STREAM, "idempotency-key": key.encode()}
        response = await http.post("/answer", json={"data": 1}, headers=headers)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["message"]
    assert key not in response.text
    assert runs.inputs == []


async def test_a_key_of_an_expired_stream_is_refused(harness: BackendHarness) -> None:
    runs = Runs()
    runs.release.set()
    key = str(uuid.uuid4())
    # Real time to start with: a backend with TTLs of its own (Redis) must not drop
    # the record before the manager's clock is moved on.
    now = [time.time()]
    async with AsyncExitStack() as stack:
        manager = StreamManager(harness.new_storage(), ttl=5, clock=lambda: now[0])
        gateway = Gateway([runs.flow()], stream_manager=manager)
        url = await stack.enter_async_context(serve(gateway))
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30))
        first = await http.post("/answer", json={"data": 1}, headers=keyed(key))
        assert first.status_code == 200
        now[0] += 3600  # expired, not yet purged
        again = await http.post("/answer", json={"data": 1}, headers=keyed(key))
    assert again.status_code == 409
    assert "use a new key" in again.json()["error"]["message"]
    assert runs.inputs == [1]
