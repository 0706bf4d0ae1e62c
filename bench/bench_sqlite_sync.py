"""What ``synchronous="FULL"`` (the default) costs against ``"NORMAL"`` on SQLite streams.

FULL syncs the WAL to disk on every commit; NORMAL only at checkpoints (and so may
lose every commit since the last one on an OS crash). Three workloads, each run in
both modes on a fresh file in ``--dir`` (default: a temporary directory under the
current one, on the disk the app would use: a tmpfs would hide the cost of fsync),
alternating, best of ``--rounds``:

- commits: one stream, every chunk flushed on its own (``flush_interval=0``): the
  worst case, one fsync per chunk. Figure: chunks/s.
- bulk: one stream written as fast as possible with the default flush policy (a
  commit per batch of up to ``max_batch`` chunks). Figure: chunks/s.
- llm: ``--streams`` streams at once, each sending 100 chunks at ~100 chunks/s (a
  fast LLM) with the default flush policy, then its result. Figure: seconds until the
  last result is committed; 1.0 s would be no overhead at all.

Each figure is printed with the FULL/NORMAL ratio of the same run.

    .venv/bin/python bench/bench_sqlite_sync.py [--rounds 3] [--streams 200]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from stream_gateway.streams import SqliteStreamManager

MODES = ("NORMAL", "FULL")


async def commits(path: Path, mode: str, n: int = 2_000) -> float:
    async with SqliteStreamManager(path, synchronous=mode, flush_interval=0) as manager:
        writer = await manager.open(flow="bench")
        start = time.perf_counter()
        for i in range(n):
            await writer.write(i)
            await writer.flush()
        await writer.done(n)
        return n / (time.perf_counter() - start)


async def bulk(path: Path, mode: str, n: int = 100_000) -> float:
    async with SqliteStreamManager(path, synchronous=mode) as manager:
        start = time.perf_counter()
        writer = await manager.open(flow="bench")
        for i in range(n):
            await writer.write({"token": f"tok{i % 997}", "i": i})
        await writer.done(n)
        return n / (time.perf_counter() - start)


async def llm(path: Path, mode: str, streams: int) -> float:
    async with SqliteStreamManager(path, synchronous=mode) as manager:

        async def one() -> None:
            writer = await manager.open(flow="bench")
            for i in range(100):
                await writer.write(f"tok{i}")
                await anyio.sleep(0.01)
            await writer.done("ok")

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(streams):
                tg.start_soon(one)
        return time.perf_counter() - start


async def main(rounds: int, streams: int, directory: Path) -> None:
    workloads: dict[str, tuple[Callable[[Path, str], Awaitable[float]], bool]] = {
        "commits": (commits, True),
        "bulk": (bulk, True),
        "llm": (lambda path, mode: llm(path, mode, streams), False),
    }
    best: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        for r in range(rounds):
            for name, (run, higher_is_better) in workloads.items():
                for mode in MODES if r % 2 == 0 else MODES[::-1]:
                    figure = await run(Path(tmp) / f"{name}-{mode}-{r}.db", mode)
                    old = best.get((name, mode))
                    pick = max if higher_is_better else min
                    best[name, mode] = figure if old is None else pick(old, figure)

    print(
        f"SQLite {sqlite3.sqlite_version}, journal_mode=WAL, files in {directory}; best of {rounds}"
    )
    units = {"commits": "chunks/s", "bulk": "chunks/s", "llm": "s"}
    labels = {
        "commits": "commit per chunk",
        "bulk": "bulk, default flush",
        "llm": f"{streams} streams x 100 chunks at 100/s",
    }
    for name in workloads:
        normal, full = best[name, "NORMAL"], best[name, "FULL"]
        print(
            f"{labels[name]:>34}: NORMAL {normal:>10,.2f} {units[name]:<8} "
            f"FULL {full:>10,.2f} {units[name]:<8} FULL/NORMAL {full / normal:.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=Path("."))
    args = parser.parse_args()
    anyio.run(main, args.rounds, args.streams, args.dir.resolve())
