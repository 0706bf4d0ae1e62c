"""Durable agent flows whose runs are cut by a SIGKILL, and a worker process that
runs them (SQLite durable store and SQLite streams in one directory).

Everything an agent does leaves a line in a file of the directory: each model request
(``calls``), each tool side effect (``effects``). While the file ``hold`` exists, the
model's last answer streams its first words and then waits (bounded) for it to go: the
test kills the worker there, after the tool step completed, mid-answer.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from stream_gateway.adapters.pydantic_ai import durable_agent_flow
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


def pydantic_agent(directory: Path) -> Agent[None, str]:
    """A weather agent: a tool call, then an answer from the tool's result."""

    async def model(
        messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls]:
        results = [
            part.content
            for message in messages
            if isinstance(message, ModelRequest)
            for part in message.parts
            if isinstance(part, ToolReturnPart)
        ]
        log(directory, "calls", f"request-{len(messages)}")
        if not results:
            yield "Let me check. "
            yield {1: DeltaToolCall("forecast", '{"city": "Paris"}', tool_call_id="call-1")}
            return
        yield "The forecast: "
        await held(directory)
        yield f"{results[0]}."

    agent = Agent(FunctionModel(stream_function=model), name="weather")

    @agent.tool_plain
    def forecast(city: str) -> str:
        """The weather in a city."""
        log(directory, "effects", f"forecast {city}")
        return f"sunny in {city}"

    return agent


def engine_on(directory: Path) -> DurableEngine:
    flows = [durable_agent_flow(pydantic_agent(directory), name="pydantic-weather")]
    return DurableEngine(
        flows,
        store=SqliteDurableStore(str(directory / "durable.sqlite3")),
        streams=SqliteStreamManager(str(directory / "streams.sqlite3"), flush_interval=0.0),
        poll_interval=0.02,
    )


async def _work(directory: Path) -> None:
    async with engine_on(directory) as engine:
        async with engine.worker(lease=1.0, poll_interval=0.02, grace=0.5):
            print("ready", flush=True)
            await anyio.sleep_forever()


if __name__ == "__main__":
    sys.stdin.readline()  # "go": the interpreter is warm, start now
    anyio.run(_work, Path(sys.argv[1]))
