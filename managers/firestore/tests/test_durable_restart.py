"""Firestore goes away for 5 s under running durable flows, then comes back.

The emulator keeps data in memory, so the restart keeps it the way a real outage
does: the worker processes are frozen (SIGSTOP) for a moment so that nothing is in
flight, the data is exported, the emulator stopped, the workers thawed to meet a dead
store for 5 s, then the emulator started again with the export.
"""

from __future__ import annotations

import secrets
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from tests.durable.procs import FLOWS, Fan, WorkerProcess

from stream_gateway.durable import DurableEngine, DurableStoreError, Operation
from stream_gateway_firestore import FirestoreDurableStore
from stream_gateway_firestore.testing import HOST_ENV, FirestoreEmulator

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

FLOWS_RUN = 12
DOWN = 5.0
STARTUP = 180.0  # a JVM on a loaded machine
EXPECTED = 2 * sum(range(3)) + 1000 + 20000  # `fanned`, 2 branches of 3 steps, signals 1, 2


@pytest.fixture
def private_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[FirestoreEmulator]:
    """An emulator of this test's own (worker processes inherit its address)."""
    emulator = FirestoreEmulator()
    emulator.start(timeout=STARTUP)
    try:
        monkeypatch.setenv(HOST_ENV, emulator.address)
        yield emulator
    finally:
        emulator.stop()


def count_runs(effects: Path) -> Counter[tuple[str, str]]:
    """How often each (execution, step) ran so far. A step may have run twice before
    the outage already (a lease lapsed on the loaded machine: at-least-once)."""
    lines = effects.read_text().splitlines()
    return Counter((flow_id, step) for step, _pid, flow_id in map(str.split, lines))


async def patiently(engine: DurableEngine, flow_id: str) -> Operation:
    """`engine.wait`, carrying on through the outage (this process sees it too)."""
    while True:
        try:
            return await engine.wait(flow_id)
        except DurableStoreError:
            await anyio.sleep(0.5)


async def test_workers_ride_out_a_five_second_outage(
    private_emulator: FirestoreEmulator, tmp_path: Path
) -> None:
    where = f"firestore://{private_emulator.project}?prefix=r{secrets.token_hex(4)}"
    effects = tmp_path / "effects.log"
    engine = DurableEngine(FLOWS, store=FirestoreDurableStore.from_url(where, rpc_timeout=60))
    job = Fan(log=str(effects), branches=2, steps=3, delay=0.3, nap=0.5)
    args = ("--lease", "4", "--poll-interval", "0.5")
    workers: list[WorkerProcess] = []
    async with engine:
        ids = [(await engine.schedule("fanned", job)).name for _ in range(FLOWS_RUN)]
        for flow_id in ids:  # buffered until each waits for them
            await engine.signal(flow_id, "go", 1)
            await engine.signal(flow_id, "go", 2)
        try:
            with anyio.fail_after(300):
                for _ in range(2):
                    workers.append(await WorkerProcess.spawn(where, *args, log=tmp_path / "w.log"))
                    await workers[-1].go(STARTUP)
                while (  # noqa: ASYNC110
                    not effects.exists() or len(effects.read_text().splitlines()) < FLOWS_RUN * 2
                ):
                    await anyio.sleep(0.1)  # well under way (no step has run at first)
                for worker in workers:
                    worker.proc.send_signal(signal.SIGSTOP)
                await anyio.sleep(1.0)  # what was sent before the freeze lands
                before = {
                    (flow_id, e.branch, e.key)
                    for flow_id in ids
                    for e in await engine.history(flow_id)
                    if e.status == "completed" and e.branch and not e.key.startswith("$")
                }
                ran_before = count_runs(effects)
                exported = await anyio.to_thread.run_sync(private_emulator.export, tmp_path)
                await anyio.to_thread.run_sync(private_emulator.stop)
                for worker in workers:
                    worker.proc.send_signal(signal.SIGCONT)
                await anyio.sleep(DOWN)  # the workers meet a dead store
                await anyio.to_thread.run_sync(
                    lambda: private_emulator.start(STARTUP, import_data=exported)
                )
                finals = [await patiently(engine, flow_id) for flow_id in ids]
        finally:
            for worker in workers:
                worker.proc.send_signal(signal.SIGCONT)
                await worker.kill()

    for final in finals:
        assert final.status == "completed", final.to_json()
        assert final.response == EXPECTED
    ran = count_runs(effects)
    assert len(ran) == FLOWS_RUN * 6  # every step of every flow ran
    for flow_id, branch, key in before:  # a step completed before the outage never reran
        step = f"{branch.removeprefix('fan:b')}.{key.removeprefix('s')}"
        assert ran[(flow_id, step)] == ran_before[(flow_id, step)], (flow_id, step)
    assert before, "the outage should come while the flows are under way"
