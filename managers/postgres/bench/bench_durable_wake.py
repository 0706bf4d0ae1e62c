"""Signal-to-wake latency of durable flows: Postgres (LISTEN/NOTIFY) against SQLite
(polling), as ratios to the worker's poll interval, measured in the same run.

An execution parks on `wait_for_signal`; another engine on another store instance (as
another process would be: they share no in-process notifier) sends the signal; the
latency is from just before `signal` to the first step after the wait starting in the
worker. p50 and p99 over ``--rounds`` signals, each to its own parked execution.

    .venv/bin/python managers/postgres/bench/bench_durable_wake.py

Uses the server at ``POSTGRES_DSN`` (``make bench`` starts one), else starts its own.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from stream_gateway.durable import (
    DurableContext,
    DurableEngine,
    DurableStore,
    SqliteDurableStore,
    durable_flow,
)
from stream_gateway_postgres import PostgresDurableStore
from stream_gateway_postgres.testing import drop_schema, new_schema, shared_server

POLL = 0.5  # the worker's default poll interval


@durable_flow(input=int, output=float)
async def parked(n: int, ctx: DurableContext) -> float:
    """Waits for ``go``, then returns when the step after the wait ran."""
    await ctx.wait_for_signal("go", "go")
    woke: float = await ctx.run("woke", time.time)
    return woke


async def latencies(make: Callable[[], DurableStore], rounds: int) -> list[float]:
    worker_side = DurableEngine([parked], store=make())
    client = DurableEngine([parked], store=make(), poll_interval=0.01)
    found: list[float] = []
    async with client, worker_side, worker_side.worker(poll_interval=POLL):
        for n in range(rounds):
            op = await client.schedule(parked, n)
            while (await client.get_state(op.name)).status != "waiting":  # noqa: ASYNC110
                await anyio.sleep(0.01)
            await anyio.sleep(0.05)  # the worker is idle again, in its poll wait
            sent = time.time()
            await client.signal(op.name, "go", 1)
            done = await client.wait(op.name)
            assert isinstance(done.response, float)
            found.append(done.response - sent)
    return found


def describe(name: str, values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    print(
        f"{name:>9}: p50 {p50 * 1000:7.1f} ms ({p50 / POLL:5.3f} x poll)   "
        f"p99 {p99 * 1000:7.1f} ms ({p99 / POLL:5.3f} x poll)"
    )
    return p50, p99


async def main(rounds: int) -> None:
    server = shared_server()
    schema = new_schema("sg_bench")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "durable.sqlite3"
            print(f"signal-to-wake latency, {rounds} signals, worker poll interval {POLL}s")
            sqlite = describe("sqlite", await latencies(lambda: SqliteDurableStore(path), rounds))
            postgres = describe(
                "postgres",
                await latencies(lambda: PostgresDurableStore(server.dsn, schema=schema), rounds),
            )
            print(
                f"postgres / sqlite: p50 {postgres[0] / sqlite[0]:.3f}, "
                f"p99 {postgres[1] / sqlite[1]:.3f}"
            )
    finally:
        await drop_schema(server.dsn, schema)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    anyio.run(main, parser.parse_args().rounds)
