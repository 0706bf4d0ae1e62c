"""A worker process for the take-over benchmark: an endless streaming step."""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio

from stream_gateway.durable import DurableContext, DurableEngine, SqliteDurableStore, durable_flow
from stream_gateway.streams import SqliteStreamManager


@durable_flow(chunk=int)
async def endless(_: Any, ctx: DurableContext) -> None:
    async def step() -> None:
        i = 0
        while True:
            await ctx.send_chunk(i)
            i += 1
            await anyio.sleep(0.005)

    await ctx.run("stream", step)


def engine_on(directory: str) -> DurableEngine:
    return DurableEngine(
        [endless],
        store=SqliteDurableStore(os.path.join(directory, "durable.sqlite3")),
        streams=SqliteStreamManager(os.path.join(directory, "streams.sqlite3")),
        poll_interval=0.01,
    )


async def _work(directory: str) -> None:
    async with engine_on(directory) as engine:
        async with engine.worker(worker_id="w", lease=5.0, poll_interval=0.01, grace=0.1):
            print("ready", flush=True)
            await anyio.sleep_forever()


if __name__ == "__main__":
    print("warm", flush=True)  # imported: a standby worker
    sys.stdin.readline()
    anyio.run(_work, sys.argv[1])
