"""Flows run by worker *processes* in the crash and concurrency tests, and the
helpers that start those processes (``stream-gateway-worker`` via ``python -m``)."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from pydantic import BaseModel

from stream_gateway.durable import DurableContext, DurableFlow, RollbackError, durable_flow


class Job(BaseModel):
    log: str
    steps: int
    delay: float
    nap: float = 0.0


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


@durable_flow(input=Job, output=int)
async def counted(job: Job, ctx: DurableContext) -> int:
    """Step ``i`` appends ``i`` to the log halfway through its work, and returns ``i``."""
    total = 0
    for i in range(job.steps):

        async def step(i: int = i) -> int:
            await anyio.sleep(job.delay / 2)
            _append(job.log, f"{i} {os.getpid()}")
            await anyio.sleep(job.delay / 2)
            return i

        total += await ctx.run(f"s{i}", step)
        if job.nap:
            await ctx.sleep(f"z{i}", job.nap)  # hands the execution back to any worker
    return total


@durable_flow(input=Job, output=int)
async def guarded(job: Job, ctx: DurableContext) -> int:
    """Each step logs ``enter``/``exit`` with this execution's id, pid and time."""
    for i in range(job.steps):

        async def step() -> None:
            _append(job.log, f"enter {ctx.flow_id} {os.getpid()} {time.time():.6f}")
            await anyio.sleep(job.delay)
            _append(job.log, f"exit {ctx.flow_id} {os.getpid()} {time.time():.6f}")

        await ctx.run(f"s{i}", step)
        await ctx.sleep(f"z{i}", job.nap)
    return job.steps


class Fan(BaseModel):
    log: str
    branches: int = 3
    steps: int = 5
    delay: float = 0.1
    nap: float = 0.0
    spans: str = ""  # a file for "enter|exit flow_id b.i pid time" lines, if any


@durable_flow(input=Fan, output=int)
async def fanned(job: Fan, ctx: DurableContext) -> int:
    """A durable sleep of ``nap`` seconds (if any), a join of ``branches`` branches of
    ``steps`` steps each (step ``b.i`` logs ``b.i`` and this execution's id halfway
    through and returns ``i``), then two signals ``go``."""
    if job.nap:
        await ctx.sleep("nap", job.nap)

    def branch(b: int) -> Any:
        async def run(ctx: DurableContext) -> int:
            total = 0
            for i in range(job.steps):

                async def step(i: int = i) -> int:
                    span = f"{ctx.flow_id} {b}.{i} {os.getpid()}"
                    if job.spans:
                        _append(job.spans, f"enter {span} {time.time():.6f}")
                    try:
                        await anyio.sleep(job.delay / 2)
                        _append(job.log, f"{b}.{i} {os.getpid()} {ctx.flow_id}")
                        await anyio.sleep(job.delay / 2)
                    finally:  # also when the worker stops the run (not when SIGKILLed)
                        if job.spans:
                            _append(job.spans, f"exit {span} {time.time():.6f}")
                    return i

                value: int = await ctx.run(f"s{i}", step)
                total += value
            return total

        return run

    results = await ctx.join("fan", {f"b{b}": branch(b) for b in range(job.branches)})
    first: int = await ctx.wait_for_signal("first", "go")
    second: int = await ctx.wait_for_signal("second", "go")
    total: int = sum(results.values()) + first * 1000 + second * 10000
    return total


@durable_flow(input=Job, output=int)
async def blocking(job: Job, ctx: DurableContext) -> int:
    """One *sync* step that blocks for ``delay`` seconds (longer than the lease)."""

    def step() -> int:
        _append(job.log, f"enter {os.getpid()}")
        time.sleep(job.delay)
        return 1

    done: int = await ctx.run("block", step)
    return done


@durable_flow(input=Job, output=int)
async def compensated(job: Job, ctx: DurableContext) -> int:
    """``steps`` quick steps with rollback handlers (handler ``i`` logs ``undo i``
    halfway through ``delay`` seconds of work), then a step raising `RollbackError`."""
    await ctx.rollback_checkpoint("start")
    for i in range(job.steps):

        async def undo(result: int) -> None:
            await anyio.sleep(job.delay / 2)
            _append(job.log, f"undo {result} {os.getpid()}")
            await anyio.sleep(job.delay / 2)

        def step(i: int = i) -> int:
            return i

        await ctx.run(f"s{i}", step, rollback=undo)

    def decline() -> None:
        raise RollbackError("declined")

    await ctx.run("charge", decline)
    return 0


@durable_flow(input=str, output=int)
async def ticked(log: str, ctx: DurableContext) -> int:
    """Started by a recurring schedule: one step logs this execution's id and pid."""

    def step() -> int:
        _append(log, f"{ctx.flow_id} {os.getpid()}")
        return 1

    done: int = await ctx.run("log", step)
    return done


@durable_flow(input=Job, output=str)
async def evictable(job: Job, ctx: DurableContext) -> str:
    """One async step: the first time it logs ``enter`` and works for ``delay``
    seconds (it is meant to be evicted); again, it logs ``again`` and ends."""

    async def step() -> str:
        first = not os.path.exists(job.log)  # noqa: ASYNC240 - a test's tiny file
        _append(job.log, f"{'enter' if first else 'again'} {os.getpid()}")
        if first:
            await anyio.sleep(job.delay)
        return str(os.getpid())

    done: str = await ctx.run("work", step)
    return done


class Mix(BaseModel):
    log: str
    n: int
    delay: float = 0.02
    nap: float = 0.1


@durable_flow(input=Mix, output=int)
async def mixed(job: Mix, ctx: DurableContext) -> int:
    """Sleeps ``nap``, joins branches ``a`` and ``b`` of two steps each, waits for the
    signal ``go``, then a last step; returns ``n`` + the signal + the steps' values.

    Each step logs ``enter`` and ``exit`` lines (``<id> <path> <pid> <time>``) around
    ``delay`` seconds of work (``exit`` even if interrupted), and an ``effect`` line
    halfway, whose time it returns (as ``effect_at``, with its ``value``)."""

    async def step(path: str, value: int) -> dict[str, Any]:
        _append(job.log, f"enter {ctx.flow_id} {path} {os.getpid()} {time.time():.6f}")
        try:
            await anyio.sleep(job.delay / 2)
            effect_at = f"{time.time():.6f}"
            _append(job.log, f"effect {ctx.flow_id} {path} {os.getpid()} {effect_at}")
            await anyio.sleep(job.delay / 2)
        finally:  # also when interrupted (its lease was lost): only a SIGKILL skips it
            _append(job.log, f"exit {ctx.flow_id} {path} {os.getpid()} {time.time():.6f}")
        return {"value": value, "effect_at": effect_at}

    def branch(name: str) -> Any:
        async def run(ctx: DurableContext) -> int:
            first = await ctx.run("s0", partial(step, f"{name}.s0", 1))
            second = await ctx.run("s1", partial(step, f"{name}.s1", 10))
            return int(first["value"] + second["value"])

        return run

    await ctx.sleep("nap", job.nap)
    joined: dict[str, int] = await ctx.join("fan", {"a": branch("a"), "b": branch("b")})
    go: int = await ctx.wait_for_signal("go", "go")
    last = await ctx.run("last", partial(step, "last", 100))
    return job.n + go + sum(joined.values()) + int(last["value"])


FLOWS: list[DurableFlow[Any, Any]] = [
    counted,
    guarded,
    fanned,
    blocking,
    compensated,
    ticked,
    evictable,
    mixed,
]

ROOT = Path(__file__).resolve().parents[2]


#: Every worker process spawned here and not yet killed: a test that fails half-way
#: (a timeout, an assertion) must not leave workers running on the machine.
_LIVE: set[Process] = set()


def kill_leftover_workers() -> None:
    """SIGKILL the worker processes still running (after each test, and at exit)."""
    for proc in list(_LIVE):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    _LIVE.clear()


atexit.register(kill_leftover_workers)


class WorkerProcess:
    """A ``stream-gateway-worker`` process on ``db`` (its `main`, run by this module):
    a SQLite file, or a store location such as ``firestore://project`` (then ``log``
    names the file its stderr goes to; a file's is next to it).

    `spawn` starts the interpreter and imports everything, then the process waits;
    `go` lets it run the worker and returns once it is serving. Spawning the next
    worker while the current one runs keeps restarts quick on a loaded machine.
    """

    def __init__(self, proc: Process) -> None:
        self.proc = proc
        _LIVE.add(proc)

    @classmethod
    async def spawn(cls, db: Path | str, *args: str, log: Path | None = None) -> WorkerProcess:
        """``db``: a SQLite path or a store URL; the workers' stderr goes to ``log``
        (default: next to the SQLite file)."""
        command = [
            sys.executable,
            "-m",
            "tests.durable.procs",
            "--db",
            str(db),
            "--flows",
            "tests.durable.procs:FLOWS",
            "--ready",
            "--log-level",
            "WARNING",
            "--poll-interval",
            "0.02",
            *args,
        ]
        path = log or Path(db).with_suffix(".workers.log")
        with path.open("ab") as stderr:
            return cls(await anyio.open_process(command, cwd=ROOT, stderr=stderr))

    async def go(self, within: float = 60.0) -> None:
        """Let the worker run; returns once it serves (``within`` seconds at most)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        await self.proc.stdin.send(b"go\n")
        seen = b""
        with anyio.fail_after(within):
            while b"ready" not in seen:
                seen += await self.proc.stdout.receive()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        with anyio.CancelScope(shield=True):
            await self.proc.wait()
        _LIVE.discard(self.proc)
        await self.proc.aclose()


@asynccontextmanager
async def worker_process(db: Path, *args: str) -> AsyncIterator[Process]:
    """A running worker process, killed on exit."""
    worker = await WorkerProcess.spawn(db, *args)
    try:
        await worker.go()
        yield worker.proc
    finally:
        await worker.kill()


if __name__ == "__main__":
    from stream_gateway.durable.cli import main
    from stream_gateway.stores import open_durable_store

    # Import the store's plugin (Google's SDK, a Postgres driver) before "go": a
    # spare worker then starts serving at once. Making a store object does no I/O.
    db = sys.argv[sys.argv.index("--db") + 1]
    if "://" in db:
        open_durable_store(db)
    sys.stdin.readline()  # "go"
    main(sys.argv[1:])
