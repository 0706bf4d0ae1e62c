"""Durable flows on Postgres against DBOS on the same server, side by side.

The same two workloads as ``bench/bench_durable.py`` (SQLite): steps per second within
one flow of ``--steps`` steps, and one-step flows per second with ``--flows`` started
at once (from tasks for ours, from 32 threads for DBOS, whose API is synchronous).
Both on one PostgreSQL server started for the run with ``fsync`` and
``synchronous_commit`` on (every commit durable, for both), each in a database of its
own; each measurement in a fresh subprocess (DBOS is a process-wide singleton),
alternating systems, best of ``--rounds``; the figures, then the ratios ours / DBOS.

    .venv/bin/python managers/postgres/bench/bench_durable_dbos.py

Needs ``pip install dbos`` (``make bench`` installs it; it brings psycopg).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

SYSTEMS = ("ours", "dbos")
STARTERS = 32
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


def run_ours(dsn: str, steps: int, flows: int) -> dict[str, Any]:
    import anyio

    from stream_gateway.durable import DurableContext, DurableEngine, durable_flow
    from stream_gateway_postgres import PostgresDurableStore

    def const(i: int) -> Callable[[], int]:
        return lambda: i

    @durable_flow(input=int, output=int)
    async def many(n: int, ctx: DurableContext) -> int:
        total = 0
        for i in range(n):
            value: int = await ctx.run("step", const(i))
            total += value
        return total

    @durable_flow(input=int, output=int)
    async def one(n: int, ctx: DurableContext) -> int:
        value: int = await ctx.run("step", const(n))
        return value

    out: dict[str, Any] = {}

    async def main() -> None:
        store = PostgresDurableStore(dsn, schema="bench", max_connections=20)
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

    anyio.run(main)
    return out


def run_dbos(dsn: str, steps: int, flows: int) -> dict[str, Any]:
    import logging

    from dbos import DBOS

    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(config={"name": "bench", "system_database_url": dsn, "log_level": "WARNING"})

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
    finally:
        DBOS.destroy()
    return out


def measure(system: str, dsn: str, steps: int, flows: int) -> dict[str, Any] | str:
    command = [sys.executable, __file__, "--child", system, "--dsn", dsn]
    command += ["--steps", str(steps), "--flows", str(flows)]
    proc = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def database(server_dsn: str, name: str) -> str:
    """A fresh database ``name`` on the server; its DSN."""
    import asyncio

    import asyncpg

    async def make() -> None:
        conn = await asyncpg.connect(server_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(make())
    return server_dsn.replace("/postgres?", f"/{name}?", 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--flows", type=int, default=300)
    parser.add_argument("--child", choices=SYSTEMS)
    parser.add_argument("--dsn")
    args = parser.parse_args()
    if args.child:
        run = run_ours if args.child == "ours" else run_dbos
        print(json.dumps(run(args.dsn, args.steps, args.flows)))
        return
    from stream_gateway_postgres.testing import PostgresServer

    best: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    with PostgresServer(settings=DURABLE) as server:
        for n in range(args.rounds):
            for system in SYSTEMS:
                dsn = database(server.dsn, f"{system}_{n}")
                result = measure(system, dsn, args.steps, args.flows)
                if isinstance(result, str):
                    failures[system] = result
                    continue
                prev = best.setdefault(system, result)
                for key in ("steps_per_s", "flows_per_s"):
                    prev[key] = max(prev[key], result[key])
    print(f"durable flows on PostgreSQL (fsync on), best of {args.rounds}, {os.cpu_count()} CPUs")
    for system in SYSTEMS:
        if system not in best:
            print(f"  {system:5}  FAILED: {failures.get(system)}")
            continue
        r = best[system]
        print(
            f"  {system:5}  {r['steps_per_s']:8.0f} steps/s ({args.steps}-step flow)"
            f"  {r['flows_per_s']:7.0f} one-step flows/s ({args.flows} flows)"
        )
    if len(best) == 2:
        o, d = best["ours"], best["dbos"]
        print(
            f"  ratio  steps/s {o['steps_per_s'] / d['steps_per_s']:.2f}x"
            f"  flows/s {o['flows_per_s'] / d['flows_per_s']:.2f}x  (ours / DBOS)"
        )


if __name__ == "__main__":
    main()
