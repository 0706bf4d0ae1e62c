"""Durable flows against DBOS, side by side, each on its own SQLite file.

Prints, per system: steps/s inside one flow of 1,000 trivial steps (sequential by
nature: each step is committed before the next runs), and one-step flows/s (300
flows started concurrently, from tasks for ours and from 32 threads for DBOS, whose
API is synchronous, then waited for), with the SQLite settings each one
ran with, then the ratios ours / DBOS. Each measurement runs in a fresh subprocess
(DBOS is a process-wide singleton), alternating systems, best of ``--rounds``.

    .venv/bin/python bench/bench_durable.py [--rounds 3] [--steps 1000] [--flows 300]

Then, ours alone (SQLite, same settings), the shapes the replay core is built for:
a 1,000-turn ``ctx.loop`` whose every turn parks and wakes (flow-body executions
per turn and time per turn, first 100 turns against the last 100: flat means replay
costs the same at turn 1,000 as at turn 1), and a ``ctx.join`` of 100 one-step
branches against the same 100 steps run one after another.

Needs ``pip install dbos`` (not a test dependency). Both systems commit every step
with an fsync: ours in WAL mode with ``synchronous=FULL``; DBOS with SQLite's
defaults (rollback journal ``DELETE``, ``synchronous=FULL``), which it does not change;
``dbos-wal`` is DBOS again on a file switched to WAL beforehand (still ``FULL``), to
show how much of the difference is the journal mode alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

SYSTEMS = ("ours", "dbos", "dbos-wal")
TURNS = 1000
BRANCHES = 100
STARTERS = 32  # DBOS's API is synchronous: start flows from this many threads at once


def _pragmas(conn: Any) -> dict[str, Any]:
    return {
        "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
        "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[
            conn.execute("PRAGMA synchronous").fetchone()[0]
        ],
    }


def run_ours(db: Path, steps: int, flows: int) -> dict[str, Any]:
    import anyio

    from stream_gateway.durable import DurableContext, DurableEngine, SqliteDurableStore
    from stream_gateway.durable import durable_flow as define

    def const(i: int) -> Callable[[], int]:
        return lambda: i

    @define(input=int, output=int)
    async def many(n: int, ctx: DurableContext) -> int:
        total = 0
        for i in range(n):
            value: int = await ctx.run("step", const(i))
            total += value
        return total

    @define(input=int, output=int)
    async def one(n: int, ctx: DurableContext) -> int:
        value: int = await ctx.run("step", const(n))
        return value

    store = SqliteDurableStore(db)
    out: dict[str, Any] = {}

    async def main() -> None:
        engine = DurableEngine([many, one], store=store)
        async with engine, engine.worker(concurrency=64, poll_interval=0.1):
            await engine.run(many, 10)  # warm up
            t0 = time.perf_counter()
            assert await engine.run(many, steps) == steps * (steps - 1) // 2
            out["steps_per_s"] = steps / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            ops: list[Any] = []

            async def start(i: int) -> None:
                ops.append(await engine.schedule(one, i))

            async with anyio.create_task_group() as tg:
                for i in range(flows):
                    tg.start_soon(start, i)
            for op in ops:
                assert (await engine.wait(op.name)).done
            out["flows_per_s"] = flows / (time.perf_counter() - t0)
            assert store.connection is not None
            out["sqlite"] = _pragmas(store.connection)

    anyio.run(main)
    return out


def run_shapes(db: Path) -> dict[str, Any]:
    import anyio

    from stream_gateway.durable import DurableContext, DurableEngine, Loop, SqliteDurableStore
    from stream_gateway.durable import durable_flow as define

    bodies: list[int] = []  # turn number of every body execution
    turn_done: list[float] = []

    async def add(n: int) -> int:
        return n + 1

    @define(output=int)
    async def agent(_: None, ctx: DurableContext) -> int:
        async def turn(ctx: DurableContext, n: int) -> Loop:
            bodies.append(n)
            value: int = await ctx.run("think", lambda: add(n))
            await ctx.sleep("yield", 0.01)  # every turn parks and wakes: a replay per turn
            turn_done.append(time.perf_counter())
            return Loop.done(value) if value == TURNS else Loop.next(value)

        result: int = await ctx.loop("turns", turn, state=0, history_keep=10)
        return result

    async def one(ctx: DurableContext) -> int:
        value: int = await ctx.run("s", lambda: add(0))
        return value

    @define(output=int)
    async def joined(_: None, ctx: DurableContext) -> int:
        results = await ctx.join("fan", {f"b{i}": one for i in range(BRANCHES)})
        return sum(results.values())

    @define(output=int)
    async def sequential(_: None, ctx: DurableContext) -> int:
        total = 0
        for i in range(BRANCHES):
            value: int = await ctx.run(f"s{i}", lambda: add(0))
            total += value
        return total

    out: dict[str, Any] = {}

    async def main() -> None:
        engine = DurableEngine([agent, joined, sequential], store=SqliteDurableStore(db))
        async with engine, engine.worker(concurrency=64, poll_interval=0.1):
            t0 = time.perf_counter()
            assert await engine.run(agent) == TURNS
            out["loop_total_s"] = time.perf_counter() - t0
            per_turn = [b - a for a, b in zip([t0, *turn_done], turn_done, strict=False)]
            out["turn_ms_first100"] = 1000 * sum(per_turn[:100]) / 100
            out["turn_ms_last100"] = 1000 * sum(per_turn[-100:]) / 100
            out["bodies_first100"] = sum(1 for n in bodies if n < 100) / 100
            out["bodies_last100"] = sum(1 for n in bodies if n >= TURNS - 100) / 100
            out["bodies_total"] = len(bodies)
            for name, flow in (("join_s", joined), ("sequential_s", sequential)):
                best = float("inf")
                for _ in range(3):
                    t0 = time.perf_counter()
                    assert await engine.run(flow) == BRANCHES
                    best = min(best, time.perf_counter() - t0)
                out[name] = best

    anyio.run(main)
    return out


def run_dbos(db: Path, steps: int, flows: int, wal: bool = False) -> dict[str, Any]:
    import logging

    if wal:  # persistent in the file: DBOS's own connections then run in WAL mode
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA journal_mode = WAL")

    from dbos import DBOS

    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(config={"name": "bench", "system_database_url": f"sqlite:///{db}", "log_level": "WARNING"})

    @DBOS.step()
    def step(i: int) -> int:
        return i

    @DBOS.workflow()
    def many(n: int) -> int:
        return sum(step(i) for i in range(n))

    @DBOS.workflow()
    def one(n: int) -> int:
        return step(n)

    DBOS.launch()
    out: dict[str, Any] = {}
    try:
        many(10)  # warm up
        t0 = time.perf_counter()
        assert many(steps) == steps * (steps - 1) // 2
        out["steps_per_s"] = steps / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=STARTERS) as pool:
            handles = list(pool.map(lambda i: DBOS.start_workflow(one, i), range(flows)))
        for handle in handles:
            handle.get_result()
        out["flows_per_s"] = flows / (time.perf_counter() - t0)
        # DBOS sets neither pragma: read what its connections run with.
        from dbos._dbos import _get_dbos_instance

        engine = _get_dbos_instance()._sys_db.engine
        with engine.connect() as sa_conn:
            out["sqlite"] = _pragmas(sa_conn.connection.dbapi_connection)
    finally:
        DBOS.destroy()
    return out


def child(system: str, steps: int, flows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / f"{system}.sqlite3"
        if system == "shapes":
            print(json.dumps(run_shapes(db)))
            return
        if system == "ours":
            result = run_ours(db, steps, flows)
        else:
            result = run_dbos(db, steps, flows, wal=system == "dbos-wal")
        if system != "ours":
            with sqlite3.connect(db) as conn:  # the file's journal mode, as persisted
                result["sqlite"]["file_journal_mode"] = conn.execute(
                    "PRAGMA journal_mode"
                ).fetchone()[0]
    print(json.dumps(result))


def measure(system: str, steps: int, flows: int) -> dict[str, Any] | str:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", system, "--steps", str(steps), "--flows", str(flows)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--flows", type=int, default=300)
    parser.add_argument("--child", choices=[*SYSTEMS, "shapes"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.flows)
        return
    best: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    for _ in range(args.rounds):
        for system in SYSTEMS:
            result = measure(system, args.steps, args.flows)
            if isinstance(result, str):
                failures[system] = result
                continue
            prev = best.setdefault(system, result)
            for key in ("steps_per_s", "flows_per_s"):
                prev[key] = max(prev[key], result[key])
    print(f"durable flows, best of {args.rounds} rounds, {os.cpu_count()} CPUs")
    for system in SYSTEMS:
        if system in failures and system not in best:
            print(f"  {system:8}  FAILED: {failures[system]}")
            continue
        r = best[system]
        print(
            f"  {system:8}  {r['steps_per_s']:9.0f} steps/s ({args.steps}-step flow)"
            f"  {r['flows_per_s']:8.0f} one-step flows/s ({args.flows} flows)"
            f"  sqlite {r['sqlite']}"
        )
    for baseline in ("dbos", "dbos-wal"):
        if "ours" in best and baseline in best:
            o, d = best["ours"], best[baseline]
            print(
                f"  ratio     steps/s {o['steps_per_s'] / d['steps_per_s']:.2f}x"
                f"  flows/s {o['flows_per_s'] / d['flows_per_s']:.2f}x  (ours / {baseline})"
            )
    shapes = measure("shapes", args.steps, args.flows)
    if isinstance(shapes, str):
        print(f"  shapes    FAILED: {shapes}")
        return
    print(f"replay shapes (ours, SQLite), {TURNS}-turn loop, join of {BRANCHES}")
    print(
        f"  loop      body executions/turn {shapes['bodies_first100']:.2f} (first 100) "
        f"{shapes['bodies_last100']:.2f} (last 100); {shapes['bodies_total']} in all "
        f"= {shapes['bodies_total'] / TURNS:.2f}x turns"
    )
    print(
        f"  loop      ms/turn {shapes['turn_ms_first100']:.2f} (first 100) "
        f"{shapes['turn_ms_last100']:.2f} (last 100): last/first "
        f"{shapes['turn_ms_last100'] / shapes['turn_ms_first100']:.2f}x"
    )
    print(
        f"  join      {BRANCHES} branches {shapes['join_s'] * 1000:.0f} ms vs {BRANCHES} "
        f"sequential steps {shapes['sequential_s'] * 1000:.0f} ms: "
        f"{shapes['sequential_s'] / shapes['join_s']:.2f}x faster"
    )


if __name__ == "__main__":
    main()
