"""Durable flows on Firestore: documents read and written per step and per execution,
and how soon a signal sent from elsewhere wakes a worker, against its poll interval.

Documents are counted at the gRPC boundary (every document in every commit, every
document a query or get returns) on every client involved, never estimated. Wake
latency: a worker polling every ``POLL`` seconds, signals sent through another
engine (as another process would), measured from the send to the step after the
wait; printed as a fraction of the poll interval, the baseline a store without
notifications gives (half of it on average).

    .venv/bin/python managers/firestore/bench/bench_firestore_durable.py

Takes a few minutes on the emulator (started here). Needs Java and its jar.
"""

from __future__ import annotations

import os
import statistics
import time

import anyio
from bench_firestore import Traffic

from stream_gateway.durable import DurableContext, DurableEngine, durable_flow
from stream_gateway_firestore import FirestoreDurableStore
from stream_gateway_firestore.testing import HOST_ENV, FirestoreEmulator

POLL = 5.0
SIGNALS = 10
STEPS = 20


@durable_flow(input=int, output=int)
async def stepped(steps: int, ctx: DurableContext) -> int:
    total = 0
    for i in range(steps):

        async def step(i: int = i) -> int:
            return i

        total += await ctx.run(f"s{i}", step)
    return total


@durable_flow(input=int, output=float)
async def waits(n: int, ctx: DurableContext) -> float:
    sent: float = await ctx.wait_for_signal("go", "go")
    seen: float = await ctx.run("seen", time.time)
    return seen - sent


def store(project: str, prefix: str) -> tuple[FirestoreDurableStore, Traffic]:
    made = FirestoreDurableStore(project=project, prefix=prefix)
    return made, Traffic(made.client)


async def traffic_of(project: str, prefix: str, steps: int) -> tuple[int, int]:
    """Reads and writes of one execution of ``steps`` steps: scheduled, claimed,
    run to the end and read back by the caller, all clients counted."""
    worker_store, worker_traffic = store(project, prefix)
    engine = DurableEngine([stepped], store=worker_store)
    async with engine, engine.worker(poll_interval=POLL):
        op = await engine.schedule(stepped, steps)
        await engine.wait(op.name)
    return worker_traffic.reads, worker_traffic.writes


async def per_step(project: str) -> None:
    one_r, one_w = await traffic_of(project, "bench-one", 1)
    many_r, many_w = await traffic_of(project, "bench-many", STEPS)
    step_r = (many_r - one_r) / (STEPS - 1)
    step_w = (many_w - one_w) / (STEPS - 1)
    print(f"one-step execution: {one_r} document reads, {one_w} document writes")
    print(f"{STEPS}-step execution: {many_r} reads, {many_w} writes")
    print(f"each further step: {step_r:.2f} reads, {step_w:.2f} writes")


async def wake_latency(project: str) -> None:
    worker_store, _ = store(project, "bench-wake")
    sender_store, _ = store(project, "bench-wake")
    worker_engine = DurableEngine([waits], store=worker_store)
    sender = DurableEngine([waits], store=sender_store)
    latencies: list[float] = []
    async with worker_engine, sender, worker_engine.worker(poll_interval=POLL):
        for i in range(SIGNALS):
            op = await sender.schedule(waits, i)
            while (await sender.get_state(op.name)).status != "waiting":  # noqa: ASYNC110
                await anyio.sleep(0.01)
            await sender.signal(op.name, "go", time.time())
            latencies.append((await sender.wait(op.name)).response)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    print(
        f"signal to wake (Firestore listener, poll every {POLL:.0f}s): p50 {p50 * 1000:.0f} ms "
        f"({p50 / POLL:.3f} of the poll interval), p99 {p99 * 1000:.0f} ms "
        f"({p99 / POLL:.3f}); polling alone averages 0.5 of it"
    )


async def main() -> None:
    external = os.environ.get(HOST_ENV)
    emulator = FirestoreEmulator(address=external) if external else FirestoreEmulator()
    with emulator:
        os.environ[HOST_ENV] = emulator.address
        await per_step(emulator.project)
        await wake_latency(emulator.project)


if __name__ == "__main__":
    anyio.run(main)
