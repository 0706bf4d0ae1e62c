"""A worker process for the take-over benchmark: an endless streaming step.

    python -m bench._durable_stream_worker DURABLE_STORE_URL STREAM_STORE_URL

Both stores are named by URL (`stream_gateway.stores`): a SQLite path, a
``postgresql://`` DSN, a ``firestore://`` project.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

from stream_gateway import StreamManager
from stream_gateway.durable import DurableContext, DurableEngine, durable_flow
from stream_gateway.stores import open_durable_store, open_stream_storage


@durable_flow(chunk=int)
async def endless(_: Any, ctx: DurableContext) -> None:
    async def step() -> None:
        i = 0
        while True:
            await ctx.send_chunk(i)
            i += 1
            await anyio.sleep(0.005)

    await ctx.run("stream", step)


def engine_on(durable_url: str, stream_url: str) -> DurableEngine:
    return DurableEngine(
        [endless],
        store=open_durable_store(durable_url),
        streams=StreamManager(open_stream_storage(stream_url)),
        poll_interval=0.01,
    )


async def _work(durable_url: str, stream_url: str) -> None:
    async with engine_on(durable_url, stream_url) as engine:
        async with engine.worker(worker_id="w", lease=5.0, poll_interval=0.01, grace=0.1):
            print("ready", flush=True)
            await anyio.sleep_forever()


if __name__ == "__main__":
    print("warm", flush=True)  # imported: a standby worker
    sys.stdin.readline()
    anyio.run(_work, sys.argv[1], sys.argv[2])
