"""Compaction of a 5,000-token answer on SQLite: what is stored, and replay time.

Two answers of ``--tokens`` text deltas each, written through `SqliteStreamManager`
as a model streams them (a flush every ``--per-flush`` tokens, as a ~100 tokens/s
model meets the 20 ms flush window), in two chunk shapes:

- ``text``: each chunk a JSON string (``"tok42 "``), as the chat sample sends;
- ``ui-parts``: AI-SDK UI-message parts (``{"type":"text-delta","id":"t","delta":...}``),
  as the agent adapters emit, between a ``text-start`` and a ``text-end``.

One copy is compacted (`StreamManager.compact`), the other kept as written: the
baseline measured in the same run. Prints, per shape, stored chunks, SQLite rows and
bytes (the ``batches`` table's ``data``) after against before, and the time a fresh
manager takes to replay the stream from offset 0 to its result (best of
``--rounds``, alternating), compacted against as written.

    .venv/bin/python bench/bench_compaction.py [--tokens 5000] [--per-flush 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from stream_gateway.streams import ChunkEvent, SqliteStreamManager

SHAPES: dict[str, Callable[[int], list[Any]]] = {
    "text": lambda n: [f"tok{i % 997} " for i in range(n)],
    "ui-parts": lambda n: [
        {"type": "text-start", "id": "t"},
        *({"type": "text-delta", "id": "t", "delta": f"tok{i % 997} "} for i in range(n)),
        {"type": "text-end", "id": "t"},
    ],
}


async def write(manager: SqliteStreamManager, chunks: list[Any], per_flush: int) -> str:
    writer = await manager.open(flow="answer")
    for i, chunk in enumerate(chunks, 1):
        await writer.write(chunk)
        if i % per_flush == 0:
            await writer.flush()
    await writer.done({"finish": "stop"})
    return writer.stream_id


def stored(path: Path, stream_id: str) -> tuple[int, int]:
    """(rows, bytes) of the stream's chunk batches."""
    conn = sqlite3.connect(path)
    try:
        rows, size = conn.execute(
            "SELECT count(*), sum(length(data)) FROM batches WHERE stream_id = ?", (stream_id,)
        ).fetchone()
    finally:
        conn.close()
    return int(rows), int(size)


async def replay(path: Path, stream_id: str) -> tuple[float, int, str]:
    """Seconds for a fresh manager to replay the stream; events seen; text read."""
    async with SqliteStreamManager(path) as manager:
        start = time.perf_counter()
        events = 0
        text: list[str] = []
        async for event in manager.subscribe(stream_id):
            events += 1
            if isinstance(event, ChunkEvent):
                data = event.data
                text.append(data if isinstance(data, str) else data.get("delta", ""))
        return time.perf_counter() - start, events, "".join(text)


async def shape(name: str, tokens: int, per_flush: int, rounds: int, path: Path) -> None:
    chunks = SHAPES[name](tokens)
    async with SqliteStreamManager(path, synchronous="NORMAL") as manager:
        kept = await write(manager, chunks, per_flush)
        compacted = await write(manager, chunks, per_flush)
        rows_before, bytes_before = stored(path, compacted)
        report = await manager.compact(compacted)
        assert report.compacted, report.reason
    rows_after, bytes_after = stored(path, compacted)
    best = {kept: float("inf"), compacted: float("inf")}
    texts = {}
    for _ in range(rounds):
        for sid in (kept, compacted):
            elapsed, _, text = await replay(path, sid)
            best[sid] = min(best[sid], elapsed)
            texts[sid] = text
    assert texts[kept] == texts[compacted], "replays differ"
    print(f"-- {name}: {len(chunks)} chunks, one flush every {per_flush} tokens")
    print(
        f"   stored chunks  {report.chunks_before:>8} -> {report.entries_after:<8}"
        f" ratio {report.entries_after / report.chunks_before:.5f}"  # type: ignore[operator]
    )
    print(
        f"   SQLite rows    {rows_before:>8} -> {rows_after:<8}"
        f" ratio {rows_after / rows_before:.5f}"
    )
    print(
        f"   stored bytes   {bytes_before:>8} -> {bytes_after:<8}"
        f" ratio {bytes_after / bytes_before:.3f}"
    )
    print(
        f"   replay from 0  compacted / as written = {best[compacted] / best[kept]:.3f}"
        f" (as written {best[kept] * 1000:.1f} ms, best of {rounds})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=5000)
    parser.add_argument("--per-flush", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in SHAPES:
            await shape(name, args.tokens, args.per_flush, args.rounds, Path(tmp) / f"{name}.db")


if __name__ == "__main__":
    anyio.run(main)
