"""Streaming durable flows: the cost of durability per chunk, and take-over time.

1. Chunks/s of one flow that streams ``--chunks`` chunks from inside one step, run as
   a durable flow (engine + worker) against the same flow run as a plain streaming
   flow, on the same stream manager with its default flush settings (SQLite, then
   memory); ratio durable / plain (target: >= 0.8). Each is timed the same way: from
   the start (opening the stream, or scheduling the execution) until one reader in
   this process has received every chunk and the end. Best of ``--rounds`` each,
   the two alternating (which goes first swaps every round).
2. Take-over on SQLite: a worker process streaming a long step is SIGKILLed; a spare
   worker (same worker id, interpreter already warm) is told to go at once; the time
   from the kill to the next chunk a subscriber in this process receives, p50/p99 over
   ``--kills`` kills, against the median gap between two chunks while nothing is
   killed (the baseline).

    .venv/bin/python -m bench.bench_durable_streaming [--chunks 20000] [--rounds 5] [--kills 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from stream_gateway import Flow, FlowContext, InMemoryStreamManager, StreamManager
from stream_gateway.durable import DurableContext, DurableEngine, InMemoryDurableStore, durable_flow
from stream_gateway.streams import ChunkEvent, ErrorEvent, ResultEvent, SqliteStreamManager

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


async def spawn(directory: str) -> Process:
    return await anyio.open_process(
        [sys.executable, "-m", "bench._durable_stream_worker", directory], cwd=ROOT
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


async def takeover(kills: int) -> tuple[list[float], float]:
    from bench._durable_stream_worker import engine_on

    with tempfile.TemporaryDirectory() as directory:
        engine = engine_on(directory)
        async with engine:
            assert engine.streams is not None
            op = await engine.schedule("endless", None)
            gaps: list[float] = []
            takeovers: list[float] = []
            killed_at: list[float] = []
            spare = await spawn(directory)
            worker = spare
            await go(worker)
            spare = await spawn(directory)

            async def follow() -> None:
                last = time.perf_counter()
                async for event in engine.streams.subscribe(op.name):  # type: ignore[union-attr]
                    now = time.perf_counter()
                    if not isinstance(event, ChunkEvent):
                        continue
                    if killed_at:
                        takeovers.append(now - killed_at.pop())
                    else:
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
                    worker, spare = spare, await spawn(directory)
                while killed_at:  # noqa: ASYNC110 - polled: set by the follower
                    await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
            for proc in (worker, spare):
                proc.kill()
                await proc.wait()
            await engine.cancel(op.name)
    return takeovers, max(gaps)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as directory:
        async with SqliteStreamManager(os.path.join(directory, "s.sqlite3")) as sqlite:
            plain, durable = await throughput(sqlite, args.chunks, args.rounds)
    report("sqlite", plain, durable)
    async with InMemoryStreamManager() as memory:
        plain, durable = await throughput(memory, args.chunks, args.rounds)
    report("memory", plain, durable)
    if args.kills:
        takeovers, gap = await takeover(args.kills)
        p50, p99 = percentile(takeovers, 0.5), percentile(takeovers, 0.99)
        print(f"take-over (SQLite, {len(takeovers)} SIGKILLs): p50 {p50 * 1000:.0f} ms, "
              f"p99 {p99 * 1000:.0f} ms; longest gap between chunks without kills "
              f"{gap * 1000:.1f} ms (p50 / that {p50 / gap:.1f}x)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kills", type=int, default=20)
    anyio.run(main, parser.parse_args())
