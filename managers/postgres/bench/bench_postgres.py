"""Postgres stream figures, each against SQLite measured in the same run.

SQLite (the embedded default, one file on this machine) is the baseline: the same
`StreamManager` over both storages, the same flush interval, so the ratios compare the
storages and their change notification (LISTEN/NOTIFY against SQLite's polling) on a
shared, noisy machine where absolute times wander.

- write throughput: one stream written as fast as the writer can, then many at once
  (median of alternating rounds);
- follow lag: a stream written at a steady rate and followed by another manager (as
  another process would), time from `write` to the follower's event, p50 and p99.

    .venv/bin/python managers/postgres/bench/bench_postgres.py

Uses the server at ``POSTGRES_DSN`` (``make bench`` starts one), else starts its own.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import asyncpg

from stream_gateway.streams import ChunkEvent, SqliteStreamStorage, StreamManager, StreamStorage
from stream_gateway_postgres import PostgresStreamStorage
from stream_gateway_postgres.testing import drop_schema, new_schema, shared_server

FLUSH = 0.02  # both storages; SQLite's default, Postgres's default is 0.05
ROUNDS = 3


async def write_rate(make: Callable[[], StreamStorage], streams: int, chunks: int) -> float:
    """Chunks committed per second, ``streams`` writers at once, ``chunks`` each."""
    async with StreamManager(make(), flush_interval=FLUSH) as manager:

        async def one() -> None:
            writer = await manager.open(flow="bench")
            for i in range(chunks):
                await writer.write({"i": i, "text": f" token{i}"})
                if i % 64 == 63:
                    await anyio.lowlevel.checkpoint()  # let the others write too
            await writer.done("ok")

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(streams):
                tg.start_soon(one)
        return streams * chunks / (time.perf_counter() - start)


async def follow_lag(
    make: Callable[[], StreamStorage], count: int = 400, rate: float = 200
) -> list[float]:
    """Seconds from each write to the follower's event, in another manager."""
    lags: list[float] = []
    async with (
        StreamManager(make(), flush_interval=FLUSH) as writing,
        StreamManager(make()) as following,
    ):
        writer = await writing.open(flow="bench")
        await writer.write({"t": time.perf_counter()})
        await writer.flush()

        async def follow() -> None:
            async for event in following.subscribe(writer.stream_id):
                if isinstance(event, ChunkEvent) and event.offset > 0:
                    lags.append(time.perf_counter() - event.data["t"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.2)  # the follower is in place and waiting
            start = time.perf_counter()
            for i in range(count):
                await writer.write({"t": time.perf_counter()})
                await anyio.sleep(max(0.0, start + (i + 1) / rate - time.perf_counter()))
            await writer.done("ok")
    return lags


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def main() -> None:
    server = shared_server()
    conn = await asyncpg.connect(server.dsn)
    try:
        settings = {
            name: await conn.fetchval(f"SHOW {name}") for name in ("fsync", "synchronous_commit")
        }
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    print(f"  PostgreSQL {version} ({', '.join(f'{k}={v}' for k, v in settings.items())}); "
          f"SQLite WAL, synchronous=NORMAL; flush interval {FLUSH}s for both")  # fmt: skip

    schema = new_schema("sg_bench")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        backends: dict[str, Callable[[], Any]] = {
            "postgres": lambda: PostgresStreamStorage(server.dsn, schema=schema),
            "sqlite": lambda: SqliteStreamStorage(path),
        }
        try:
            for streams, chunks in ((1, 20_000), (20, 2_000)):
                # Alternating rounds, median of each: a burst of load elsewhere on the
                # machine then skews one round, not the ratio.
                runs: dict[str, list[float]] = {n: [] for n in backends}
                for _ in range(ROUNDS):
                    for n, make in backends.items():
                        runs[n].append(await write_rate(make, streams, chunks))
                rates = {n: statistics.median(r) for n, r in runs.items()}
                print(
                    f"  write, {streams:>2} stream(s) x {chunks} chunks: postgres "
                    f"{rates['postgres']:8.0f} chunks/s, sqlite {rates['sqlite']:8.0f} chunks/s: "
                    f"{rates['postgres'] / rates['sqlite']:5.2f}x"
                )
            lags: dict[str, list[float]] = {n: [] for n in backends}
            for _ in range(ROUNDS):
                for n, make in backends.items():
                    lags[n] += await follow_lag(make)
            for q in (50, 99):
                pg, lite = pct(lags["postgres"], q), pct(lags["sqlite"], q)
                print(
                    f"  follow lag p{q} (200 chunks/s, another manager): postgres "
                    f"{pg * 1000:6.1f} ms, sqlite {lite * 1000:6.1f} ms: {pg / lite:5.2f}x"
                )
        finally:
            await drop_schema(server.dsn, schema)


if __name__ == "__main__":
    anyio.run(main)
