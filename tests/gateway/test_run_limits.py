"""Running caps: every run counts (streaming or not), per principal on request, and a
refused start costs no storage; a non-streaming run ends when its client leaves."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from stream_gateway import FlowContext, Gateway, InMemoryStreamManager, flow
from stream_gateway.streams import InMemoryStreamStorage, StreamManager, StreamRecord
from tests.gateway.conftest import serve
from tests.servers.flows_app import bearer_auth

pytestmark = pytest.mark.anyio
STREAM = {"accept": "text/event-stream", "content-type": "application/json"}


class Holds:
    """Flows that run until released, and what happened to them."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.entered = 0
        self.cancelled = 0

    @staticmethod
    async def until(predicate: Any) -> None:
        with anyio.fail_after(10):
            while not predicate():  # noqa: ASYNC110 - what we wait for has no event
                await anyio.sleep(0.01)

    def flow(self) -> Any:
        @flow
        async def hold(data: Any, ctx: FlowContext[Any]) -> str:
            self.entered += 1
            try:
                await self.release.wait()
            except anyio.get_cancelled_exc_class():
                self.cancelled += 1
                raise
            return "released"

        return hold


@asynccontextmanager
async def served(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(gateway) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield http


async def test_non_streaming_runs_count_against_the_cap() -> None:
    holds = Holds()
    gateway = Gateway([holds.flow()], stream_manager=InMemoryStreamManager(), max_running_flows=1)
    async with served(gateway) as http, anyio.create_task_group() as tg:
        results: list[httpx.Response] = []

        async def call() -> None:
            results.append(await http.post("/hold", json={}))

        tg.start_soon(call)
        await holds.until(lambda: holds.entered == 1)
        for headers in [{}, STREAM]:
            refused = await http.post("/hold", json={}, headers=headers)
            assert refused.status_code == 429
            assert refused.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
        holds.release.set()
        await holds.until(lambda: bool(results))
        assert results[0].json() == {"result": "released"}
        assert (await http.post("/hold", json={})).json() == {"result": "released"}
    assert gateway.runner.running == 0


async def test_a_non_streaming_run_is_cancelled_when_its_client_leaves() -> None:
    holds = Holds()
    gateway = Gateway([holds.flow()], max_running_flows=1)
    async with served(gateway) as http:
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(http.post, "/hold", json={}))
            await holds.until(lambda: holds.entered == 1)
            tg.cancel_scope.cancel()  # the client gives up: its connection closes
        await holds.until(lambda: holds.cancelled == 1)
        await holds.until(lambda: gateway.runner.running == 0)
        holds.release.set()
        assert (await http.post("/hold", json={})).json() == {"result": "released"}


async def test_streaming_runs_without_a_manager_hold_a_slot_while_they_last() -> None:
    holds = Holds()
    gateway = Gateway([holds.flow()], max_running_flows=1)
    async with served(gateway) as http:
        async with http.stream("POST", "/hold", json={}, headers=STREAM) as running:
            assert running.status_code == 200
            await holds.until(lambda: holds.entered == 1)
            refused = await http.post("/hold", json={}, headers=STREAM)
            assert refused.status_code == 429
        # The client left: the run (attached to its response) ends and frees its slot.
        await holds.until(lambda: holds.cancelled == 1 and gateway.runner.running == 0)
        holds.release.set()
        done = await http.post("/hold", json={}, headers=STREAM)
        assert done.text == 'data: {"result":"released"}\n\n'


async def test_per_principal_caps() -> None:
    holds = Holds()
    gateway = Gateway(
        [holds.flow()],
        stream_manager=InMemoryStreamManager(),
        context_provider=bearer_auth,
        max_running_flows=10,
        max_running_flows_per_principal=1,
        drain_grace=0.1,
    )
    alice, bob = {"authorization": "Bearer alice"}, {"authorization": "Bearer bob"}
    async with served(gateway) as http:
        async with http.stream("POST", "/hold", json={}, headers={**STREAM, **alice}) as first:
            assert first.status_code == 200
        for headers in [{**STREAM, **alice}, alice]:
            refused = await http.post("/hold", json={}, headers=headers)
            assert refused.status_code == 429
            error = refused.json()["error"]
            assert error["status"] == "RESOURCE_EXHAUSTED"
            assert error["details"] == {"limitPerPrincipal": 1}
            assert error["message"].startswith("too many of your flows are running (limit 1)")
        await holds.until(lambda: holds.entered == 1)
        async with http.stream("POST", "/hold", json={}, headers={**STREAM, **bob}) as other:
            assert other.status_code == 200
        # Without a principal, only the global cap applies.
        for _ in range(2):
            async with http.stream("POST", "/hold", json={}, headers=STREAM) as anonymous:
                assert anonymous.status_code == 200
        await holds.until(lambda: holds.entered == 4)
        holds.release.set()
        await holds.until(lambda: gateway.runner.running == 0)
        again = await http.post("/hold", json={}, headers={**STREAM, **alice})
        assert again.status_code == 200
        assert again.text == 'data: {"result":"released"}\n\n'


class GatedStorage(InMemoryStreamStorage):
    """Holds every create until the gate opens; counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.creates = 0

    async def create(self, record: StreamRecord) -> None:
        self.creates += 1
        await self.gate.wait()
        await super().create(record)


async def test_refused_starts_write_nothing_even_when_racing() -> None:
    holds = Holds()
    storage = GatedStorage()
    gateway = Gateway(
        [holds.flow()],
        stream_manager=StreamManager(storage),
        max_running_flows=2,
        drain_grace=0.1,
    )
    statuses: list[int] = []
    async with served(gateway) as http:

        async def start() -> None:
            async with http.stream("POST", "/hold", json={}, headers=STREAM) as response:
                statuses.append(response.status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(start)
            # Every request is either waiting in create() or answered already.
            await holds.until(lambda: storage.creates + len(statuses) == 5)
            storage.gate.set()
        holds.release.set()
    assert sorted(statuses) == [200, 200, 429, 429, 429]
    assert storage.creates == 2
