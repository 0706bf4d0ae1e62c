"""Redis backend benchmarks, on loopback, against a redis-server started here.

- fan-out: one stream at 50 chunks/s read by 1,000 SSE subscribers spread over two
  gateway processes (the writer runs in the first): lag from the chunk's send time to
  its receipt, p50/p99. Baseline: the same run on a shared SQLite file.
- writes: Redis commands per 1,000 chunks written at 50 and at 500 chunks/s, counted by
  the server (``INFO commandstats``): round trips (what a client sends) and commands
  executed (those inside scripts too). Baseline: one ``XADD`` per chunk, the design of
  most token-per-entry stream stores, counted the same way in the same run.
- memory: bytes per chunk in Redis (``MEMORY USAGE`` of the stream's keys) for batches
  of 1, 10 and 50 chunks. Baseline: the chunks' own JSON bytes.

The fan-out runs alternate between the backends for ``--rounds`` rounds and print the
median ratio with its range: on a shared machine one run alone says little.

Run: ``.venv/bin/python managers/redis/bench/bench_redis.py`` (about three minutes;
``--subscribers``, ``--fan-seconds`` and ``--rounds`` shrink it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
from redis.asyncio import Redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))  # the checkout's bench helpers (a raw-socket HTTP client)

from bench._http import post_stream, sse_get  # noqa: E402

from stream_gateway_redis import RedisStreamManager  # noqa: E402
from stream_gateway_redis._layout import log_key, meta_key  # noqa: E402
from stream_gateway_redis.testing import RedisServer  # noqa: E402

RATE = 50.0
# Round trips: what a client sends. Everything else counted ran inside a script.
CLIENT_COMMANDS = {
    "evalsha",
    "eval",
    "zadd",
    "zrangebyscore",
    "zrem",
    "hgetall",
    "xread",
    "script|load",
}
NOT_COUNTED = {"info", "config|resetstat", "config|set"}


# -- fan-out ------------------------------------------------------------------------------


@contextmanager
def gateway(kind: str, location: str) -> Iterator[int]:
    """A `fanout_server.py` process on the backend; yields its port."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "fanout_server.py"), kind, location],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening"):
            raise RuntimeError(f"{kind} gateway failed to start: {line!r}")
        yield int(line.split()[1])
    finally:
        proc.terminate()
        proc.wait(15)


async def fan_out(ports: list[int], subscribers: int, seconds: float) -> dict[str, float]:
    total = int(RATE * seconds)
    headers, _, _ = await post_stream(
        ports[0], "/flows/ticker", {"n": total, "rate": RATE}, until=b"\n\n"
    )
    stream_id = next(
        line.split(":", 1)[1].strip()
        for line in headers.decode().split("\r\n")
        if line.lower().startswith("x-genkit-stream-id:")
    )
    lags: dict[int, list[float]] = {port: [] for port in ports}
    settle = time.time() + 3.0  # leave out the catch-up replay of the first seconds

    async def subscriber(port: int) -> None:
        reader, writer = await sse_get(port, f"/flows/ticker/streams/{stream_id}")
        try:
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    return
                data = await reader.readexactly(size + 2)
                now = time.time()
                for block in data.split(b"\n\n"):
                    if b"event: chunk" in block:
                        sent = float(block.rsplit(b"data: ", 1)[1])
                        if sent > settle:
                            lags[port].append(now - sent)
                    elif b"event: result" in block or b"event: error" in block:
                        return
        finally:
            writer.close()

    tasks = [asyncio.create_task(subscriber(ports[i % len(ports)])) for i in range(subscribers)]
    await asyncio.gather(*tasks)
    everything = sorted(lag for port_lags in lags.values() for lag in port_lags)
    result = {"samples": float(len(everything)), **percentiles(everything, "")}
    for name, port in zip(("writer", "other"), ports, strict=True):
        result.update(percentiles(sorted(lags[port]), f"{name}_"))
    return result


def percentiles(ordered: list[float], prefix: str) -> dict[str, float]:
    if not ordered:
        raise RuntimeError("no chunk was received after the settling time")
    return {
        f"{prefix}p50_ms": statistics.median(ordered) * 1e3,
        f"{prefix}p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
    }


async def fan_out_on(
    kind: str, location: str, subscribers: int, seconds: float
) -> dict[str, float]:
    with gateway(kind, location) as first, gateway(kind, location) as second:
        return await fan_out([first, second], subscribers, seconds)


# -- writes -------------------------------------------------------------------------------


async def command_counts(client: Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name.removeprefix("cmdstat_") not in NOT_COUNTED
    }


async def paced(n: int, rate: float, step: Callable[[int], Awaitable[None]]) -> None:
    start = time.monotonic()
    for i in range(n):
        await anyio.sleep(max(0.0, start + i / rate - time.monotonic()))
        await step(i)


async def ours_per_1000(client: Redis, url: str, rate: float, n: int) -> tuple[float, float]:
    await client.config_resetstat()
    async with RedisStreamManager(url, prefix=f"bench-w{int(rate)}") as manager:
        writer = await manager.open(flow="bench")

        async def step(i: int) -> None:
            await writer.write({"i": i, "text": "token "})

        await paced(n, rate, step)
        await writer.done({"n": n})
    counts = await command_counts(client)
    trips = sum(v for k, v in counts.items() if k in CLIENT_COMMANDS)
    return trips * 1000 / n, sum(counts.values()) * 1000 / n


async def naive_per_1000(client: Redis, rate: float, n: int) -> float:
    await client.config_resetstat()
    key = f"bench-naive-{int(rate)}"

    async def step(i: int) -> None:
        await client.xadd(key, {"d": b'{"i":%d,"text":"token "}' % i})

    await paced(n, rate, step)
    counts = await command_counts(client)
    await client.delete(key)
    return sum(counts.values()) * 1000 / n


# -- memory -------------------------------------------------------------------------------


async def bytes_per_chunk(client: Redis, url: str, per_batch: int, n: int) -> tuple[float, float]:
    chunk = '"Durable "'  # a typical LLM token chunk: a short JSON string
    async with RedisStreamManager(url, prefix=f"bench-m{per_batch}", flush_interval=60) as manager:
        writer = await manager.open(flow="bench")
        for i in range(n):
            await writer.write_raw(chunk.encode())
            if (i + 1) % per_batch == 0:
                await writer.flush()
        await writer.done(None)
        prefix, sid = manager.storage.prefix, writer.stream_id
        used = 0
        for key in (meta_key(prefix, sid), log_key(prefix, sid)):
            used += int(await client.memory_usage(key, samples=0) or 0)
    return used / n, len(chunk)


# -- main -------------------------------------------------------------------------------


async def main(subscribers: int, fan_seconds: float, write_chunks: int, rounds: int) -> None:
    print("# Redis backend benchmarks (loopback; one redis-server started here, AOF everysec)")
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(directory=Path(tmp) / "redis")
        server.directory.mkdir()
        server.start()
        client = Redis.from_url(server.url)
        try:
            print(f"\n## fan-out: 1 stream at {RATE:.0f} chunks/s, {subscribers} SSE subscribers")
            print("   over 2 gateway processes (the writer in the first), lag send -> receipt;")
            print(f"   SQLite and Redis alternate, {rounds} rounds (a shared machine is noisy)")
            ratios: list[tuple[float, float]] = []
            for round_ in range(1, rounds + 1):
                db = str(Path(tmp) / f"fan-{round_}.db")
                sqlite = await fan_out_on("sqlite", db, subscribers, fan_seconds)
                redis = await fan_out_on(
                    "redis", f"{server.url}#bench-fan-{round_}", subscribers, fan_seconds
                )
                for name, fig in (("SQLite (baseline)", sqlite), ("Redis", redis)):
                    print(
                        f"   {round_}. {name:18} p50 {fig['p50_ms']:7.1f} ms"
                        f"  p99 {fig['p99_ms']:7.1f} ms   writer's process p50/p99"
                        f" {fig['writer_p50_ms']:.1f}/{fig['writer_p99_ms']:.1f} ms,"
                        f" other {fig['other_p50_ms']:.1f}/{fig['other_p99_ms']:.1f} ms"
                        f"  ({fig['samples']:,.0f} receipts)"
                    )
                ratios.append(
                    (redis["p50_ms"] / sqlite["p50_ms"], redis["p99_ms"] / sqlite["p99_ms"])
                )
                print(f"      Redis / SQLite: p50 {ratios[-1][0]:.2f}x, p99 {ratios[-1][1]:.2f}x")
            p50s, p99s = sorted(r[0] for r in ratios), sorted(r[1] for r in ratios)
            print(
                f"   Redis / SQLite over the rounds: p50 {statistics.median(p50s):.2f}x"
                f" (from {p50s[0]:.2f}x to {p50s[-1]:.2f}x),"
                f" p99 {statistics.median(p99s):.2f}x (from {p99s[0]:.2f}x to {p99s[-1]:.2f}x)"
            )

            print(f"\n## writes: Redis commands per 1,000 chunks ({write_chunks:,} written)")
            for rate in (50.0, 500.0):
                n = write_chunks if rate > 50 else max(write_chunks // 4, 250)
                trips, executed = await ours_per_1000(client, server.url, rate, n)
                naive = await naive_per_1000(client, rate, n)
                print(
                    f"   {rate:5.0f} chunks/s: {trips:6.1f} round trips ({trips / naive:.3f}x),"
                    f" {executed:7.1f} commands executed ({executed / naive:.3f}x);"
                    f" baseline one XADD per chunk: {naive:.0f}"
                )

            print("\n## memory: Redis bytes per stored chunk (10-byte JSON chunks)")
            for per_batch in (1, 10, 50):
                used, raw = await bytes_per_chunk(client, server.url, per_batch, 10_000)
                print(
                    f"   {per_batch:3} chunks per batch: {used:6.1f} bytes per chunk"
                    f" = {used / raw:.2f}x the chunk's own bytes"
                )
        finally:
            await client.aclose()
            server.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--fan-seconds", type=float, default=15.0)
    parser.add_argument("--write-chunks", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3, help="fan-out rounds per backend")
    args = parser.parse_args()
    asyncio.run(main(args.subscribers, args.fan_seconds, args.write_chunks, args.rounds))
