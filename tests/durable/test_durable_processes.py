"""Worker processes: SIGKILLed mid-flow over and over, and two sharing one file."""

from __future__ import annotations

import random
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from stream_gateway.durable import DurableEngine, SqliteDurableStore
from stream_gateway.durable._schedules import tick_execution_id

from .procs import FLOWS, Fan, Job, WorkerProcess, worker_process

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

STEPS = 20
KILLS = 50
DELAY = 0.1  # seconds of work per step; the side effect lands halfway through


async def test_sigkilled_worker_loses_no_completed_step(tmp_path: Path) -> None:
    db, log = tmp_path / "durable.sqlite3", tmp_path / "effects.log"
    engine = DurableEngine(FLOWS, store=SqliteDurableStore(db))
    rng = random.Random(1234)
    # How often each step was the first unfinished one when a worker was killed: the
    # only step whose side effect may have happened without its journal entry.
    in_flight_at_kill: Counter[int] = Counter()
    async with engine:
        op = await engine.schedule("counted", Job(log=str(log), steps=STEPS, delay=DELAY))
        with anyio.fail_after(300):
            unfinished = list(range(STEPS))
            # A stable worker id: the restarted worker takes its lease back at once.
            spare = await WorkerProcess.spawn(db, "--worker-id", "w", "--lease", "2")
            for kill in range(KILLS):
                # Pace the kills over the whole flow: while it is ahead of schedule, kill
                # within the first step's work (no progress); else anywhere in 2.5 steps.
                ahead = len(unfinished) / (KILLS - kill) < STEPS / KILLS
                delay = rng.uniform(0, (1.0 if ahead else 2.5) * DELAY)
                worker = spare
                await worker.go()
                spare = await WorkerProcess.spawn(db, "--worker-id", "w", "--lease", "2")
                await anyio.sleep(delay)
                await worker.kill()  # SIGKILL
                done = {e.key for e in await engine.history(op.name) if e.status == "completed"}
                unfinished = [i for i in range(STEPS) if f"s{i}" not in done]
                if unfinished:
                    in_flight_at_kill[unfinished[0]] += 1
            await spare.go()
            final = await engine.wait(op.name)
            spare.proc.send_signal(signal.SIGTERM)
            await spare.proc.wait()
            await spare.kill()

    assert final.status == "completed", final.to_json()
    assert final.response == sum(range(STEPS))
    counts = Counter(int(line.split()[0]) for line in log.read_text().splitlines())
    for i in range(STEPS):
        assert counts[i] >= 1, f"step {i} never ran"
        assert counts[i] - 1 <= in_flight_at_kill[i], (
            f"step {i} ran {counts[i]} times but was in flight at only "
            f"{in_flight_at_kill[i]} kills: a completed step ran again"
        )
    # The kills really landed during the flow, not after it.
    print(f"in flight at kills: {dict(in_flight_at_kill)}; lines: {dict(counts)}")
    assert sum(in_flight_at_kill.values()) >= KILLS * 3 // 4


async def test_two_worker_processes_never_run_one_execution_at_once(tmp_path: Path) -> None:
    db, log = tmp_path / "durable.sqlite3", tmp_path / "intervals.log"
    engine = DurableEngine(FLOWS, store=SqliteDurableStore(db))
    job = Job(log=str(log), steps=4, delay=0.03, nap=0.01)
    async with engine:
        with anyio.fail_after(60):
            # Nobody dies here, so the lease only has to outlast a stall of a loaded
            # machine (a 1 s lease lapsed under load 12: a lapse is not what this tests).
            async with (
                worker_process(db, "--lease", "5", "--concurrency", "3") as a,
                worker_process(db, "--lease", "5", "--concurrency", "3") as b,
            ):
                ids = [(await engine.schedule("guarded", job)).name for _ in range(16)]
                for flow_id in ids:
                    assert (await engine.wait(flow_id)).status == "completed"
                for proc in (a, b):
                    proc.send_signal(signal.SIGTERM)

    events: dict[str, list[tuple[float, str, str]]] = {}
    for line in log.read_text().splitlines():
        kind, flow_id, pid, at = line.split()
        events.setdefault(flow_id, []).append((float(at), kind, pid))
    pids = {pid for evs in events.values() for _, _, pid in evs}
    assert len(pids) == 2, "both workers should have taken part"
    for flow_id, evs in events.items():
        evs.sort()
        assert len(evs) == 2 * job.steps
        inside = 0
        for _, kind, _ in evs:
            inside += 1 if kind == "enter" else -1
            assert inside in (0, 1), f"two workers ran flow {flow_id} at once: {evs}"


async def test_sigkilled_worker_completes_a_join_and_two_signals(tmp_path: Path) -> None:
    db, log = tmp_path / "durable.sqlite3", tmp_path / "effects.log"
    engine = DurableEngine(FLOWS, store=SqliteDurableStore(db))
    job = Fan(log=str(log))
    rng = random.Random(4321)
    keys = [(b, i) for b in range(job.branches) for i in range(job.steps)]
    in_flight_at_kill: Counter[tuple[int, int]] = Counter()
    async with engine:
        op = await engine.schedule("fanned", job)
        with anyio.fail_after(360):
            spare = await WorkerProcess.spawn(db, "--worker-id", "w", "--lease", "2")
            for kill in range(KILLS):
                if kill == 20:
                    await engine.signal(op.name, "go", 1)  # from this process, not the worker's
                if kill == 35:
                    await engine.signal(op.name, "go", 2)
                worker = spare
                await worker.go()
                spare = await WorkerProcess.spawn(db, "--worker-id", "w", "--lease", "2")
                await anyio.sleep(rng.uniform(0, 1.5 * job.delay))
                await worker.kill()  # SIGKILL
                done = {
                    (e.branch, e.key)
                    for e in await engine.history(op.name)
                    if e.status == "completed"
                }
                for b in range(job.branches):
                    for i in range(job.steps):
                        if (f"fan:b{b}", f"s{i}") not in done:
                            in_flight_at_kill[(b, i)] += 1  # the first unfinished of branch b
                            break
            await spare.go()
            final = await engine.wait(op.name)
            spare.proc.send_signal(signal.SIGTERM)
            await spare.proc.wait()
            await spare.kill()

    assert final.status == "completed", final.to_json()
    assert final.response == job.branches * sum(range(job.steps)) + 1000 + 20000
    counts = Counter(
        tuple(int(x) for x in line.split()[0].split(".")) for line in log.read_text().splitlines()
    )
    for key in keys:
        assert counts[key] >= 1, f"step {key} never ran"
        assert counts[key] - 1 <= in_flight_at_kill[key], (
            f"step {key} ran {counts[key]} times but was in flight at only "
            f"{in_flight_at_kill[key]} kills: a completed step ran again"
        )


async def test_a_sync_step_longer_than_the_lease_runs_once_across_two_workers(
    tmp_path: Path,
) -> None:
    db, log = tmp_path / "durable.sqlite3", tmp_path / "enter.log"
    engine = DurableEngine(FLOWS, store=SqliteDurableStore(db))
    async with engine:
        with anyio.fail_after(60):
            async with (
                worker_process(db, "--lease", "1") as a,
                worker_process(db, "--lease", "1") as b,
            ):
                op = await engine.schedule("blocking", Job(log=str(log), steps=1, delay=3.0))
                final = await engine.wait(op.name)
                for proc in (a, b):
                    proc.send_signal(signal.SIGTERM)
    assert final.status == "completed" and final.response == 1
    assert len(log.read_text().splitlines()) == 1


HANDLERS = 3
ROLLBACK_KILLS = 20


async def test_sigkills_during_a_rollback_run_each_handler_once_in_reverse(
    tmp_path: Path,
) -> None:
    db, log = tmp_path / "durable.sqlite3", tmp_path / "undo.log"
    engine = DurableEngine(FLOWS, store=SqliteDurableStore(db))
    rng = random.Random(4321)
    in_flight_at_kill: Counter[int] = Counter()
    keys = [f"undo:s{i}" for i in reversed(range(HANDLERS))]  # the order they run in
    async with engine:
        op = await engine.schedule(
            "compensated", Job(log=str(log), steps=HANDLERS, delay=5 * DELAY)
        )
        with anyio.fail_after(300):
            unfinished = keys
            spare = await WorkerProcess.spawn(db, "--worker-id", "w", "--lease", "2")
            for kill in range(ROLLBACK_KILLS):
                ahead = len(unfinished) / (ROLLBACK_KILLS - kill) < HANDLERS / ROLLBACK_KILLS
                delay = rng.uniform(0, (2.0 if ahead else 6.0) * DELAY)
                worker = spare
                await worker.go()
                spare = await WorkerProcess.spawn(db, "--worker-id", "w", "--lease", "2")
                await anyio.sleep(delay)
                await worker.kill()  # SIGKILL
                done = {
                    e.key
                    for e in await engine.history(op.name)
                    if e.branch == "$rollback" and e.status == "completed"
                }
                unfinished = [k for k in keys if k not in done]
                if unfinished:
                    in_flight_at_kill[int(unfinished[0].removeprefix("undo:s"))] += 1
            await spare.go()
            final = await engine.wait(op.name)
            spare.proc.send_signal(signal.SIGTERM)
            await spare.proc.wait()
            await spare.kill()
        detail = await engine.detail(op.name)

    assert final.status == "failed" and final.error is not None
    assert final.error.message == "declined", final.to_json()
    assert "rolling_back" in [a.data.get("status") for a in detail.timeline]
    ran = [int(line.split()[1]) for line in log.read_text().splitlines()]
    counts = Counter(ran)
    for i in range(HANDLERS):
        assert counts[i] >= 1, f"handler {i} never ran"
        assert counts[i] - 1 <= in_flight_at_kill[i], (
            f"handler {i} ran {counts[i]} times but was in flight at only "
            f"{in_flight_at_kill[i]} kills: a completed handler ran again"
        )
    assert list(dict.fromkeys(ran)) == list(reversed(range(HANDLERS)))  # reverse order
    print(f"in flight at kills: {dict(in_flight_at_kill)}; runs: {dict(counts)}")
    assert sum(in_flight_at_kill.values()) >= ROLLBACK_KILLS // 2


async def test_an_execution_evicted_from_a_worker_process_resumes_on_any(
    tmp_path: Path,
) -> None:
    """The eviction travels through the SQLite file: the worker process holding the
    execution reads it with its lease renewals, parks it, and a worker resumes it."""
    db, log = tmp_path / "durable.sqlite3", tmp_path / "evict.log"
    engine = DurableEngine(FLOWS, store=SqliteDurableStore(db))
    options = ("--lease", "0.9", "--grace", "1")
    async with engine:
        a = await WorkerProcess.spawn(db, *options, "--worker-id", "A")
        b = await WorkerProcess.spawn(db, *options, "--worker-id", "B")  # starts meanwhile
        try:
            await a.go()
            job = Job(log=str(log), steps=1, delay=120)
            op = await engine.schedule("evictable", job.model_dump())
            with anyio.fail_after(30):
                while True:
                    if log.exists():  # A runs the step
                        break
                    await anyio.sleep(0.02)
            await b.go()
            await engine.evict(op.name)
            with anyio.fail_after(30):  # far less than the 120 s the step would take
                done = await engine.wait(op.name)
        finally:
            await a.kill()
            await b.kill()
        detail = await engine.detail(op.name)
    lines = log.read_text().split()
    assert done.status == "completed" and lines[0] == "enter" and lines[2] == "again"
    assert [x.data["worker"] for x in detail.timeline if x.kind == "evicted"] == ["A"]
    [work] = detail.steps
    assert work.attempts == 1 and work.error is None  # the evicted attempt is not counted
    runs = [x.data["worker"] for x in detail.timeline if x.data.get("status") == "running"]
    print(f"resumed by {runs[-1]}")


async def _settled(engine: DurableEngine) -> list[Any]:
    """The schedule's executions once none is running."""
    with anyio.fail_after(30):
        while True:
            ops = (await engine.list(flow="ticked", limit=1000)).items
            if all(op.done for op in ops):
                return ops
            await anyio.sleep(0.05)


def _on_grid(ticks: list[float], start: float, interval: float) -> bool:
    return all(abs((t - start) / interval - round((t - start) / interval)) < 1e-6 for t in ticks)


async def test_three_worker_processes_start_exactly_one_execution_per_tick(
    tmp_path: Path,
) -> None:
    """An interval schedule run by 3 worker processes on one SQLite file, paused,
    resumed, updated and removed from here (another process): the executions are
    exactly the ticks, none twice, each on the grid in force when it fell."""
    db, log = tmp_path / "durable.sqlite3", tmp_path / "ticks.log"
    engine = DurableEngine(FLOWS, store=SqliteDurableStore(db))
    interval, faster = 0.5, 0.3
    async with engine:
        async with (
            worker_process(db, "--lease", "2") as a,
            worker_process(db, "--lease", "2") as b,
            worker_process(db, "--lease", "2") as c,
        ):
            first = await engine.ensure_schedule(
                "ticked", str(log), id="half-second", interval=interval, overlap="allow"
            )
            await anyio.sleep(2.5)
            paused_at = (await engine.pause_schedule("half-second")).updated_at
            # A tick fires atomically with its check of the pause: the executions
            # are all there; one fired just before may still be running.
            paused_count = len(await _settled(engine))
            await anyio.sleep(2 * interval)
            assert len((await engine.list(flow="ticked", limit=1000)).items) == paused_count

            resumed = await engine.resume_schedule("half-second")
            await anyio.sleep(2)
            updated = await engine.update_schedule("half-second", interval=faster)
            await anyio.sleep(1.5)
            await engine.remove_schedule("half-second")
            removed_count = len(await _settled(engine))
            await anyio.sleep(3 * faster)
            ops = await _settled(engine)
            assert len(ops) == removed_count  # removed: no tick fires any more
            pids = {p.pid for p in (a, b, c)}
        ticks = []
        for op in ops:
            assert op.status == "completed", op.to_json()
            timeline = (await engine.detail(op.name)).timeline
            [tick_line] = [x for x in timeline if x.kind == "schedule_tick"]
            ticks.append(tick_line.data["tick"])

    assert len(ticks) == len(set(ticks))  # no tick twice
    assert first.next_at is not None and resumed.next_at is not None
    assert updated.next_at is not None
    before = sorted(t for t in ticks if t < paused_at)
    after_resume = sorted(t for t in ticks if resumed.next_at <= t < updated.next_at)
    after_update = sorted(t for t in ticks if t >= updated.next_at)
    # Nothing fell while paused; each phase's ticks lie on its own grid.
    assert len(before) + len(after_resume) + len(after_update) == len(ticks)
    assert len(before) >= 2 and len(after_resume) >= 2 and len(after_update) >= 2
    assert _on_grid(before, first.next_at, interval)
    assert _on_grid(after_resume, resumed.next_at, interval)
    assert _on_grid(after_update, updated.next_at, faster)
    assert {tick_execution_id("half-second", t) for t in ticks} == {op.name for op in ops}
    ran = [line.split() for line in log.read_text().splitlines()]
    assert sorted(r[0] for r in ran) == sorted(op.name for op in ops)  # each ran once
    print(f"{len(ticks)} ticks; workers used: {len({r[1] for r in ran})} of {len(pids)}")
