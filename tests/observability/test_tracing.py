"""OpenTelemetry: the request span is the parent of the run span and its step spans,
for plain streaming flows and for durable executions run later by a worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette

from stream_gateway import FlowContext, Gateway, InMemoryStreamManager, flow
from stream_gateway.durable import (
    DurableContext,
    DurableEngine,
    InMemoryDurableStore,
    RetryPolicy,
    durable_flow,
)
from stream_gateway.tracing import OpenTelemetryTracing

pytestmark = pytest.mark.anyio

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CLIENT_SPAN = 0x00F067AA0BA902B7
TRACEPARENT = {"traceparent": f"00-{TRACE_ID:032x}-{CLIENT_SPAN:016x}-01"}


@flow(input=str, output=str, chunk=str)
async def shout(text: str, ctx: FlowContext[str]) -> str:
    await ctx.send_chunk(text.upper())
    return text.upper()


@durable_flow(input=int, output=int)
async def add(n: int, ctx: DurableContext) -> int:
    one: int = await ctx.run("one", lambda: n + 1)
    two: int = await ctx.run("two", lambda: one + 1)
    await ctx.sleep("pause", 0.01)
    return two


@asynccontextmanager
async def traced_app() -> AsyncIterator[tuple[httpx.AsyncClient, Gateway, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = DurableEngine([add], store=InMemoryDurableStore(), poll_interval=0.02)
    gateway = Gateway(
        [shout],
        stream_manager=InMemoryStreamManager(),
        durable=engine.worker(poll_interval=0.02, lease=5.0, grace=1.0),
    )
    app = OpenTelemetryMiddleware(
        Starlette(routes=[gateway.route("/flows")]), tracer_provider=provider
    )
    with OpenTelemetryTracing(provider):
        async with (
            gateway.lifespan(),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test"
            ) as client,
        ):
            yield client, gateway, exporter


def request_span(spans: tuple[ReadableSpan, ...], path: str) -> ReadableSpan:
    [span] = [s for s in spans if s.kind is SpanKind.SERVER and path in s.name]
    assert span.parent is not None and span.parent.span_id == CLIENT_SPAN
    return span


def children(
    spans: tuple[ReadableSpan, ...], parent: ReadableSpan, name: str
) -> list[ReadableSpan]:
    assert parent.context is not None
    return [
        s
        for s in spans
        if s.name == name and s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


async def test_a_durable_run_and_its_steps_continue_the_request_trace() -> None:
    async with traced_app() as (client, gateway, exporter):
        started = await client.post("/flows/durable/add", json={"data": 1}, headers=TRACEPARENT)
        assert started.status_code == 200
        assert gateway.durable is not None
        with anyio.fail_after(10):
            done = await gateway.durable.wait(started.json()["name"])
        assert done.response == 3
        spans = exporter.get_finished_spans()

    request = request_span(spans, "/flows/durable/add")
    # Two replays: the first runs both steps and parks on the sleep, the second ends.
    runs = children(spans, request, "durable.run")
    assert len(runs) == 2
    assert all(r.context is not None and r.context.trace_id == TRACE_ID for r in runs)
    assert {r.attributes["stream_gateway.execution_id"] for r in runs if r.attributes} == {
        done.name
    }
    steps = [s for r in runs for s in children(spans, r, "durable.step")]
    assert sorted(str(s.attributes["stream_gateway.step"]) for s in steps if s.attributes) == [
        "one",
        "two",
    ]
    writes = [s for r in runs for s in children(spans, r, "durable.storage.append")]
    assert writes  # the journal entries, written inside the run


async def test_a_streaming_run_and_its_storage_calls_are_children_of_its_request() -> None:
    async with traced_app() as (client, _, exporter):
        response = await client.post(
            "/flows/shout",
            json={"data": "hi"},
            headers={**TRACEPARENT, "accept": "text/event-stream"},
        )
        assert response.text.endswith('data: {"result":"HI"}\n\n')
        spans = exporter.get_finished_spans()

    request = request_span(spans, "/flows/shout")
    [run] = children(spans, request, "flow.run")
    assert run.attributes is not None and run.attributes["stream_gateway.flow"] == "shout"
    assert run.attributes["stream_gateway.stream_id"] == response.headers["x-genkit-stream-id"]
    # The storage calls of the run (its stream's create, the flush of its chunk and
    # its end) and of the response reading it back belong to the request's trace.
    for call in ("create", "append", "finish", "read"):
        assert children(spans, request, f"stream.storage.{call}"), call


async def test_a_failing_step_is_recorded_on_its_span() -> None:
    @durable_flow(output=int)
    async def broken(_: None, ctx: DurableContext) -> int:
        def fail() -> int:
            raise ValueError("bad input upstream")

        value: int = await ctx.run("fails", fail, retry=RetryPolicy(max_attempts=1))
        return value

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = DurableEngine([broken], store=InMemoryDurableStore(), poll_interval=0.02)
    with OpenTelemetryTracing(provider):
        async with engine, engine.worker(poll_interval=0.02):
            op = await engine.schedule(broken)
            with anyio.fail_after(10):
                await engine.wait(op.name)
    [step] = [s for s in exporter.get_finished_spans() if s.name == "durable.step"]
    assert not step.status.is_ok
    assert any("bad input upstream" in str(e.attributes) for e in step.events)
