"""Durable agent flows whose runs are cut by a SIGKILL, and a worker process that
runs them (SQLite durable store and SQLite streams in one directory).

Each framework's agent lives in ``tests.adapters.procs_{framework}`` (a worker imports
only its own framework). Everything an agent does leaves a line in a file of the
directory: each model request (``calls``), each tool side effect (``effects``). While
the file ``hold`` exists, the model's last answer streams its first words and then
waits (bounded) for it to go: the test kills the worker there, after the tool step
completed, mid-answer.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import anyio

from stream_gateway.durable import DurableEngine, SqliteDurableStore
from stream_gateway.streams import SqliteStreamManager

#: How long a held answer waits for ``hold`` to go before it goes on anyway.
HOLD_LIMIT = 60.0


def log(directory: Path, name: str, line: str) -> None:
    """Append ``line`` to the file ``name`` of ``directory``."""
    with (directory / name).open("a") as file:
        file.write(line + "\n")


def lines(directory: Path, name: str) -> list[str]:
    """The lines of ``name`` in ``directory`` (none if it does not exist)."""
    path = directory / name
    return path.read_text().splitlines() if path.exists() else []


async def held(directory: Path) -> None:
    """Wait while ``directory/hold`` exists (at most `HOLD_LIMIT` seconds)."""
    with anyio.move_on_after(HOLD_LIMIT):
        while (directory / "hold").exists():  # noqa: ASYNC110 - a file is the signal
            await anyio.sleep(0.01)


def engine_on(directory: Path, framework: str) -> DurableEngine:
    """An engine on ``directory`` with the flow ``{framework}-weather`` of
    ``tests.adapters.procs_{framework}``."""
    module = importlib.import_module(f"tests.adapters.procs_{framework}")
    return DurableEngine(
        [module.flow(directory)],
        store=SqliteDurableStore(str(directory / "durable.sqlite3")),
        streams=SqliteStreamManager(str(directory / "streams.sqlite3"), flush_interval=0.0),
        poll_interval=0.02,
    )


async def _work(directory: Path, framework: str) -> None:
    async with engine_on(directory, framework) as engine:
        # A long lease: only the test ends it (`tests.adapters.crashes.lapse`).
        async with engine.worker(lease=60.0, poll_interval=0.02, grace=0.5):
            print("ready", flush=True)
            await anyio.sleep_forever()


if __name__ == "__main__":
    importlib.import_module(f"tests.adapters.procs_{sys.argv[2]}")  # warm up before "go"
    sys.stdin.readline()  # "go": the interpreter is warm, start now
    anyio.run(_work, Path(sys.argv[1]), sys.argv[2])
