"""The streaming durable flow of the crash test, and a worker process that runs it
(SQLite durable store and SQLite streams in one directory)."""

from __future__ import annotations

import os
import sys
import uuid

import anyio
from pydantic import BaseModel

from stream_gateway.durable import DurableContext, DurableEngine, SqliteDurableStore, durable_flow
from stream_gateway.streams import SqliteStreamManager


class Job(BaseModel):
    steps: int
    chunks: int
    pause: float  # seconds between two chunks of a step


@durable_flow(input=Job, output=list, chunk=dict)
async def streamed(job: Job, ctx: DurableContext) -> list[str]:
    """Step ``k`` streams ``chunks`` chunks tagged with its attempt's token and returns
    the token; after each step the flow's own code streams ``{"done": k}``."""
    tokens: list[str] = []
    for k in range(job.steps):

        async def step(k: int = k) -> str:
            token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
            for i in range(job.chunks):
                await ctx.send_chunk({"s": k, "i": i, "t": token})
                await anyio.sleep(job.pause)
            return token

        tokens.append(await ctx.run(f"s{k}", step))
        await ctx.send_chunk({"done": k})
    return tokens


def engine_on(directory: str) -> DurableEngine:
    return DurableEngine(
        [streamed],
        store=SqliteDurableStore(os.path.join(directory, "durable.sqlite3")),
        streams=SqliteStreamManager(os.path.join(directory, "streams.sqlite3"), flush_interval=0.0),
        poll_interval=0.02,
    )


async def _work(directory: str) -> None:
    async with engine_on(directory) as engine:
        worker = engine.worker(worker_id="w", lease=2.0, poll_interval=0.02, grace=0.5)
        async with worker:
            print("ready", flush=True)
            await anyio.sleep_forever()


if __name__ == "__main__":
    sys.stdin.readline()  # "go": the interpreter is warm, start now
    anyio.run(_work, sys.argv[1])
