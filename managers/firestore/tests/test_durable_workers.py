"""Durable flows on Firestore across worker *processes*: SIGKILLs, shared work,
signals from another process (this one), and no execution run in two places at once.

The worker processes are the core's test workers (`tests.durable.procs`), pointed
at a ``firestore://`` location instead of a SQLite file.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

import anyio
import pytest
from google.api_core.exceptions import Aborted
from tests.durable.procs import FLOWS, Fan, WorkerProcess

from stream_gateway.durable import DurableEngine, DurableStoreError
from stream_gateway_firestore import FirestoreDurableStore
from stream_gateway_firestore.testing import FirestoreEmulator

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# The scenario names 200 executions; on the emulator (one JVM, every transaction
# locking its documents) the default run keeps fewer, and
# ``FIRESTORE_SIGKILL_EXECUTIONS=200`` runs the full scale (see the README).
EXECUTIONS = int(os.environ.get("FIRESTORE_SIGKILL_EXECUTIONS", "40"))
WORKERS = 3
KILLS = 20
BRANCHES, STEPS = 2, 2
EXPECTED = BRANCHES * sum(range(STEPS)) + 1000 + 20000  # `fanned`: signals 1 then 2
READY_WITHIN = 300.0  # a worker imports Google's SDK: slow on a loaded machine
WORKER_ARGS = ("--lease", "5", "--concurrency", "32", "--poll-interval", "1.0")


def location(emulator: FirestoreEmulator) -> str:
    """A project of the scenario's own: a killed worker's open transactions keep their
    documents locked until the emulator expires them (about a minute), and the next
    test's wipe of the shared project must not meet them."""
    return f"firestore://{emulator.project}-k{secrets.token_hex(2)}#prefix=w{secrets.token_hex(5)}"


class Fleet:
    """``WORKERS`` worker processes; `kill_one` SIGKILLs one at random and starts
    another in its place (a fresh worker id: the dead one's leases must lapse)."""

    def __init__(self, where: str, log: Path, rng: random.Random) -> None:
        self.where, self.log, self.rng = where, log, rng
        self.live: list[WorkerProcess] = []
        self.killed: dict[str, float] = {}  # pid -> when it was killed
        self.spare: WorkerProcess | None = None

    async def start(self, count: int) -> None:
        for _ in range(count):
            worker = await WorkerProcess.spawn(self.where, *WORKER_ARGS, log=self.log)
            await worker.go(READY_WITHIN)
            self.live.append(worker)
        self.spare = await WorkerProcess.spawn(self.where, *WORKER_ARGS, log=self.log)

    async def kill_one(self) -> None:
        victim = self.live.pop(self.rng.randrange(len(self.live)))
        self.killed[str(victim.proc.pid)] = time.time()
        await victim.kill()  # SIGKILL
        # The spare has imported everything meanwhile: it serves at once.
        worker, self.spare = self.spare, None
        assert worker is not None
        await worker.go(READY_WITHIN)
        self.live.append(worker)
        self.spare = await WorkerProcess.spawn(self.where, *WORKER_ARGS, log=self.log)

    async def stop(self) -> None:
        """SIGTERM the live workers, then SIGKILL whichever has not stopped in 15 s."""
        live, self.live = self.live, []
        if self.spare is not None:
            await self.spare.kill()
            self.spare = None
        for worker in live:
            if worker.proc.returncode is None:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in live:
            with anyio.move_on_after(15, shield=True):
                await worker.proc.wait()
            await worker.kill()


async def send_to_all(engine: DurableEngine, ids: list[str], payload: int) -> None:
    limiter = anyio.CapacityLimiter(16)

    async def send(flow_id: str) -> None:
        async with limiter:
            for attempt in range(10):
                try:
                    await engine.signal(flow_id, "go", payload)
                    return
                except DurableStoreError as exc:
                    # Still contended after the store's own retries: an aborted
                    # transaction wrote nothing, so sending again cannot send twice.
                    if not isinstance(exc.__cause__, Aborted) or attempt == 9:
                        raise
                await anyio.sleep(0.5)

    async with anyio.create_task_group() as tg:
        for flow_id in ids:
            tg.start_soon(send, flow_id)


async def test_three_workers_share_flows_through_twenty_sigkills(
    emulator: FirestoreEmulator, tmp_path: Path
) -> None:
    where = location(emulator)
    effects, spans = tmp_path / "effects.log", tmp_path / "spans.log"
    engine = DurableEngine(FLOWS, store=FirestoreDurableStore.from_url(where, rpc_timeout=30))
    job = Fan(
        log=str(effects), branches=BRANCHES, steps=STEPS, delay=0.2, nap=1.0, spans=str(spans)
    )
    rng = random.Random(2024)
    fleet = Fleet(where, tmp_path / "workers.log", rng)
    started = time.monotonic()
    async with engine:
        ids = [(await engine.schedule("fanned", job)).name for _ in range(EXECUTIONS)]
        try:
            with anyio.fail_after(300 + 15 * EXECUTIONS):  # minutes: a shared emulator
                await fleet.start(WORKERS)
                for kill in range(KILLS):
                    if kill == KILLS // 3:
                        await send_to_all(engine, ids, 1)  # from this process, not a worker's
                    if kill == 2 * KILLS // 3:
                        await send_to_all(engine, ids, 2)
                    await anyio.sleep(rng.uniform(0.5, 2.0))
                    await fleet.kill_one()
                finals = [await engine.wait(flow_id) for flow_id in ids]
        finally:
            await fleet.stop()
    elapsed = time.monotonic() - started

    for final in finals:
        assert final.status == "completed", final.to_json()
        assert final.response == EXPECTED, final.to_json()

    # Each completed step's side effect happened once, except where the worker that
    # ran it first was SIGKILLed (the step was in flight: at-least-once).
    runs: dict[tuple[str, str], list[str]] = defaultdict(list)
    for line in effects.read_text().splitlines():
        step, pid, flow_id = line.split()
        runs[(flow_id, step)].append(pid)
    assert len(runs) == EXECUTIONS * BRANCHES * STEPS
    repeated = 0
    for key, pids in runs.items():
        for pid in pids[:-1]:
            assert pid in fleet.killed, f"step {key} ran again though {pid} was not killed"
        repeated += len(pids) - 1

    # No two processes inside one execution at once: no step of it runs in one
    # process while a step of it runs in another (a killed process's step ends
    # when it was killed).
    enters: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    exits: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for line in spans.read_text().splitlines():
        kind, flow_id, step, pid, at = line.split()
        (enters if kind == "enter" else exits)[(flow_id, step, pid)].append(float(at))
    intervals: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for (flow_id, step, pid), starts in enters.items():
        ends = exits[(flow_id, step, pid)]
        for n, start in enumerate(starts):
            end = ends[n] if n < len(ends) else fleet.killed[pid]
            intervals[flow_id].append((start, end, pid))
    for flow_id, spans_of in intervals.items():
        for a_start, a_end, a_pid in spans_of:
            for b_start, b_end, b_pid in spans_of:
                overlap = a_start < b_end and b_start < a_end
                assert a_pid == b_pid or not overlap, f"{a_pid} and {b_pid} ran {flow_id} at once"
    print(
        f"{EXECUTIONS} flows, {KILLS} kills, {repeated} steps repeated after kills, "
        f"{len(Counter(p for pids in runs.values() for p in pids))} worker pids, "
        f"{elapsed:.0f}s"
    )
