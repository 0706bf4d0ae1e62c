"""Chunks/s persisted through `SqliteStreamManager`, against plain `sqlite3` inserts.

Prints, best of ``--rounds`` (alternating, each on a fresh file):

- write: one writer writes ``--chunks`` small JSON chunks, then ``done``, with the
  default flush policy; the clock runs from ``open`` until ``done`` has committed.
  Baseline: the same chunks JSON-encoded and inserted with plain `sqlite3`, one row
  per chunk, in one transaction, with the same journal and synchronous settings.
- replay: a fresh manager on the finished file follows the stream from offset 0 with
  ``subscribe`` to its result. Baseline: a plain ``SELECT`` of the baseline rows.

    .venv/bin/python bench/bench_sqlite_writes.py [--chunks 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from stream_gateway.streams import ChunkEvent, SqliteStreamManager

SYNCHRONOUS = "NORMAL"


def make_chunks(n: int) -> list[dict[str, Any]]:
    return [{"token": f"tok{i % 997}", "i": i} for i in range(n)]


def baseline_write(path: Path, chunks: list[dict[str, Any]]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
    conn.execute(
        "CREATE TABLE chunks (stream_id TEXT, offset INTEGER, data BLOB,"
        " PRIMARY KEY (stream_id, offset))"
    )
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    start = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO chunks VALUES ('s', ?, ?)",
        ((i, encode(c).encode()) for i, c in enumerate(chunks)),
    )
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def baseline_replay(path: Path, n: int) -> float:
    conn = sqlite3.connect(path)
    start = time.perf_counter()
    count = sum(1 for _ in conn.execute("SELECT data FROM chunks WHERE stream_id = 's'"))
    elapsed = time.perf_counter() - start
    conn.close()
    assert count == n
    return elapsed


async def ours_write(path: Path, chunks: list[dict[str, Any]]) -> tuple[float, str, str]:
    """Seconds, the stream's id, and the flush policy in force."""
    async with SqliteStreamManager(path, synchronous=SYNCHRONOUS) as manager:
        start = time.perf_counter()
        writer = await manager.open(flow="bench")
        for chunk in chunks:
            await writer.write(chunk)
        await writer.done(len(chunks))
        policy = f"flush_interval={manager.flush_interval}s, max_batch={manager.max_batch}"
        return time.perf_counter() - start, writer.stream_id, policy


async def ours_replay(path: Path, stream_id: str, n: int) -> float:
    async with SqliteStreamManager(path, synchronous=SYNCHRONOUS) as manager:
        start = time.perf_counter()
        count = 0
        async for event in manager.subscribe(stream_id):
            count += isinstance(event, ChunkEvent)
        elapsed = time.perf_counter() - start
    assert count == n, count
    return elapsed


async def main(n: int, rounds: int) -> None:
    chunks = make_chunks(n)
    best: dict[str, float] = {}
    policy = ""
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            base_path, ours_path = Path(tmp) / f"base-{r}.db", Path(tmp) / f"ours-{r}.db"
            timings = {"baseline write": baseline_write(base_path, chunks)}
            timings["ours write"], stream_id, policy = await ours_write(ours_path, chunks)
            timings["baseline replay"] = baseline_replay(base_path, n)
            timings["ours replay"] = await ours_replay(ours_path, stream_id, n)
            for name, seconds in timings.items():
                best[name] = min(best.get(name, seconds), seconds)

    print(
        f"SQLite {sqlite3.sqlite_version}, journal_mode=WAL, synchronous={SYNCHRONOUS}; "
        f"{n:,} chunks like {json.dumps(chunks[1], separators=(',', ':'))}; "
        f"best of {rounds}"
    )
    print(f"manager: SqliteStreamManager, default flush policy ({policy}), a row per batch")
    print("baseline: plain sqlite3, one row per chunk, one transaction (JSON encoding timed)")
    for kind in ("write", "replay"):
        ours, base = n / best[f"ours {kind}"], n / best[f"baseline {kind}"]
        print(
            f"{kind:>6}: ours {ours:>12,.0f} chunks/s   baseline {base:>12,.0f} chunks/s   "
            f"ours/baseline {ours / base:.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    anyio.run(main, args.chunks, args.rounds)
