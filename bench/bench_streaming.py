"""Streaming benchmarks: burst, replay and fan-out, over loopback, servers in subprocesses.

Every figure is printed with a ratio against a baseline measured in the same run:

- burst: 100,000 small chunks through the Genkit endpoint (in-memory manager), against
  a bare Starlette StreamingResponse yielding the same pre-built frames one by one.
- replay: reconnect to a finished 100,000-chunk stream and read it all (memory and
  SQLite), against the same burst baseline.
- fan-out: one stream at 50 chunks/s read by 1,000 concurrent SSE subscribers: lag
  from write to receipt (p50/p99), and server memory per subscriber.

Run: ``.venv/bin/python -m bench.bench_streaming [--chunks N] [--subscribers N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bench._http import post_stream, read_rss, server, sse_get

REPEATS = 3


def chunks_per_second(n: int, seconds: float) -> float:
    return n / seconds


async def burst(port: int, n: int) -> tuple[float, str | None]:
    """Best-of-three chunks/s for one burst; returns it and the last stream id."""
    best, stream_id = 0.0, None
    for _ in range(REPEATS):
        headers, body, seconds = await post_stream(port, "/flows/burst", n)
        assert body.count(b'{"message":') == n, "short burst"
        best = max(best, chunks_per_second(n, seconds))
        for line in headers.decode().split("\r\n"):
            if line.lower().startswith("x-genkit-stream-id:"):
                stream_id = line.split(":", 1)[1].strip()
    return best, stream_id


async def replay(port: int, stream_id: str, n: int) -> float:
    best = 0.0
    for _ in range(REPEATS):
        _, body, seconds = await post_stream(
            port, "/flows/burst", None, {"x-genkit-stream-id": stream_id}
        )
        assert body.count(b'{"message":') == n, "short replay"
        best = max(best, chunks_per_second(n, seconds))
    return best


async def fan_out(port: int, pid: int, subscribers: int, seconds: float) -> dict[str, float]:
    rate = 50.0
    total = int(rate * seconds)
    headers, _, _ = await post_stream(
        port, "/flows/ticker", {"n": total, "rate": rate}, until=b"\n\n"
    )
    stream_id = next(
        line.split(":", 1)[1].strip()
        for line in headers.decode().split("\r\n")
        if line.lower().startswith("x-genkit-stream-id:")
    )
    await asyncio.sleep(0.5)
    rss_before = read_rss(pid)
    lags: list[float] = []
    settle = time.time() + 3.0  # ignore the catch-up replay of the first seconds

    async def subscriber() -> None:
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
                            lags.append(now - sent)
                    elif b"event: result" in block:
                        return
        finally:
            writer.close()

    tasks = [asyncio.create_task(subscriber()) for _ in range(subscribers)]
    await asyncio.sleep(seconds / 2)
    rss_during = read_rss(pid)
    await asyncio.gather(*tasks)
    lags.sort()
    return {
        "p50_ms": statistics.median(lags) * 1000,
        "p99_ms": lags[int(len(lags) * 0.99)] * 1000,
        "samples": float(len(lags)),
        "bytes_per_subscriber": (rss_during - rss_before) / subscribers,
        "interval_ms": 1000 / rate,
    }


STACKS = ("asyncio+h11", "uvloop+httptools")


async def run_stack(stack: str, n: int, subscribers: int, fan_seconds: float) -> None:
    print(f"\n## uvicorn on {stack}")
    with server("baseline", stack) as (port, _):
        baseline, _ = await burst(port, n)
    print(f"baseline  StreamingResponse, one frame per write: {baseline:12,.0f} chunks/s")

    with server("gateway-memory", stack) as (port, pid):
        ours, stream_id = await burst(port, n)
        assert stream_id is not None
        memory_replay = await replay(port, stream_id, n)
        fan = await fan_out(port, pid, subscribers, fan_seconds)
    print(
        f"burst     Gateway + InMemoryStreamManager:        {ours:12,.0f} chunks/s"
        f"  = {ours / baseline:5.2f}x baseline (target >= 1.5x)"
    )
    print(
        f"replay    memory, finished stream:                {memory_replay:12,.0f} chunks/s"
        f"  = {memory_replay / baseline:5.2f}x baseline (target >= 3x)"
    )

    with server("gateway-sqlite", stack) as (port, _):
        _, stream_id = await burst(port, n)
        assert stream_id is not None
        sqlite_replay = await replay(port, stream_id, n)
    print(
        f"replay    SQLite, finished stream:                {sqlite_replay:12,.0f} chunks/s"
        f"  = {sqlite_replay / baseline:5.2f}x baseline (target >= 3x)"
    )

    print(
        f"fan-out   {subscribers} SSE subscribers, one stream at 50 chunks/s "
        f"({fan['samples']:,.0f} receipts):"
    )
    print(
        f"          lag p50 {fan['p50_ms']:.1f} ms ({fan['p50_ms'] / fan['interval_ms']:.3f}"
        f" of the 20 ms chunk interval), p99 {fan['p99_ms']:.1f} ms"
        f" ({fan['p99_ms'] / fan['interval_ms']:.3f} of the interval)"
    )
    print(f"          server memory per subscriber: {fan['bytes_per_subscriber'] / 1024:.1f} KiB")


async def main(n: int, subscribers: int, fan_seconds: float, stacks: list[str]) -> None:
    print(f"# streaming benchmarks: {n:,} chunks, {subscribers:,} subscribers, loopback")
    for stack in stacks:
        await run_stack(stack, n, subscribers, fan_seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--fan-seconds", type=float, default=12.0)
    parser.add_argument("--stack", action="append", choices=STACKS, help="default: both")
    args = parser.parse_args()
    asyncio.run(main(args.chunks, args.subscribers, args.fan_seconds, args.stack or list(STACKS)))
