"""Servers the streaming benchmarks run in a subprocess (``python -m bench._apps KIND``).

KIND: ``gateway-memory`` / ``gateway-sqlite`` (our Gateway with the ``burst`` and
``ticker`` flows) or ``baseline`` (a bare Starlette StreamingResponse yielding the same
pre-built Genkit frames one by one). ``BENCH_STACK`` picks uvicorn's event loop and
HTTP parser: ``asyncio+h11`` (plain ``pip install uvicorn``) or ``uvloop+httptools``
(``uvicorn[standard]``). Prints ``listening PORT`` when ready.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Mount, Route

from stream_gateway import FlowContext, Gateway, InMemoryStreamManager, StreamManager, flow
from stream_gateway.streams import SqliteStreamManager


@flow(input=int)
async def burst(n: int, ctx: FlowContext[int]) -> int:
    """``n`` small chunks as fast as the flow can send them."""
    for i in range(n):
        await ctx.send_chunk(i)
    return n


@flow(input=dict)
async def ticker(req: dict[str, float], ctx: FlowContext[float]) -> int:
    """``req["n"]`` chunks at ``req["rate"]`` per second; each chunk is its send time."""
    n, pause = int(req["n"]), 1.0 / req["rate"]
    start = time.monotonic()
    for i in range(n):
        await anyio.sleep(max(0.0, start + i * pause - time.monotonic()))
        await ctx.send_chunk(time.time())
    return n


def baseline_app() -> Starlette:
    async def endpoint(request: Request) -> StreamingResponse:
        n = int((await request.json())["data"])
        frames = [b'data: {"message":%d}\n\n' % i for i in range(n)]
        frames.append(b'data: {"result":%d}\n\n' % n)

        async def each() -> AsyncIterator[bytes]:
            for frame in frames:
                yield frame

        return StreamingResponse(each(), media_type="text/plain")

    return Starlette(routes=[Route("/flows/burst", endpoint, methods=["POST"])])


def gateway_app(manager: StreamManager) -> Starlette:
    gateway = Gateway([burst, ticker], stream_manager=manager, keep_alive_interval=30)
    return Starlette(routes=[Mount("/flows", app=gateway)], lifespan=gateway.lifespan)


def main() -> None:
    kind = sys.argv[1]
    if kind == "baseline":
        app = baseline_app()
    elif kind == "gateway-memory":
        app = gateway_app(InMemoryStreamManager(max_stream_chunks=10_000_000))
    elif kind == "gateway-sqlite":
        db = Path(tempfile.mkdtemp()) / "bench.db"
        app = gateway_app(SqliteStreamManager(db, max_stream_chunks=10_000_000))
    else:
        raise SystemExit(f"unknown server kind {kind}")
    loop, http = os.environ.get("BENCH_STACK", "asyncio+h11").split("+")
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", loop=loop, http=http
    )
    server = uvicorn.Server(config)
    sock = config.bind_socket()

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
                await anyio.sleep(0.01)
            print(f"listening {sock.getsockname()[1]}", flush=True)

    anyio.run(serve, backend_options={"use_uvloop": loop == "uvloop"})


if __name__ == "__main__":
    main()
