"""Durable Streams benchmarks: appends from one producer, SSE fan-out latency.

Every figure is printed with a ratio against a baseline measured in the same run,
against a server in a subprocess (in-memory manager, loopback):

- append: one idempotent producer POSTing one JSON message per request, one request
  at a time, against the same client POSTing to a bare Starlette endpoint that
  reads the body and answers 204 (the HTTP floor); and batched, 100 messages per POST.
- fan-out: a flow writes 50 chunks/s (each its send time); 100 subscribers follow it
  over Durable Streams SSE (``/ds/<id>?live=sse``), against 100 on our own SSE
  endpoint (``/flows/ticker/streams/<id>``): lag from write to receipt, p50/p99.

Run: ``.venv/bin/python -m bench.bench_protocols [--appends N] [--subscribers N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

REPEATS = 3


def serve() -> None:
    """The server side: the ticker flow's gateway, Durable Streams, and a bare POST."""
    import anyio
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Mount, Route

    from stream_gateway import FlowContext, Gateway, InMemoryStreamManager, flow
    from stream_gateway.protocols import DurableStreamsApp

    @flow(input=dict)
    async def ticker(req: dict[str, float], ctx: FlowContext[float]) -> int:
        """``n`` chunks at ``rate`` per second; each chunk is its send time."""
        n, pause = int(req["n"]), 1.0 / req["rate"]
        start = time.monotonic()
        for i in range(n):
            await anyio.sleep(max(0.0, start + i * pause - time.monotonic()))
            await ctx.send_chunk(time.time())
        return n

    async def bare(request: Request) -> Response:
        await request.body()
        return Response(status_code=204)

    manager = InMemoryStreamManager(max_stream_chunks=10_000_000)
    gateway = Gateway([ticker], stream_manager=manager)
    durable_streams = DurableStreamsApp(manager)

    @asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        async with gateway.lifespan(), durable_streams.lifespan():
            yield

    app = Starlette(
        routes=[
            Route("/bare", bare, methods=["POST"]),
            Mount("/flows", app=gateway),
            Mount("/ds", app=durable_streams),
        ],
        lifespan=lifespan,
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    sock = config.bind_socket()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
                await anyio.sleep(0.01)
            print(f"listening {sock.getsockname()[1]}", flush=True)

    anyio.run(main)


@contextmanager
def running_server() -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_protocols", "--serve"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening"):
            raise RuntimeError(f"server failed to start: {line!r}")
        yield int(line.split()[1])
    finally:
        proc.terminate()
        proc.wait(10)


class Connection:
    """One keep-alive HTTP/1.1 connection on raw sockets (the client is never the
    bottleneck); requests carry a Content-Length, responses are read by theirs."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port, limit=2**22))

    async def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> int:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {len(body)}\r\n"
            f"{extra}\r\n".encode()
            + body
        )
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode().lower()
        status = int(head.split(" ", 2)[1])
        for line in head.split("\r\n"):
            if line.startswith("content-length:"):
                await self.reader.readexactly(int(line.split(":")[1]))
        return status

    def close(self) -> None:
        self.writer.close()


async def appends(port: int, n: int, batch: int) -> float:
    """Best-of-three messages/s for one producer appending ``n`` messages."""
    best = 0.0
    for run in range(REPEATS):
        conn = await Connection.open(port)
        path = f"/ds/bench/append-{batch}-{run}-{time.time_ns()}"
        json_type = {"content-type": "application/json"}
        assert await conn.request("PUT", path, b"", json_type) == 201
        message = json.dumps({"token": "hello", "i": 0}).encode()
        body = message if batch == 1 else b"[" + b",".join([message] * batch) + b"]"
        start = time.perf_counter()
        for seq in range(n // batch):
            headers = {**json_type, "producer-id": "p", "producer-epoch": "0"}
            status = await conn.request("POST", path, body, {**headers, "producer-seq": str(seq)})
            assert status == 200, status
        best = max(best, n / (time.perf_counter() - start))
        conn.close()
    return best


async def bare_posts(port: int, n: int) -> float:
    best = 0.0
    body = json.dumps({"token": "hello", "i": 0}).encode()
    for _ in range(REPEATS):
        conn = await Connection.open(port)
        start = time.perf_counter()
        for _ in range(n):
            assert await conn.request("POST", "/bare", body, {}) == 204
        best = max(best, n / (time.perf_counter() - start))
        conn.close()
    return best


async def start_ticker(port: int, seconds: float, rate: float) -> str:
    conn = await Connection.open(port)
    body = json.dumps({"data": {"n": int(seconds * rate), "rate": rate}}).encode()
    conn.writer.write(
        b"POST /flows/ticker HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n"
        + f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    head = (await conn.reader.readuntil(b"\r\n\r\n")).decode()
    conn.close()  # the flow runs on, detached
    return next(
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")
        if line.lower().startswith("x-genkit-stream-id:")
    )


async def fan_out(port: int, path: str, subscribers: int, seconds: float) -> list[float]:
    """Lags (s) from write to receipt, seen by ``subscribers`` SSE readers of ``path``."""
    lags: list[float] = []
    settle = time.time() + 2.0  # ignore the catch-up of the first seconds

    async def subscriber() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**22)
        writer.write(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")
        try:
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    return
                data = await reader.readexactly(size + 2)
                now = time.time()
                for line in data.split(b"\n"):
                    if line.startswith(b"data:"):
                        lags.extend(_send_times(line[5:], now, settle))
        finally:
            writer.close()

    with_timeout = [asyncio.wait_for(subscriber(), seconds + 30) for _ in range(subscribers)]
    await asyncio.gather(*with_timeout)
    return lags


def _send_times(payload: bytes, now: float, settle: float) -> list[float]:
    value = json.loads(payload)
    if isinstance(value, float):  # our SSE: one chunk per event
        sent = [value]
    elif isinstance(value, list):  # Durable Streams: [{"message": t}, ...]
        sent = [m["message"] for m in value if "message" in m]
    else:
        return []
    return [now - t for t in sent if t >= settle]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


async def main(n_appends: int, subscribers: int, seconds: float) -> None:
    with running_server() as port:
        floor = await bare_posts(port, n_appends)
        single = await appends(port, n_appends, 1)
        batched = await appends(port, n_appends, 100)
        print(f"append, one producer ({n_appends} messages, one request at a time):")
        print(f"  bare POST baseline      {floor:10.0f} requests/s")
        print(f"  1 message per POST      {single:10.0f} messages/s  ({single / floor:.2f}x)")
        print(f"  100 messages per POST   {batched:10.0f} messages/s  ({batched / floor:.2f}x)")

        results = {}
        for name, template in [
            ("our SSE", "/flows/ticker/streams/{id}"),
            ("Durable Streams SSE", "/ds/{id}?offset=-1&live=sse"),
        ]:
            stream_id = await start_ticker(port, seconds, 50.0)
            lags = await fan_out(port, template.format(id=stream_id), subscribers, seconds)
            results[name] = (percentile(lags, 50), percentile(lags, 99))
        base50, base99 = results["our SSE"]
        print(f"fan-out: {subscribers} SSE subscribers, 50 chunks/s for {seconds:.0f} s:")
        for name, (p50, p99) in results.items():
            print(
                f"  {name:20} lag p50 {p50 * 1000:7.2f} ms ({p50 / base50:.2f}x)"
                f"  p99 {p99 * 1000:7.2f} ms ({p99 / base99:.2f}x)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--appends", type=int, default=3000)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    if args.serve:
        serve()
    else:
        asyncio.run(main(args.appends, args.subscribers, args.seconds))
