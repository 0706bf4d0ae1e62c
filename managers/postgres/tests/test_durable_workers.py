"""Durable flows on one Postgres store shared by worker *processes*, SIGKILLed at random.

The workers are ``stream-gateway-worker`` processes (`tests.durable.procs`) on the
test's schema; this process schedules, signals and checks. Their poll interval is long
(1 s): new executions, signals and timers reach them by LISTEN/NOTIFY.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter, defaultdict
from pathlib import Path

import anyio
import pytest
from tests.durable.procs import FLOWS, Mix, WorkerProcess

from stream_gateway.durable import DurableEngine, DurableStoreError, Operation
from stream_gateway_postgres import PostgresDurableStore
from stream_gateway_postgres.testing import PostgresServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

EXECUTIONS = 200
KILLS = 20
WORKERS = 3
# The steps of `mixed`: logged path -> journal path.
STEPS = {
    "a.s0": "fan:a/s0",
    "a.s1": "fan:a/s1",
    "b.s0": "fan:b/s0",
    "b.s1": "fan:b/s1",
    "last": "last",
}


async def spawn(url: str, log: Path, worker_id: str) -> WorkerProcess:
    return await WorkerProcess.spawn(
        url, "--worker-id", worker_id, "--lease", "5", "--poll-interval", "1",
        "--concurrency", "32", log=log,
    )  # fmt: skip


async def signal_the_waiting(
    engine: DurableEngine, signalled: set[str], limit: int = EXECUTIONS
) -> None:
    """Send ``go`` (= 1000) once to (up to ``limit``) executions that wait for it."""
    waiting = (await engine.list(status="waiting", limit=1000)).items
    for op in [op for op in waiting if op.name not in signalled][:limit]:
        if op.blocked_on_step == "go":
            await engine.signal(op.name, "go", 1000)
            signalled.add(op.name)


async def check_effects(
    engine: DurableEngine, log: Path, killed: dict[str, float], ids: list[str]
) -> int:
    """Each step's effect happened, and never again once the step completed (an
    attempt cut short, by a SIGKILL or a lost lease, may have left one before); two
    processes never ran steps of one execution at the same time. Returns how many of
    the killed processes were amid a step."""
    effects: dict[tuple[str, str], list[str]] = defaultdict(list)
    entered: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    spans: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for line in log.read_text().splitlines():  # noqa: ASYNC240 - after the run
        kind, flow_id, path, pid, at = line.split()
        if kind == "effect":
            effects[(flow_id, path)].append(at)
        elif kind == "enter":
            entered[(flow_id, path, pid)].append(float(at))
        else:
            spans[flow_id].append((entered[(flow_id, path, pid)].pop(0), float(at), pid))
    for (flow_id, _, pid), starts in entered.items():  # no exit: its process was killed
        spans[flow_id].extend((start, killed[pid], pid) for start in starts)
    mid_step = len({pid for (_, _, pid), starts in entered.items() if starts})
    for flow_id in ids:
        journal = {e.path: e for e in await engine.history(flow_id)}
        for path, address in STEPS.items():
            completed = float(json.loads(journal[address].result or "null")["effect_at"])
            assert max(float(at) for at in effects[(flow_id, path)]) == completed, (
                f"{flow_id} {path}: an effect after the step completed"
            )
        # Steps of one execution overlap only within one process (join branches).
        ordered = sorted(spans[flow_id])
        for i, (_, end, pid) in enumerate(ordered):
            for start, _, other in ordered[i + 1 :]:
                if start >= end:
                    break
                assert other == pid, f"two workers ran {flow_id} at once: {ordered}"
    return mid_step


async def test_three_workers_twenty_sigkills_two_hundred_executions(
    server: PostgresServer, schema: str, tmp_path: Path
) -> None:
    url = f"{server.dsn}#schema={schema}"
    log, stderr = tmp_path / "effects.log", tmp_path / "workers.log"
    rng = random.Random(2024)
    killed: dict[str, float] = {}  # pid -> when it was killed
    signalled: set[str] = set()
    engine = DurableEngine(FLOWS, store=PostgresDurableStore(server.dsn, schema=schema))
    started = time.monotonic()
    ready: list[WorkerProcess] = []
    everyone: list[WorkerProcess] = []

    async def add_worker() -> None:
        worker = await spawn(url, stderr, f"w{len(everyone)}")
        everyone.append(worker)
        await worker.go()
        ready.append(worker)

    async with engine, anyio.create_task_group() as tg:
        for _ in range(WORKERS):
            await add_worker()
        ids: list[str] = []
        try:
            with anyio.fail_after(600):
                # Each round starts 10 executions and signals 10 parked ones, then
                # SIGKILLs a random worker (while another is up) amid their steps; the
                # victim is replaced in the background (a start takes a while).
                for _ in range(KILLS):
                    for _ in range(EXECUTIONS // KILLS):
                        job = Mix(log=str(log), n=len(ids), delay=0.2)
                        ids.append((await engine.schedule("mixed", job)).name)
                    await signal_the_waiting(engine, signalled, limit=EXECUTIONS // KILLS)
                    await anyio.sleep(rng.uniform(0.05, 0.5))
                    while len(ready) < 2:  # noqa: ASYNC110 - a few short waits
                        await anyio.sleep(0.05)
                    victim = ready.pop(rng.randrange(len(ready)))
                    killed[str(victim.proc.pid)] = time.time()
                    await victim.kill()  # SIGKILL
                    tg.start_soon(add_worker)
                while True:
                    ops = await all_ops(engine, ids)
                    if all(op.done for op in ops):
                        break
                    await signal_the_waiting(engine, signalled)
                    await anyio.sleep(0.2)
            mid_step = await check_effects(engine, log, killed, ids)
        finally:
            tg.cancel_scope.cancel()
            for worker in everyone:
                await worker.kill()
    elapsed = time.monotonic() - started
    print(
        f"{EXECUTIONS} executions, {KILLS} SIGKILLs ({mid_step} amid a step), "
        f"{WORKERS} workers: {elapsed:.1f} s"
    )
    assert mid_step >= KILLS // 10  # kills landed amid steps, not only between them
    for i, op in enumerate(ops):
        assert op.status == "completed", op.to_json()
        assert op.response == i + 1000 + 11 + 11 + 100


async def all_ops(engine: DurableEngine, ids: list[str]) -> list[Operation]:
    return [await engine.get_state(flow_id) for flow_id in ids]


async def test_a_five_second_outage_fails_nothing(tmp_path: Path) -> None:
    """Postgres stopped for 5 s mid-run: workers retry, executions resume, none fails."""
    with PostgresServer() as server:
        url = f"{server.dsn}#schema=outage"
        log, stderr = tmp_path / "effects.log", tmp_path / "workers.log"
        engine = DurableEngine(FLOWS, store=PostgresDurableStore(server.dsn, schema="outage"))
        signalled: set[str] = set()
        async with engine:
            workers = [await spawn(url, stderr, f"w{i}") for i in range(2)]
            for worker in workers:
                await worker.go()
            ids = [
                (await engine.schedule("mixed", Mix(log=str(log), n=i, nap=0.5))).name
                for i in range(40)
            ]
            try:
                with anyio.fail_after(120):
                    await anyio.sleep(0.5)  # mid-run: some asleep, some in steps
                    await anyio.to_thread.run_sync(server.stop)
                    await anyio.sleep(5)
                    await anyio.to_thread.run_sync(server.start)
                    while True:
                        try:
                            await signal_the_waiting(engine, signalled)
                            ops = await all_ops(engine, ids)
                        except DurableStoreError:  # the engine's pool reconnects
                            await anyio.sleep(0.2)
                            continue
                        if all(op.done for op in ops):
                            break
                        await anyio.sleep(0.2)
            finally:
                for worker in workers:
                    await worker.kill()
        for i, op in enumerate(ops):
            assert op.status == "completed", op.to_json()
            assert op.response == i + 1000 + 122
        counts = Counter(
            tuple(line.split()[1:3]) for line in log.read_text().splitlines()
            if line.startswith("effect")
        )  # fmt: skip
        assert {(flow_id, path) for flow_id in ids for path in STEPS} == set(counts)
