"""Streaming durable flows: the cost of durability per chunk, and take-over time.

1. Chunks/s of one flow that streams ``--chunks`` chunks from inside one step, run as
   a durable flow (engine + worker) against the same flow run as a plain streaming
   flow, on the same stream manager with its default flush settings (SQLite, then
   memory); ratio durable / plain (target: >= 0.8). Each is timed the same way: from
   the start (opening the stream, or scheduling the execution) until one reader in
   this process has received every chunk and the end. Best of ``--rounds`` each,
   the two alternating (which goes first swaps every round).
2. Take-over: a worker process streaming a long step is SIGKILLed; a spare worker
   (same worker id, interpreter already warm) is told to go at once; the time from the
   kill to the first chunk of the new worker's attempt a subscriber in this process
   receives (after the reset that retracts what the dead one left uncommitted),
   p50/p99 over ``--kills`` kills, against the mean interval between two chunks while
   nothing is killed, and against the first backend's p50 from the same run. On
   SQLite, and on Postgres and Firestore (durable store and streams both there) when
   their servers are in the environment (``POSTGRES_DSN``, ``FIRESTORE_EMULATOR_HOST``:
   run it under ``scripts/with_servers.sh``, as ``make bench`` does), or as
   ``--backends`` names.

    .venv/bin/python -m bench.bench_durable_streaming [--chunks 20000] [--rounds 5] \
        [--kills 20] [--backends sqlite,postgres,firestore]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from stream_gateway import Flow, FlowContext, InMemoryStreamManager, StreamManager
from stream_gateway.durable import DurableContext, DurableEngine, InMemoryDurableStore, durable_flow
from stream_gateway.streams import (
    ChunkEvent,
    ErrorEvent,
    ResetEvent,
    ResultEvent,
    SqliteStreamManager,
)

ROOT = Path(__file__).resolve().parents[1]


async def tokens(count: int, send: Any) -> int:
    for i in range(count):
        await send(f"t{i} ")
    return count


@durable_flow(input=int, output=int, chunk=str)
async def durable_tokens(count: int, ctx: DurableContext) -> int:
    async def llm() -> int:
        return await tokens(count, ctx.send_chunk)

    return int(await ctx.run("llm", llm))


async def plain_fn(count: int, ctx: FlowContext[str]) -> int:
    return await tokens(count, ctx.send_chunk)


plain_tokens: Flow[int, int, str] = Flow(
    plain_fn, name="plain_tokens", input=int, output=int, chunk=str
)


async def drain(manager: StreamManager, stream_id: str) -> None:
    """Follow the stream to its end, as one reader would."""
    async for event in manager.subscribe(stream_id):
        if isinstance(event, ResultEvent | ErrorEvent):
            return


Rates = tuple[float, float]  # chunks per second of wall-clock time, per CPU second


class Clock:
    """Wall-clock and process CPU time from now on. The machines are shared: CPU time
    (every thread of this process: the loop, SQLite's threads) is the steadier
    figure of what the work itself costs."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def rates(self, count: int) -> Rates:
        wall = time.perf_counter() - self.wall
        cpu = max(time.process_time() - self.cpu, 1e-9)
        return count / wall, count / cpu


async def run_plain(manager: StreamManager, count: int) -> Rates:
    clock = Clock()
    writer = await manager.open(flow="plain_tokens")

    async def sink(raw: bytes) -> None:
        await writer.write_raw(raw)

    async def produce() -> None:
        result = await plain_tokens.fn(count, FlowContext(plain_tokens, sink=sink))
        await writer.done(result)

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        await drain(manager, writer.stream_id)
    return clock.rates(count)


async def run_durable(engine: DurableEngine, manager: StreamManager, count: int) -> Rates:
    clock = Clock()
    op = await engine.schedule(durable_tokens, count)
    await drain(manager, op.name)
    return clock.rates(count)


async def throughput(manager: StreamManager, count: int, rounds: int) -> tuple[Rates, Rates]:
    """The best wall-clock and the best CPU rates of the plain and the durable flow."""
    engine = DurableEngine(
        [durable_tokens], store=InMemoryDurableStore(), streams=manager, poll_interval=0.01
    )
    plain: list[Rates] = []
    durable: list[Rates] = []
    async with engine, engine.worker(poll_interval=0.01):
        for i in range(rounds):
            # Alternate which goes first: neither always runs on the other's garbage.
            if i % 2:
                durable.append(await run_durable(engine, manager, count))
            plain.append(await run_plain(manager, count))
            if not i % 2:
                durable.append(await run_durable(engine, manager, count))

    def best(rates: list[Rates]) -> Rates:
        return max(r[0] for r in rates), max(r[1] for r in rates)

    return best(plain), best(durable)


def report(name: str, plain: Rates, durable: Rates) -> None:
    print(f"{name:7} plain {plain[0]:8.0f} chunks/s  durable {durable[0]:8.0f} chunks/s  "
          f"durable/plain {durable[0] / plain[0]:.2f} (per CPU second "
          f"{durable[1] / plain[1]:.2f})")  # fmt: skip


# -- take-over ------------------------------------------------------------------------


@asynccontextmanager
async def stores_on(backend: str) -> AsyncIterator[tuple[str, str]]:
    """Fresh (durable store URL, stream store URL) on ``backend``, dropped after."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield (
                os.path.join(directory, "durable.sqlite3"),
                os.path.join(directory, "streams.sqlite3"),
            )
    elif backend == "postgres":
        from stream_gateway_postgres.testing import drop_schema, new_schema, shared_server

        server, schema = shared_server(), new_schema()
        url = f"{server.dsn}#schema={schema}"
        try:
            yield url, url
        finally:
            await drop_schema(server.dsn, schema)
    elif backend == "firestore":
        from stream_gateway_firestore.testing import shared_emulator

        emulator, name = shared_emulator(), f"b{secrets.token_hex(4)}"
        project = emulator.project
        try:
            yield f"firestore://{project}#prefix={name}", f"firestore://{project}#collection={name}"
        finally:
            await emulator.awipe()
    else:
        raise SystemExit(f"unknown backend {backend!r}: sqlite, postgres or firestore")


async def spawn(urls: tuple[str, str]) -> Process:
    return await anyio.open_process(
        [sys.executable, "-m", "bench._durable_stream_worker", *urls], cwd=ROOT
    )


async def wait_for(proc: Process, word: bytes) -> None:
    assert proc.stdout is not None
    seen = b""
    while word not in seen:
        seen += await proc.stdout.receive()


async def go(proc: Process) -> None:
    assert proc.stdin is not None
    await proc.stdin.send(b"go\n")
    await wait_for(proc, b"ready")


async def takeover(kills: int, urls: tuple[str, str]) -> tuple[list[float], float]:
    from bench._durable_stream_worker import engine_on

    engine = engine_on(*urls)
    async with engine:
        assert engine.streams is not None
        op = await engine.schedule("endless", None)
        gaps: list[float] = []
        takeovers: list[float] = []
        killed_at: list[float] = []
        spare = await spawn(urls)
        worker = spare
        await go(worker)
        spare = await spawn(urls)

        async def follow() -> None:
            # The next chunk after a kill is the new worker's first: the dead one's
            # last chunks may still arrive after the kill, and the new attempt first
            # retracts them (a reset), then streams.
            last: float | None = None
            retracted = False
            async for event in engine.streams.subscribe(op.name):  # type: ignore[union-attr]
                now = time.perf_counter()
                if isinstance(event, ResetEvent):
                    retracted = bool(killed_at)
                    continue
                if not isinstance(event, ChunkEvent):
                    continue
                if killed_at:
                    if retracted:
                        takeovers.append(now - killed_at.pop())
                        retracted = False
                        last = now
                    continue
                if last is not None:
                    gaps.append(now - last)
                last = now

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            for _ in range(kills):
                await anyio.sleep(0.3)
                while killed_at:  # noqa: ASYNC110 - the last take-over has not streamed yet
                    await anyio.sleep(0.01)
                await wait_for(spare, b"warm")  # a standby: imported, waiting
                worker.kill()
                killed_at.append(time.perf_counter())
                await worker.wait()
                await go(spare)
                worker, spare = spare, await spawn(urls)
            while killed_at:  # noqa: ASYNC110 - polled: set by the follower
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        for proc in (worker, spare):
            proc.kill()
            await proc.wait()
        await engine.cancel(op.name)
    return takeovers, statistics.fmean(gaps)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(args: argparse.Namespace) -> None:
    if args.rounds:  # --rounds 0: take-over only
        with tempfile.TemporaryDirectory() as directory:
            async with SqliteStreamManager(os.path.join(directory, "s.sqlite3")) as sqlite:
                plain, durable = await throughput(sqlite, args.chunks, args.rounds)
        report("sqlite", plain, durable)
        async with InMemoryStreamManager() as memory:
            plain, durable = await throughput(memory, args.chunks, args.rounds)
        report("memory", plain, durable)
    if not args.kills:
        return
    baseline: float | None = None
    for backend in args.backends.split(","):
        async with stores_on(backend) as urls:
            takeovers, gap = await takeover(args.kills, urls)
        p50, p99 = percentile(takeovers, 0.5), percentile(takeovers, 0.99)
        baseline = baseline or p50
        print(f"take-over ({backend}, {len(takeovers)} SIGKILLs): p50 {p50 * 1000:.0f} ms, "
              f"p99 {p99 * 1000:.0f} ms; p50 / mean interval between chunks without kills "
              f"({gap * 1000:.1f} ms) {p50 / gap:.1f}x; p50 / {args.backends.split(',')[0]} "
              f"p50 {p50 / baseline:.2f}x; p99 / worker lease (5 s) {p99 / 5.0:.3f}")  # fmt: skip


def default_backends() -> str:
    """SQLite, and the servers the environment has (scripts/with_servers.sh exports them)."""
    names = ["sqlite"]
    if os.environ.get("POSTGRES_DSN"):
        names.append("postgres")
    if os.environ.get("FIRESTORE_EMULATOR_HOST"):
        names.append("firestore")
    return ",".join(names)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--backends", default=default_backends())
    anyio.run(main, parser.parse_args())
