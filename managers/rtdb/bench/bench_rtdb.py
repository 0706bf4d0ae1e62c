"""RTDB backend benchmarks against the stand-in server (started here, on loopback).

- replay: read a finished 10,000-chunk stream (500 batches of 20) from offset 0 and from
  offset 9,000, each by a fresh manager (its own storage and HTTP client); best of three.
  Resuming near the end must fetch only the last batches: the ratio shows how much cheaper.
- live lag: one manager writes 100 chunks/s, another (separate storage and HTTP client)
  follows the stream; lag from ``write`` to receipt, p50/p99, for two flush intervals.
  Baseline: the database's own floor, a PUT until an event-stream listener hears it.

Run: ``.venv/bin/python managers/rtdb/bench/bench_rtdb.py`` (about half a minute).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import anyio
import httpx

from stream_gateway.streams import ChunkEvent, ResultEvent
from stream_gateway_rtdb import RtdbStreamManager
from stream_gateway_rtdb.testing import StandinServer

REPEATS = 3
ADMIN = {"Authorization": "Bearer owner"}


async def write_stream(url: str, chunks: int, per_batch: int) -> str:
    async with RtdbStreamManager(url, flush_interval=60) as manager:
        writer = await manager.open(flow="bench")
        for i in range(chunks):
            await writer.write({"i": i, "text": "token " * 4})
            if (i + 1) % per_batch == 0:
                await writer.flush()
        await writer.done({"n": chunks})
        return writer.stream_id


async def replay(server: StandinServer, url: str, sid: str, offset: int) -> dict[str, float]:
    best: dict[str, float] = {}
    for _ in range(REPEATS):
        before = (await server.stats())["requests"]["GET"]
        async with RtdbStreamManager(url) as manager:
            start = time.perf_counter()
            count = 0
            async for event in manager.subscribe(sid, offset):
                count += isinstance(event, ChunkEvent)
            seconds = time.perf_counter() - start
        gets = (await server.stats())["requests"]["GET"] - before
        if not best or seconds < best["seconds"]:
            best = {"seconds": seconds, "chunks": count, "gets": gets}
    return best


def percentiles(lags: list[float]) -> tuple[float, float]:
    ordered = sorted(lags)
    return statistics.median(ordered) * 1e3, ordered[int(len(ordered) * 0.99) - 1] * 1e3


async def live_lag(url: str, flush_interval: float, n: int, rate: float) -> tuple[float, float]:
    lags: list[float] = []
    ends: list[object] = []
    async with (
        RtdbStreamManager(url, flush_interval=flush_interval) as a,
        RtdbStreamManager(url) as b,
    ):
        writer = await a.open(flow="bench")

        async def follow() -> None:
            async for event in b.subscribe(writer.stream_id):
                if isinstance(event, ChunkEvent):
                    lags.append(time.time() - event.data["t"])
                else:
                    ends.append(event)

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.3)  # the follower is listening
            start = anyio.current_time()
            for i in range(n):
                await anyio.sleep_until(start + i / rate)
                await writer.write({"i": i, "t": time.time()})
            await writer.done(None)
    if len(lags) != n or ends != [ResultEvent(b"null")]:
        raise SystemExit(f"the follower got {len(lags)} of {n} chunks, then {ends}")
    return percentiles(lags)


async def raw_floor(server: StandinServer, namespace: str, n: int) -> tuple[float, float]:
    """PUT a value, until a listener on it receives the event: the backend's own lag."""
    lags: list[float] = []
    base = f"{server.url}/bench-floor"
    async with httpx.AsyncClient(headers=ADMIN, timeout=10) as http:
        listen = {"Accept": "text/event-stream"}
        async with http.stream("GET", f"{base}.json?ns={namespace}", headers=listen) as sse:
            lines = sse.aiter_lines()
            for i in range(n + 1):
                sent = time.time()
                body = json.dumps({"i": i}).encode()
                await http.put(f"{base}.json?ns={namespace}&print=silent", content=body)
                async for line in lines:
                    if line.startswith("data:") and f'"i":{i}' in line:
                        break
                if i:  # the first event is the listener's initial value
                    lags.append(time.time() - sent)
                await anyio.sleep(0.005)
    return percentiles(lags)


async def main(args: argparse.Namespace) -> None:
    server = StandinServer()
    await anyio.to_thread.run_sync(server.start)
    try:
        url = server.database_url("bench")
        sid = await write_stream(url, args.chunks, 20)
        full = await replay(server, url, sid, 0)
        tail_offset = args.chunks - args.chunks // 10
        tail = await replay(server, url, sid, tail_offset)
        print(f"replay of a {args.chunks:,}-chunk stream (batches of 20), best of {REPEATS}:")
        for name, r in (("from 0", full), (f"from {tail_offset:,}", tail)):
            rate = r["chunks"] / r["seconds"]
            print(
                f"  {name:>12}: {r['chunks']:>6,.0f} chunks in {r['seconds'] * 1e3:7.1f} ms"
                f" = {rate:>9,.0f} chunks/s, {r['gets']:.0f} GET requests"
            )
        print(
            f"  tail replay is {full['seconds'] / tail['seconds']:.1f}x cheaper in time,"
            f" {full['gets'] / max(tail['gets'], 1):.1f}x in requests"
            f" (it reads {tail['chunks'] / full['chunks']:.0%} of the chunks)"
        )
        floor = await raw_floor(server, "bench", 200)
        print(f"live lag, write in one manager -> receipt in another ({args.live} chunks):")
        print(f"  baseline: PUT -> event stream  p50 {floor[0]:6.1f} ms  p99 {floor[1]:6.1f} ms")
        for flush in (0.1, 0.01):
            p50, p99 = await live_lag(url, flush, args.live, 100.0)
            print(
                f"  flush_interval={flush:<5} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
                f"  ({p50 / floor[0]:.1f}x / {p99 / floor[1]:.1f}x the baseline)"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--live", type=int, default=500)
    parsed: Any = parser.parse_args()
    anyio.run(main, parsed)
