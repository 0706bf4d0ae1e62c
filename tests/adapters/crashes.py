"""Cutting a durable agent run with a SIGKILL: a worker process of
`tests.adapters.durable_procs`, and what a reader of the run's stream saw."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from stream_gateway.durable import DurableEngine, Lease, Operation
from stream_gateway.streams.base import ChunkEvent, ResetEvent, ResultEvent

from .durable_procs import engine_on

ROOT = Path(__file__).resolve().parents[2]


async def spawn(directory: Path, framework: str) -> Process:
    """A worker process on ``directory``, its interpreter warm, waiting for `go`."""
    with (directory / "workers.log").open("ab") as log:
        return await anyio.open_process(
            [sys.executable, "-m", "tests.adapters.durable_procs", str(directory), framework],
            cwd=ROOT,
            stderr=log,
        )


async def go(proc: Process) -> None:
    """Let the worker run; returns once it serves."""
    assert proc.stdin is not None and proc.stdout is not None
    await proc.stdin.send(b"go\n")
    seen = b""
    with anyio.fail_after(60):
        while b"ready" not in seen:
            seen += await proc.stdout.receive()


async def kill(proc: Process) -> None:
    """SIGKILL the worker (if it still runs) and reap it."""
    if proc.returncode is None:
        with suppress(ProcessLookupError):
            proc.kill()
    with anyio.CancelScope(shield=True):
        await proc.wait()
    await proc.aclose()


def view(events: list[Any]) -> list[Any]:
    """What a reader shows: the chunks, minus those a reset retracted."""
    shown: list[tuple[int, Any]] = []
    for event in events:
        if isinstance(event, ChunkEvent):
            shown.append((event.offset, event.data))
        elif isinstance(event, ResetEvent):
            shown = [(o, c) for o, c in shown if o < event.void_from]
    return [c for _, c in shown]


async def lapse(engine: DurableEngine, execution_id: str) -> None:
    """End the lease of the (killed) worker that holds ``execution_id`` now, as its
    lapse would later: workers hold long leases here, so that a slow machine never
    takes a run from a live worker, and the test need not wait for one to lapse."""
    record = await engine.store.get(execution_id)
    assert record.lease_owner is not None
    lease = Lease(execution_id, record.lease_owner, record.lease_token)
    await engine.store.renew(record.lease_owner, [lease], time.time())


async def killed_mid_answer(
    directory: Path, framework: str, prompt: str, held: Callable[[dict[str, Any]], bool]
) -> tuple[Operation, list[Any]]:
    """Run ``{framework}-weather`` on ``prompt`` in a worker process, SIGKILL it once a chunk for
    which ``held`` is true was streamed (the model holds its answer there while the
    file ``hold`` exists), and let a worker of this process take the run over (the
    killed one's lease ended by `lapse`).

    Returns the execution once it ended, and every event a reader following the
    stream from the start got (chunks and resets).
    """
    (directory / "hold").touch()
    events: list[Any] = []
    reached = anyio.Event()
    engine = engine_on(directory, framework)
    async with engine:
        assert engine.streams is not None
        streams = engine.streams
        op = await engine.schedule(f"{framework}-weather", {"prompt": prompt})
        first = await spawn(directory, framework)
        try:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:

                    async def follow() -> None:
                        async for event in streams.subscribe(op.name, 0):
                            events.append(event)
                            if isinstance(event, ChunkEvent) and held(event.data):
                                reached.set()
                            if isinstance(event, ResultEvent):
                                return

                    tg.start_soon(follow)
                    await go(first)
                    await reached.wait()
                    await kill(first)  # mid-answer: the tool step completed before
                    await lapse(engine, op.name)
                    (directory / "hold").unlink()
                    # Another worker (here, in this process) takes the run over.
                    async with engine.worker(lease=60.0, poll_interval=0.02, grace=0.5):
                        final = await engine.wait(op.name)
        finally:
            await kill(first)
    return final, events
