"""Firestore backend figures, each against a baseline measured in the same run.

The baseline is Genkit's Firestore layout: the whole stream in one document, one
``arrayUnion`` update per chunk, subscribers listening to that document. Both run on
the same emulator (started here), so the ratios hold on a shared, noisy machine even
where the absolute times do not. Writes are counted at the gRPC boundary (every
document in every commit), never estimated.

    .venv/bin/python managers/firestore/bench/bench_firestore.py

Takes about a minute. Needs Java and the Firestore emulator jar (see the README).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from google.cloud.firestore_v1 import ArrayUnion, AsyncClient, Client

from stream_gateway.streams import ChunkEvent, StreamManager, StreamRecord, Terminal
from stream_gateway_firestore import FirestoreStreamManager, FirestoreStreamStorage
from stream_gateway_firestore.testing import HOST_ENV, FirestoreEmulator


class Traffic:
    """Documents written and read through one async client."""

    def __init__(self, client: AsyncClient) -> None:
        api: Any = client._firestore_api  # type: ignore[attr-defined]
        self.writes = 0
        self.reads = 0
        commit, run_query, batch_get = api.commit, api.run_query, api.batch_get_documents

        async def counted_commit(*args: Any, **kwargs: Any) -> Any:
            self.writes += len(kwargs["request"]["writes"])
            return await commit(*args, **kwargs)

        async def counted_query(*args: Any, **kwargs: Any) -> Any:
            return self._count(await run_query(*args, **kwargs), lambda r: r.document.name)

        async def counted_get(*args: Any, **kwargs: Any) -> Any:
            return self._count(await batch_get(*args, **kwargs), lambda r: r.found.name)

        api.commit, api.run_query, api.batch_get_documents = (
            counted_commit,
            counted_query,
            counted_get,
        )

    async def _count(self, responses: Any, name_of: Callable[[Any], str]) -> Any:
        async for response in responses:
            self.reads += bool(name_of(response))
            yield response


async def paced(count: int, rate: float, send: Callable[[int], Awaitable[object]]) -> float:
    """Call ``send(i)`` for ``i < count`` at ``rate`` per second; return the seconds taken."""
    start = time.perf_counter()
    for i in range(count):
        await send(i)
        await anyio.sleep(max(0.0, start + (i + 1) / rate - time.perf_counter()))
    return time.perf_counter() - start


def chunk(i: int) -> dict[str, Any]:
    return {"i": i, "text": f" token{i}", "t": time.perf_counter()}


async def genkit_stream(client: AsyncClient) -> Any:
    doc = client.collection("genkit-streams").document(uuid.uuid4().hex)
    await doc.set({"stream": [], "createdAt": time.time(), "updatedAt": time.time()})
    return doc


async def genkit_write(doc: Any, value: Any) -> None:
    entry = {"type": "chunk", "chunk": value, "uuid": uuid.uuid4().hex}
    await doc.update({"stream": ArrayUnion([entry]), "updatedAt": time.time()})


# -- writes per 1,000 chunks -----------------------------------------------------------


async def writes_per_thousand(project: str, rate: float, count: int) -> None:
    async with FirestoreStreamManager(project=project) as manager:
        ours = Traffic(manager.storage.client)
        writer = await manager.open(flow="bench")
        await paced(count, rate, lambda i: writer.write(chunk(i)))
        await writer.done("ok")
    client = AsyncClient(project=project)
    theirs = Traffic(client)
    doc = await genkit_stream(client)
    await paced(count, rate, lambda i: genkit_write(doc, chunk(i)))
    await doc.update({"stream": ArrayUnion([{"type": "done", "output": "ok"}])})
    per_k = 1000 / count
    print(
        f"  {rate:>4.0f} chunks/s: {ours.writes * per_k:7.1f} writes/1k chunks "
        f"(genkit layout {theirs.writes * per_k:7.1f}): {theirs.writes / ours.writes:5.1f}x fewer"
    )


# -- replay ------------------------------------------------------------------------------


async def replay(project: str, total: int = 10_000, per_batch: int = 20) -> None:
    storage = FirestoreStreamStorage(project=project)
    await storage.start()
    sid = f"replay-{uuid.uuid4().hex}"
    now = time.time()
    await storage.create(StreamRecord(sid, "bench", now, now, now + 3600))
    payloads = [f'{{"i":{i},"text":" token{i}"}}'.encode() for i in range(total)]
    for offset in range(0, total, per_batch):  # a 200 chunks/s stream flushed every 0.1 s
        await storage.append(sid, offset, payloads[offset : offset + per_batch])
    await storage.finish(sid, total, Terminal("done", b'"ok"'), now=now, expires_at=now + 3600)
    await storage.close()

    client = AsyncClient(project=project)
    doc = client.collection("genkit-streams").document(sid)
    await doc.set({"stream": [{"type": "chunk", "chunk": p.decode()} for p in payloads]})
    theirs = Traffic(client)
    start = time.perf_counter()
    (await doc.get()).get("stream")
    genkit_seconds = time.perf_counter() - start

    for offset in (0, total - 1000):
        async with StreamManager(FirestoreStreamStorage(project=project)) as reader:
            ours = Traffic(reader.storage.client)  # type: ignore[attr-defined]
            start = time.perf_counter()
            got = sum([isinstance(e, ChunkEvent) async for e in reader.subscribe(sid, offset)])
            seconds = time.perf_counter() - start
        assert got == total - offset
        print(
            f"  from offset {offset:>5}: {got:>5} chunks in {seconds * 1000:5.0f} ms "
            f"({got / seconds:6.0f} chunks/s), {ours.reads:3d} documents read; genkit layout "
            f"downloads all {total} chunks ({theirs.reads} document) in "
            f"{genkit_seconds * 1000:.0f} ms whatever the offset: {genkit_seconds / seconds:5.1f}x"
        )


# -- live lag -----------------------------------------------------------------------------


async def live_lag(project: str, count: int = 500, rate: float = 100) -> None:
    lags: list[float] = []
    async with (
        FirestoreStreamManager(project=project) as a,
        FirestoreStreamManager(project=project) as b,
    ):
        writer = await a.open()

        async def follow() -> None:
            async for event in b.subscribe(writer.stream_id):
                if isinstance(event, ChunkEvent):
                    lags.append(time.perf_counter() - event.data["t"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(1.0)  # the listener is attached
            await paced(count, rate, lambda i: writer.write(chunk(i)))
            await writer.done("ok")

    genkit_lags = await genkit_live_lag(project, count, rate)
    ours, theirs = percentiles(lags), percentiles(genkit_lags)
    print(
        f"  ours   p50 {ours[0] * 1000:6.1f} ms  p99 {ours[1] * 1000:6.1f} ms  "
        f"(includes the 0.1 s flush window)\n"
        f"  genkit p50 {theirs[0] * 1000:6.1f} ms  p99 {theirs[1] * 1000:6.1f} ms  "
        f"ratio ours/genkit p50 {ours[0] / theirs[0]:.2f}, p99 {ours[1] / theirs[1]:.2f}"
    )


async def genkit_live_lag(project: str, count: int, rate: float) -> list[float]:
    client = AsyncClient(project=project)
    doc = await genkit_stream(client)
    lags: list[float] = []
    seen = [0]
    lock = threading.Lock()

    def on_snapshot(snaps: list[Any], _changes: Any, _read_time: Any) -> None:
        arrived = time.perf_counter()
        with lock:
            entries = snaps[0].get("stream") if snaps and snaps[0].exists else []
            for entry in entries[seen[0] :]:
                lags.append(arrived - entry["chunk"]["t"])
            seen[0] = len(entries)

    listener = Client(project=project).collection("genkit-streams").document(doc.id)
    watch = await anyio.to_thread.run_sync(listener.on_snapshot, on_snapshot)
    await anyio.sleep(1.0)
    await paced(count, rate, lambda i: genkit_write(doc, chunk(i)))
    await anyio.sleep(1.0)
    await anyio.to_thread.run_sync(watch.unsubscribe)
    return lags


def percentiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100)
    return cuts[49], cuts[98]


async def main() -> None:
    with FirestoreEmulator() as emulator:
        os.environ[HOST_ENV] = emulator.address
        began = time.perf_counter()
        print("Firestore document writes per 1,000 chunks (record + batches, all counted):")
        await writes_per_thousand(emulator.project, 50, 500)
        await writes_per_thousand(emulator.project, 500, 2000)
        print("Live lag, write in one manager to receipt in another (100 chunks/s):")
        await live_lag(emulator.project)
        print("Replay of a 10,000-chunk stream (500 batch documents) from another process:")
        await replay(emulator.project)
        print(f"({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    anyio.run(main)
