"""Prometheus metrics: the endpoint's figures match the work done."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount

from stream_gateway import FlowContext, Gateway, InMemoryStreamManager, _telemetry, flow
from stream_gateway.durable import (
    DurableContext,
    DurableEngine,
    InMemoryDurableStore,
    RetryPolicy,
    durable_flow,
)
from stream_gateway.metrics import PrometheusMetrics
from stream_gateway.streams.base import StreamRecord

pytestmark = pytest.mark.anyio


@flow(input=int, output=int, chunk=int)
async def count(n: int, ctx: FlowContext[int]) -> int:
    for i in range(n):
        await ctx.send_chunk(i)
    return n


ATTEMPTS = {"flaky": 0}


def flaky() -> str:
    ATTEMPTS["flaky"] += 1
    if ATTEMPTS["flaky"] == 1:
        raise RuntimeError("first call fails")
    return "ok"


@durable_flow(output=str)
async def two_steps(_: None, ctx: DurableContext) -> str:
    first: str = await ctx.run("first", lambda: "one")
    second: str = await ctx.run(
        "second", flaky, retry=RetryPolicy(max_attempts=2, backoff_base=0, jitter=0)
    )
    return first + second


Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: httpx.AsyncClient) -> Figures:
    response = await client.get("/metrics/")
    assert response.status_code == 200
    figures: Figures = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            figures[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return figures


def figure(figures: Figures, name: str, **labels: str) -> float:
    return figures.get((f"stream_gateway_{name}", tuple(sorted(labels.items()))), 0.0)


@asynccontextmanager
async def app_with_metrics(
    read_batch: int = 1024,
) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway, PrometheusMetrics]]:
    engine = DurableEngine([two_steps], store=InMemoryDurableStore(), poll_interval=0.02)
    manager = InMemoryStreamManager(read_batch=read_batch)
    gateway = Gateway(
        [count],
        stream_manager=manager,
        durable=engine.worker(poll_interval=0.02, lease=5.0, grace=1.0),
    )
    with PrometheusMetrics() as metrics:
        app = Starlette(
            routes=[Mount("/metrics", app=metrics.app()), gateway.route("/flows")],
        )
        async with (
            gateway.lifespan(),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test"
            ) as client,
        ):
            yield client, gateway, metrics
    assert metrics not in _telemetry.observers


async def test_stream_figures_match_the_work_done() -> None:
    async with app_with_metrics() as (client, gateway, _):
        stream = {"accept": "text/event-stream"}
        first = await client.post("/flows/count", json={"data": 5}, headers=stream)
        second = await client.post("/flows/count", json={"data": 3}, headers=stream)
        assert first.text.count('"message"') == 5 and second.text.count('"message"') == 3
        # A reconnect replays the first stream: its 5 chunks are read again.
        replay = await client.post(
            "/flows/count",
            json={"data": 5},
            headers={**stream, "x-genkit-stream-id": first.headers["x-genkit-stream-id"]},
        )
        assert replay.text.count('"message"') == 5

        figures = await scrape(client)
        assert figure(figures, "streams_opened_total", flow="count") == 2
        assert figure(figures, "streams_finished_total", flow="count", end="done") == 2
        assert figure(figures, "streams_active", flow="count") == 0
        assert figure(figures, "chunks_written_total", flow="count") == 8
        assert figure(figures, "chunks_read_total") == 13
        assert figure(figures, "stream_subscribers") == 0
        # Every read here was of a finished stream, from its start: each batch read
        # left the reader zero behind the newest chunk this process had seen.
        assert figure(figures, "reader_lag_chunks_count") >= 3
        assert figure(figures, "reader_lag_chunks_bucket", le="0.0") == figure(
            figures, "reader_lag_chunks_count"
        )

        # An open stream whose writer is gone: its first reader records it abandoned.
        manager = gateway.stream_manager
        assert manager is not None
        now = time.time()
        await manager.storage.create(
            StreamRecord("A" * 22, "count", now, now, now + 60, lease_until=now - 1)
        )
        events = [event async for event in manager.subscribe("A" * 22)]
        assert [getattr(e, "message", None) for e in events] == ["stream abandoned"]
        figures = await scrape(client)
        assert figure(figures, "lease_expiries_total", kind="stream") == 1


async def test_an_open_stream_counts_as_active_with_its_subscriber_and_lag() -> None:
    async with app_with_metrics(read_batch=3) as (client, gateway, _):
        manager = gateway.stream_manager
        assert manager is not None
        writer = await manager.open(flow="live")
        for i in range(4):
            await writer.write(i)
        await writer.flush()
        reader = manager.subscribe_batches(writer.stream_id, 0)
        # Batches of 3: the first read leaves the reader 1 chunk behind, the next 0.
        assert len(await reader.__anext__()) == 3
        assert len(await reader.__anext__()) == 1
        figures = await scrape(client)
        assert figure(figures, "reader_lag_chunks_count") == 2
        assert figure(figures, "reader_lag_chunks_bucket", le="0.0") == 1
        assert figure(figures, "reader_lag_chunks_bucket", le="1.0") == 2
        assert figure(figures, "reader_lag_chunks_sum") == 1
        assert figure(figures, "chunks_read_total") == 4
        assert figure(figures, "streams_active", flow="live") == 1
        assert figure(figures, "stream_subscribers") == 1
        assert figure(figures, "chunks_written_total", flow="live") == 4
        await reader.aclose()
        await writer.done(None)
        figures = await scrape(client)
        assert figure(figures, "streams_active", flow="live") == 0
        assert figure(figures, "stream_subscribers") == 0
        assert figure(figures, "streams_finished_total", flow="live", end="done") == 1


async def test_execution_and_step_figures_match_the_work_done() -> None:
    ATTEMPTS["flaky"] = 0
    async with app_with_metrics() as (client, gateway, _):
        engine = gateway.durable
        assert engine is not None
        op = await engine.schedule(two_steps)
        with anyio.fail_after(10):
            done = await engine.wait(op.name)
        assert done.response == "oneok"
        figures = await scrape(client)

        def executions(status: str) -> float:
            return figure(figures, "executions_total", status=status)

        # Scheduled; run (first ok, second fails once); parked for its retry; run
        # again (second ok); completed.
        assert executions("pending") == 1
        assert executions("running") == 2
        assert executions("sleeping") == 1
        assert executions("completed") == 1
        assert executions("failed") == 0

        def steps(outcome: str) -> float:
            return figure(
                figures,
                "step_duration_seconds_count",
                flow="two_steps",
                kind="step",
                outcome=outcome,
            )

        assert steps("completed") == 2
        assert steps("error") == 1
        assert steps("failed") == 0
        total = figure(
            figures, "step_duration_seconds_sum", flow="two_steps", kind="step", outcome="completed"
        )
        assert total >= 0


RELEASE: dict[str, anyio.Event] = {}


@durable_flow(output=str)
async def held(_: None, ctx: DurableContext) -> str:
    async def wait() -> str:
        await RELEASE["step"].wait()
        return "done"

    value: str = await ctx.run("wait", wait)
    return value


async def test_a_lost_execution_lease_is_counted() -> None:
    RELEASE["step"] = anyio.Event()
    engine = DurableEngine([held], store=InMemoryDurableStore(), poll_interval=0.02)
    with PrometheusMetrics() as metrics:
        async with engine, engine.worker(poll_interval=0.02, lease=30.0, grace=1.0):
            op = await engine.schedule(held)
            with anyio.fail_after(10):
                while True:
                    if await engine.status(op.name) == "running":
                        break
                    await anyio.sleep(0.01)
            # Another worker takes the execution over as if the lease had lapsed
            # (a claim "in the future"): the first worker's next write is fenced out.
            later = time.time() + 60
            taken = await engine.store.claim(
                "other", now=later, lease_until=later + 60, limit=1, flows=["held"]
            )
            assert [r.id for r in taken] == [op.name]
            RELEASE["step"].set()
            # The run gives the execution up (the new holder's worker does not exist).
            with anyio.fail_after(10):
                while True:
                    lost = metrics.registry.get_sample_value(
                        "stream_gateway_lease_expiries_total", {"kind": "execution"}
                    )
                    if lost == 1.0:
                        break
                    await anyio.sleep(0.01)


def test_nothing_observes_and_no_extra_is_imported_by_default() -> None:
    import subprocess
    import sys

    code = (
        "import sys, stream_gateway, stream_gateway.durable, stream_gateway.operator\n"
        "from stream_gateway import _telemetry\n"
        "assert _telemetry.observers == (), _telemetry.observers\n"
        "extras = ('prometheus_client', 'opentelemetry')\n"
        "loaded = [m for m in sys.modules if m.startswith(extras)]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
