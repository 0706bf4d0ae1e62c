"""The crash test of streaming durable flows: a worker process SIGKILLed again and
again while readers follow the stream over SSE, dropping and resuming at random.

Every reader must end with exactly the chunks of the final successful attempt of
each step, in order: nothing of a completed step lost or repeated, everything a lost
attempt streamed retracted."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import Process

from stream_gateway import FlowContext, Gateway, flow
from stream_gateway._json import loads
from tests.durable.stream_procs import Job, engine_on
from tests.gateway.conftest import serve

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
STEPS, CHUNKS, PAUSE = 20, 50, 0.002
KILLS, READERS = 30, 5


@flow(chunk=dict)
async def streamed(_: Any, ctx: FlowContext[Any]) -> None:
    """Never run: it names the durable flow's streams for the SSE endpoint."""
    raise AssertionError("not started here")


async def spawn(directory: Path) -> Process:
    log = (directory / "workers.log").open("ab")
    try:
        return await anyio.open_process(
            [sys.executable, "-m", "tests.durable.stream_procs", str(directory)],
            cwd=ROOT,
            stderr=log,
        )
    finally:
        log.close()


async def go(proc: Process) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    await proc.stdin.send(b"go\n")
    seen = b""
    with anyio.fail_after(60):
        while b"ready" not in seen:
            seen += await proc.stdout.receive()


async def kill(proc: Process) -> None:
    if proc.returncode is None:
        proc.kill()
    with anyio.CancelScope(shield=True):
        await proc.wait()
    await proc.aclose()


async def read(http: httpx.AsyncClient, url: str, rng: random.Random) -> list[Any]:
    """Follow ``url`` to its result, dropping the connection at random moments and
    resuming after the last event id; returns the view (resets applied)."""
    view: list[tuple[int, Any]] = []
    last: str | None = None
    while True:
        budget = rng.randint(1, 400)
        headers = {} if last is None else {"last-event-id": last}
        async with http.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    continue
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                event, fields = fields, {}
                if not event:
                    continue  # the blank line after a keep-alive comment
                kind = event.get("event")
                if kind == "chunk":
                    view.append((int(event["id"]), loads(event["data"])))
                elif kind == "reset":
                    start = loads(event["data"])["offset"]
                    view = [(o, c) for o, c in view if o < start]
                elif kind == "result":
                    return [c for _, c in view]
                else:
                    raise AssertionError(f"unexpected event {event}")
                last = event.get("id", last)
                budget -= 1
                if budget == 0:
                    break  # drop the connection; resume after `last`


async def test_sigkilled_workers_and_dropping_readers_agree_on_the_output(tmp_path: Path) -> None:
    rng = random.Random(2024)
    engine = engine_on(str(tmp_path))
    async with engine:
        assert engine.streams is not None
        op = await engine.schedule("streamed", Job(steps=STEPS, chunks=CHUNKS, pause=PAUSE))
        gateway = Gateway([streamed], stream_manager=engine.streams)
        views: list[list[Any]] = []
        async with serve(gateway) as base, httpx.AsyncClient(timeout=60) as http:
            url = f"{base}/streamed/streams/{op.name}"

            async def reader(seed: int) -> None:
                views.append(await read(http, url, random.Random(seed)))

            procs: list[Process] = []
            try:
                with anyio.fail_after(240):
                    async with anyio.create_task_group() as tg:
                        for n in range(READERS):
                            tg.start_soon(reader, n)
                        procs.append(await spawn(tmp_path))
                        for _ in range(KILLS):
                            worker = procs[-1]
                            await go(worker)
                            procs.append(await spawn(tmp_path))
                            await anyio.sleep(rng.uniform(0.0, 0.25))
                            await kill(worker)  # SIGKILL, at a random moment
                        await go(procs[-1])
                        final = await engine.wait(op.name)
            finally:
                for proc in procs:  # a failure leaves no worker behind
                    if proc.returncode is None:
                        await kill(proc)
    assert final.status == "completed", final.to_json()
    tokens = final.response
    assert isinstance(tokens, list) and len(tokens) == STEPS
    expected: list[Any] = []
    for k, token in enumerate(tokens):
        expected += [{"s": k, "i": i, "t": token} for i in range(CHUNKS)]
        expected.append({"done": k})
    assert len(views) == READERS
    for view in views:
        assert view == expected
